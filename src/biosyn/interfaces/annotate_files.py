"""`biosyn annotate`: raw text in, disease mentions with concept IDs out.

Input is text given as arguments, or `--input`: a file, a folder of `.txt` files or a glob. Each
file is read as JSONL (`.jsonl`: `{"id", "text", "mentions"?}` a line), PubTator (when its first
line is `PMID|t|…`) or plain text (the whole file is one document, its ID the file's stem).
Files are read through `biosyn.data.lines` as every reader is (UTF-8 checked a line, a NUL
character refused as binary data, gzip told by content). Offsets count characters of the
decoded text exactly as it is in the file (CRLF kept, a leading byte-order mark dropped).

A bad document (undecodable bytes, binary data, a broken JSONL line, PubTator with broken
offsets, or one the models fail on) is skipped with a message naming the file and line; the
others go on. Documents in = documents annotated + documents skipped, and each skipped one is
listed on stderr (and, in JSONL output, as an `{"id", "error"}` line in its place).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data.atomic import atomic_write
from ..data.bioc import bioc_collection
from ..data.errors import FormatError, SpanError
from ..data.lines import first_line, parse_json_line, read_text, text_lines
from ..data.pubtator import format_pubtator, is_text_line, parse_numbered
from ..data.records import Document, Mention

OUTPUT_FORMATS = ("pubtator", "bioc", "jsonl")
INPUT_FORMATS = ("text", "pubtator", "jsonl")
BATCH = 16  # documents per tagger and linker call


@dataclass
class Source:
    """One input document, or the reason it was skipped (`doc` is None then)."""

    id: str
    doc: Document | None
    spans: list[Mention] | None = None  # None: the tagger finds them
    error: str | None = None
    record: dict = field(default_factory=dict)  # a JSONL record's own fields, written back with the result
    linked: list = field(default_factory=list)  # LinkedMentions, once annotated


# -- reading --------------------------------------------------------------------------------


def input_paths(spec: str) -> list[Path]:
    """A file, the `.txt` files of a folder, or the files a glob matches, in name order."""
    path = Path(spec)
    if path.is_dir():
        paths = sorted(p for p in path.glob("*.txt") if p.is_file())
    elif path.exists():
        paths = [path]
    else:
        paths = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
    if not paths:
        raise FileNotFoundError(f"--input {spec}: no such file, no .txt files in that folder, or nothing matches that glob")
    return paths


def read_sources(spec: str, input_format: str | None = None, *, find: bool = False) -> list[Source]:
    sources: list[Source] = []
    for path in input_paths(spec):
        try:
            fmt = input_format or _sniff(path)
            if fmt == "jsonl":
                sources += _read_jsonl(path, find)
            elif fmt == "pubtator":
                sources += _read_pubtator(path, find)
            else:
                sources.append(Source(path.stem, Document(path.stem, read_text(path))))
        except FormatError as error:  # undecodable text, or a damaged gzip stream: the whole file
            sources.append(Source(path.stem, None, error=str(error)))
    return sources


def text_sources(texts: list[str]) -> list[Source]:
    return [Source(str(i), Document(str(i), text)) for i, text in enumerate(texts, start=1)]


def _sniff(path: Path) -> str:
    if path.suffix.lower() == ".jsonl":
        return "jsonl"
    return "pubtator" if is_text_line(first_line(path)) else "text"


def _read_jsonl(path: Path, find: bool) -> list[Source]:
    """One source a non-blank line; a bad line is a skipped source in its place."""
    sources: list[Source] = []
    errors: list[FormatError] = []

    def bad_lines():  # lines text_lines left out, in their place
        sources.extend(Source(f"{path.stem}:{e.line}", None, error=str(e)) for e in errors)
        errors.clear()

    for line_no, line in text_lines(path, errors):
        bad_lines()
        if not line.strip():
            continue
        doc_id = f"{path.stem}:{line_no}"
        try:
            record = parse_json_line(line, path, line_no)
            if not isinstance(record, dict):
                raise FormatError(path, line_no, "record", "expected a JSON object")
            if "id" in record:
                doc_id = str(record["id"])
            text = record.get("text")
            if not isinstance(text, str):
                raise FormatError(path, line_no, "text", "missing or not a string")
            spans = None if find or record.get("mentions") is None else _json_spans(record["mentions"], text, path, line_no)
            sources.append(Source(doc_id, Document(doc_id, text), spans, record=record))
        except FormatError as error:
            sources.append(Source(doc_id, None, error=str(error)))
    bad_lines()
    return sources


def _json_spans(mentions, text: str, path: Path, line_no: int) -> list[Mention]:
    if not isinstance(mentions, list):
        raise FormatError(path, line_no, "mentions", "expected a list of {start, end} objects")
    spans = []
    for i, m in enumerate(mentions):
        start, end = (m.get("start"), m.get("end")) if isinstance(m, dict) else (None, None)
        if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool) or isinstance(end, bool):
            raise FormatError(path, line_no, f"mentions[{i}]", "expected integer start and end")
        if not 0 <= start < end <= len(text):
            raise SpanError(path, line_no, f"mentions[{i}]", f"span {start}-{end} is not inside the {len(text)}-character text")
        if not text[start:end].strip():
            raise SpanError(path, line_no, f"mentions[{i}]", f"span {start}-{end} is blank")
        spans.append(Mention(start, end, text[start:end], str(m.get("type") or "Disease")))
    return spans


def _read_pubtator(path: Path, find: bool) -> list[Source]:
    """Documents with the lines they came from, so that each error skips its own document only.
    Spans are checked against the text unless the tagger is to find the mentions anyway."""
    errors: list[FormatError] = []
    at: dict[str, Any] = {"line": 0, "text": "", "done": False}  # the last line the parser has read

    def tracked():
        for line_no, line in text_lines(path, errors):
            at["line"], at["text"] = line_no, line
            yield line_no, line
        at["done"] = True

    sources: list[Source] = []
    first: float = 1
    for doc in parse_numbered(tracked(), str(path), skipped=errors, check_text=not find):
        # A document is yielded at the blank line after it, at the next document's title line, or at the end.
        last = math.inf if at["done"] else at["line"] if not at["text"].strip() else at["line"] - 1
        mine = [e for e in errors if first <= _line(e) <= last]
        if mine:
            sources.append(Source(doc.pmid, None, error="; ".join(str(e) for e in mine)))
        else:
            sources.append(Source(doc.pmid, doc, None if find or not doc.mentions else list(doc.mentions)))
        first = last + 1
    for error in errors:
        if _line(error) >= first:  # after the last document: nothing to attach it to
            sources.append(Source(f"{path.name}:{error.line}", None, error=str(error)))
    return sources


# -- annotating -----------------------------------------------------------------------------


def annotate_sources(annotator, sources: list[Source], *, batch: int = BATCH) -> None:
    """Fills in each good source's `linked` mentions; a batch that fails is retried one document
    at a time, and a document that still fails is skipped with the error."""
    good = [s for s in sources if s.doc is not None]
    with tqdm(total=len(good), unit="documents", desc="annotating", file=sys.stderr, disable=None) as bar:
        for b in range(0, len(good), batch):
            chunk = good[b:b + batch]
            try:
                _annotate(annotator, chunk)
            except Exception:  # find which document it was; the others go on
                for s in chunk:
                    try:
                        _annotate(annotator, [s])
                    except Exception as error:
                        s.doc, s.error = None, f"{s.id}: annotation failed: {type(error).__name__}: {error}"
            bar.update(len(chunk))


def _annotate(annotator, sources: list[Source]) -> None:
    linked = annotator.annotate_spans([_doc(s).text for s in sources], [s.spans for s in sources])
    for s, ms in zip(sources, linked):
        s.linked = ms


# -- writing --------------------------------------------------------------------------------


def output_format(path: str | None, fmt: str | None) -> str:
    """`fmt`, else from the output's suffix (.json: BioC, .jsonl, else PubTator); a table on stdout."""
    if fmt:
        return fmt
    if path is None:
        return "table"
    suffix = Path(path).suffix.lower()
    return {".json": "bioc", ".jsonl": "jsonl"}.get(suffix, "pubtator")


