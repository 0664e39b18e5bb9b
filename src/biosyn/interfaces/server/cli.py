"""`biosyn serve`: loads a model and its index once, then serves them with uvicorn."""

from __future__ import annotations

import argparse
import sys

from .app import Limits


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    from ..cli import MODEL_HELP  # here, not at import time: the main CLI imports this module

    p = subparsers.add_parser("serve", help="serve the HTTP API and the web page",
                              description="Serves POST /normalize, POST /annotate, GET /concepts/{id}, /health, /info, "
                                          "the OpenAPI docs at /docs and a web page at /.")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--tagger", help="tagger folder or hub id, to find mentions in raw text for /annotate (default: "
                   "$BIOSYN_TAGGER, else runs/ncbi-disease/tagger when trained, else none)")
    p.add_argument("--index", help="a saved index (`biosyn index build`); default: build or reuse a cached one")
    p.add_argument("--vocabulary", default="medic-2012", help="vocabulary name or file, when no --index is given")
    p.add_argument("--data-dir", help="data folder (default: $BIOSYN_DATA_DIR, else the `biosyn data fetch` cache)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle a released checkpoint's sparse_encoder.pk instead of refitting it (runs code from the file)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for embedding on CPU")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    defaults = Limits()
    p.add_argument("--max-mentions", type=int, default=defaults.max_mentions, help="mentions per request")
    p.add_argument("--max-mention-chars", type=int, default=defaults.max_mention_chars)
    p.add_argument("--max-text-chars", type=int, default=defaults.max_text_chars, help="characters per document text")
    p.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    p.add_argument("--max-batch", type=int, default=defaults.max_batch, help="mentions per model call")
    p.add_argument("--batch-wait-ms", type=float, default=defaults.batch_wait_ms,
                   help="how long a lone request waits for others to share its model call")
    return p


def cmd_serve(args) -> int:
    import uvicorn

    from ..loading import default_tagger_spec, load_linker, load_tagger
    from .app import create_app

    try:
        tagger_spec = args.tagger or default_tagger_spec()
    except FileNotFoundError as error:  # serving mentions given as spans needs no tagger
        tagger_spec = None
        print(f"biosyn serve: /annotate will need mention spans: {error}", file=sys.stderr)
    tagger = load_tagger(tagger_spec) if tagger_spec else None
    model = load_linker(args.model, index=args.index, vocabulary=args.vocabulary, data_dir=args.data_dir,
                        trust_pickle=args.trust_pickle, bf16=args.bf16)
    limits = Limits(max_mentions=args.max_mentions, max_mention_chars=args.max_mention_chars,
                    max_text_chars=args.max_text_chars, max_body_bytes=args.max_body_bytes,
                    max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms)
    # uvicorn's own start-up lines say where it listens; access logs would cost throughput.
    app = create_app(model, tagger, limits=limits, vocabulary=None if args.index else args.vocabulary)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False)
    return 0
