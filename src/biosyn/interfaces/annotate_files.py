"""`biosyn annotate`: raw text in, disease mentions with concept IDs out.

Input is text given as arguments, or `--input`: a file, a folder of `.txt` files or a glob, read
by `biosyn.data.sources` (JSONL, PubMed XML, PubTator or plain text).

A bad document (undecodable bytes, binary data, a broken JSONL line, PubTator with broken
offsets, or one the models fail on) is skipped with a message naming the file and line; the
others go on. Documents in = documents annotated + documents skipped, and each skipped one is
listed on stderr (and, in JSONL output, as an `{"id", "error"}` line in its place).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..annotation.sources import BATCH, annotate_sources, mention_json
from ..data.atomic import atomic_write
from ..data.bioc import bioc_collection
from ..data.pubtator import format_pubtator
from ..data.records import Document
from ..data.sources import INPUT_FORMATS, Source, read_sources, text_sources

OUTPUT_FORMATS = ("pubtator", "bioc", "jsonl")


# -- writing --------------------------------------------------------------------------------


def output_format(path: str | None, fmt: str | None) -> str:
    """`fmt`, else from the output's suffix (.json: BioC, .jsonl, else PubTator); a table on stdout."""
    if fmt:
        return fmt
    if path is None:
        return "table"
    suffix = Path(path).suffix.lower()
    return {".json": "bioc", ".jsonl": "jsonl"}.get(suffix, "pubtator")


def _annotated(s: Source) -> Document:
    from ..annotation.annotator import linked_document  # here: the main CLI imports this module, and that one torch

    assert s.doc is not None
    return linked_document(s.doc, s.linked)


def render(sources: list[Source], fmt: str) -> str:
    done = [s for s in sources if s.doc is not None]
    if fmt == "pubtator":
        return "\n".join(format_pubtator(_annotated(s)) for s in done)
    if fmt == "bioc":
        return json.dumps(bioc_collection(_annotated(s) for s in done), ensure_ascii=False) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps({"id": s.id, "error": s.error} if s.doc is None else
                                  {**s.record, "id": s.record.get("id", s.id), "text": s.doc.text,
                                   "mentions": [mention_json(m) for m in s.linked]}, ensure_ascii=False) + "\n"
                       for s in sources)
    return _table(done)


def _table(sources: list[Source]) -> str:
    out = []
    for s in sources:
        text = " ".join(s.text.split())
        out.append(f"{s.id}: {text[:100]}{'…' if len(text) > 100 else ''}")
        rows = [(f"{m.start}-{m.end}", m.text, "|".join(m.ids) or "-", " | ".join(m.names), " ".join(f"{x:.3f}" for x in m.scores))
                for m in s.linked]
        if not rows:
            out.append("  (no disease mentions)")
            continue
        rows.insert(0, ("offsets", "text", "ID", "name", "score"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        out += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[4] for r in rows]
    return "".join(line + "\n" for line in out)


# -- the command ----------------------------------------------------------------------------


def add_annotate_parser(sub) -> argparse.ArgumentParser:
    from .cli import _data_options, _linking_options, _model_options  # here, not at import time: the main CLI imports this module

    p = sub.add_parser("annotate", help="find disease mentions in raw text and link each to a concept ID",
                       description="Tags disease mentions with the tagger, then normalises each with the model. Text "
                                   "as arguments prints a table; --input reads plain text, a folder or glob of .txt "
                                   "files, PubTator (with or without annotations) or JSONL.")
    p.add_argument("texts", nargs="*", help="texts to annotate, one document each")
    p.add_argument("--input", help="a file, a folder of .txt files, or a glob (quote it)")
    p.add_argument("--input-format", choices=INPUT_FORMATS,
                   help="default: .jsonl is JSONL, .xml or .xml.gz PubMed XML, a file starting 'PMID|t|' is PubTator, anything else plain text")
    p.add_argument("--output", help="file to write (default: standard output)")
    p.add_argument("--format", choices=OUTPUT_FORMATS,
                   help="default: from --output's suffix (.json BioC JSON, .jsonl JSONL, else PubTator); a table without --output")
    p.add_argument("--find", action="store_true", help="find mentions with the tagger even where the input has spans")
    p.add_argument("--batch-size", type=int, default=BATCH, help=f"documents per model call (default {BATCH})")
    _linking_options(p)
    _model_options(p, index=False)
    _data_options(p)
    return p


def cmd_annotate(args) -> int:
    from ..annotation.annotator import Annotator
    from .loading import default_min_score, load_linker, load_tagger, with_reranker

    if not args.texts and not args.input:
        raise ValueError("give texts as arguments or a file with --input")
    sources = text_sources(args.texts) + (read_sources(args.input, args.input_format, find=args.find) if args.input else [])
    fmt = output_format(args.output, args.format)
    # The tagger first: a missing one is a quick error, before the index is built.
    tagger = load_tagger(args.tagger, backend=args.backend) if any(s.doc is not None and s.spans is None for s in sources) else None
    linker = load_linker(args.model, index=args.index, vocabulary=args.vocabulary, add_mentions=args.add_mentions,
                         data_dir=args.data_dir, trust_pickle=args.trust_pickle, bf16=args.bf16, backend=args.backend)
    with_reranker(linker, args.rerank)
    annotator = Annotator(tagger, linker, mode=args.mode, min_score=default_min_score(linker, args.min_score, args.mode),
                          min_confidence=args.min_confidence)
    annotate_sources(annotator, sources, batch=args.batch_size)
    text = render(sources, fmt)
    if args.output:
        with atomic_write(args.output) as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    skipped = [s for s in sources if s.doc is None]
    for s in skipped:
        print(f"skipped: {s.error}", file=sys.stderr)
    done = len(sources) - len(skipped)
    print(f"annotated {done} documents, {sum(len(s.linked) for s in sources if s.doc is not None)} mentions; "
          f"skipped {len(skipped)} bad documents" + (f"; wrote {args.output}" if args.output else ""), file=sys.stderr)
    return 1 if skipped and not done else 0