def mention_json(m) -> dict:
    """A LinkedMention as the JSONL output and the server's JSON give it."""
    return {"start": m.start, "end": m.end, "text": m.text, "type": m.type, "ids": list(m.ids), "names": list(m.names),
            "scores": [round(s, 6) for s in m.scores]}


def _annotated(s: Source) -> Document:
    from ..annotation.annotator import linked_document  # here: the main CLI imports this module, and that one torch

    return linked_document(_doc(s), s.linked)


def _doc(s: Source) -> Document:
    assert s.doc is not None, f"{s.id}: a skipped source has no document"
    return s.doc


def _line(error: FormatError) -> float:
    """Where a reader's error is, for attaching it to a document; one without a line comes last."""
    return math.inf if error.line is None else error.line


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
        text = " ".join(_doc(s).text.split())
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
    from .cli import _data_options, _model_options  # here, not at import time: the main CLI imports this module
    from .loading import MIN_SCORE_HELP

    p = sub.add_parser("annotate", help="find disease mentions in raw text and link each to a concept ID",
                       description="Tags disease mentions with the tagger, then normalises each with the model. Text "
                                   "as arguments prints a table; --input reads plain text, a folder or glob of .txt "
                                   "files, PubTator (with or without annotations) or JSONL.")
    p.add_argument("texts", nargs="*", help="texts to annotate, one document each")
    p.add_argument("--input", help="a file, a folder of .txt files, or a glob (quote it)")
    p.add_argument("--input-format", choices=INPUT_FORMATS,
                   help="default: .jsonl is JSONL, a file starting 'PMID|t|' is PubTator, anything else plain text")
    p.add_argument("--output", help="file to write (default: standard output)")
    p.add_argument("--format", choices=OUTPUT_FORMATS,
                   help="default: from --output's suffix (.json BioC JSON, .jsonl JSONL, else PubTator); a table without --output")
    p.add_argument("--find", action="store_true", help="find mentions with the tagger even where the input has spans")
    p.add_argument("--tagger", help="tagger folder or hub id (default: $BIOSYN_TAGGER, else runs/ncbi-disease/tagger)")
    p.add_argument("--min-score", type=float, help=MIN_SCORE_HELP)
    p.add_argument("--vocabulary", default="medic-2012", help="vocabulary name or file, when no --index is given")
    p.add_argument("--add-mentions", metavar="CORPUS:SPLITS", default=None,
                   help="also match a corpus's annotated mentions (default for MEDIC: ncbi-disease:train,dev when present)")
    p.add_argument("--batch-size", type=int, default=BATCH, help=f"documents per model call (default {BATCH})")
    p.add_argument("--index", help="a saved index (`biosyn index build`); default: build or reuse a cached one")
    _model_options(p, index=False)
    _data_options(p)
    return p


def cmd_annotate(args) -> int:
    from ..annotation.annotator import Annotator
    from .loading import default_min_score, load_linker, load_tagger

    if not args.texts and not args.input:
        raise ValueError("give texts as arguments or a file with --input")
    sources = text_sources(args.texts) + (read_sources(args.input, args.input_format, find=args.find) if args.input else [])
    fmt = output_format(args.output, args.format)
    # The tagger first: a missing one is a quick error, before the index is built.
    tagger = load_tagger(args.tagger, backend=args.backend) if any(s.doc is not None and s.spans is None for s in sources) else None
    linker = load_linker(args.model, index=args.index, vocabulary=args.vocabulary, add_mentions=args.add_mentions,
                         data_dir=args.data_dir, trust_pickle=args.trust_pickle, bf16=args.bf16, backend=args.backend)
    annotator = Annotator(tagger, linker, mode=args.mode, min_score=default_min_score(linker, args.min_score))
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
