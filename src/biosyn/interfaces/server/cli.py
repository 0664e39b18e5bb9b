"""`biosyn serve`: loads a model and its index once, then serves them with uvicorn."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from ...encoders.onnx import BACKEND_HELP, BACKENDS
from ...model.presets import SURE_SPAN_CONFIDENCE
from ..loading import MIN_CONFIDENCE_HELP, MIN_SCORE_HELP, RERANK_HELP
from .limits import Limits


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    from ..cli import MODEL_HELP  # here, not at import time: the main CLI imports this module

    p = subparsers.add_parser("serve", help="serve the HTTP API and the web page",
                              description="Serves POST /normalize, POST /annotate, GET /concepts/{id}, /health, /info, "
                                          "the OpenAPI docs at /docs and a web page at /.")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--tagger", help="tagger folder or hub id, to find mentions in raw text for /annotate (default: "
                   "$BIOSYN_TAGGER, else runs/ncbi-disease/tagger when trained, else none)")
    p.add_argument("--index", help="a saved index (`biosyn index build`); default: build or reuse a cached one")
    p.add_argument("--rerank", metavar="FOLDER", help=RERANK_HELP)
    p.add_argument("--vocabulary", default="medic-2012", help="vocabulary name or file, when no --index is given")
    p.add_argument("--data-dir", help="data folder (default: $BIOSYN_DATA_DIR, else the `biosyn data fetch` cache)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle a released checkpoint's sparse_encoder.pk instead of refitting it (runs code from the file)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for embedding on CPU (torch backend)")
    p.add_argument("--backend", choices=BACKENDS, help=BACKEND_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--min-score", type=float, help=MIN_SCORE_HELP)
    p.add_argument("--min-confidence", type=float, default=SURE_SPAN_CONFIDENCE, help=MIN_CONFIDENCE_HELP)
    for f in fields(Limits):  # one option per limit, named, typed and explained by the dataclass
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       help=f"{f.metadata['help']} (default {f.default})")
    return p


def cmd_serve(args) -> int:
    import uvicorn

    from ..loading import default_min_score, default_tagger_spec, load_linker, load_tagger, with_reranker
    from .app import create_app

    try:
        tagger_spec = args.tagger or default_tagger_spec()
    except FileNotFoundError as error:  # serving mentions given as spans needs no tagger
        tagger_spec = None
        print(f"biosyn serve: /annotate will need mention spans: {error}", file=sys.stderr)
    tagger = load_tagger(tagger_spec, backend=args.backend) if tagger_spec else None
    model = load_linker(args.model, index=args.index, vocabulary=args.vocabulary, data_dir=args.data_dir,
                        trust_pickle=args.trust_pickle, bf16=args.bf16, backend=args.backend)
    with_reranker(model, args.rerank)
    limits = Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})
    app = create_app(model, tagger, limits=limits, vocabulary=None if args.index else args.vocabulary,
                     min_score=default_min_score(model, args.min_score), min_confidence=args.min_confidence)
    uvicorn.Server(server_config(app, limits, host=args.host, port=args.port)).run()
    return 0


def server_config(app, limits: Limits, **options):
    """uvicorn's settings for `app` under `limits`: timeouts and caps for connections, JSON for
    the errors uvicorn answers itself (see protocol.py)."""
    import uvicorn

    from .protocol import protocol

    # uvicorn's own start-up lines say where it listens; access logs would cost throughput.
    return uvicorn.Config(app, **options, access_log=False, timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  # uvicorn takes a float
                          h11_max_incomplete_event_size=limits.max_header_bytes,
                          http=protocol(receive_timeout_s=limits.receive_timeout_s, max_connections=limits.max_connections))
