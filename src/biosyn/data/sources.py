"""Input documents for annotation: files in the formats `biosyn annotate` and `biosyn batch` read.

Each file is read as JSONL (`.jsonl`: `{"id", "text", "mentions"?}` a line), PubMed XML (`.xml`,
`.xml.gz`: `biosyn.data.pubmed`), PubTator (when its first line is `PMID|t|…`) or plain text (the
whole file is one document, its ID the file's stem). Files are read through `biosyn.data.lines`
as every reader is (UTF-8 checked a line, a NUL character refused as binary data, gzip told by
content). Offsets count characters of the decoded text exactly as it is in the file (CRLF kept, a
leading byte-order mark dropped).

A bad document (undecodable bytes, binary data, a broken JSONL line, PubTator with broken offsets,
a PubMed article without PMID or title) is a `Source` without a document, with the reason naming
the file and line or record, in its place among the others: documents in = sources out.
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FormatError, SpanError
from .lines import first_line, parse_json_line, read_text, text_lines
from .pubmed import iter_pubmed
from .pubtator import is_text_line, parse_numbered
from .records import Document, Mention

INPUT_FORMATS = ("text", "pubtator", "jsonl", "pubmed")


@dataclass
class Source:
    """One input document, or the reason it was skipped (`doc` is None then)."""

    id: str
    doc: Document | None
    spans: list[Mention] | None = None  # None: the tagger finds them
    error: str | None = None
    record: dict = field(default_factory=dict)  # a JSONL record's own fields, written back with the result
    linked: list = field(default_factory=list)  # LinkedMentions, once annotated

    @property
    def text(self) -> str:
        assert self.doc is not None, f"{self.id}: a skipped source has no document"
        return self.doc.text


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
    return [s for path in input_paths(spec) for s in read_file(path, input_format, find=find)]


def read_file(path: Path, input_format: str | None = None, *, find: bool = False) -> list[Source]:
    """The documents of one file, each good or skipped with its reason, in the file's order."""
    try:
        fmt = input_format or sniff(path)
        if fmt == "jsonl":
            return _read_jsonl(path, find)
        if fmt == "pubtator":
            return _read_pubtator(path, find)
        if fmt == "pubmed":
            return _read_pubmed(path)
        return [Source(path.stem, Document(path.stem, read_text(path)))]
    except FormatError as error:  # undecodable text, or a damaged gzip stream: the whole file
        return [Source(path.stem, None, error=str(error))]


def text_sources(texts: list[str]) -> list[Source]:
    return [Source(str(i), Document(str(i), text)) for i, text in enumerate(texts, start=1)]


def sniff(path: Path) -> str:
    """A file's format: by its name (`.jsonl`, `.xml`, `.xml.gz`), else PubTator when it starts `PMID|t|`, else text."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes[-1:] == [".jsonl"]:
        return "jsonl"
    if ".xml" in suffixes:
        return "pubmed"
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


def _read_pubmed(path: Path) -> list[Source]:
    """One source an article; a bad article is a skipped source in its place, and XML that breaks off
    is one skipped source for the rest of the file after the articles read before it."""
    sources: list[Source] = []
    try:
        for record in iter_pubmed(path):
            doc_id = record.pmid or f"{path.name}:article{record.position}"
            sources.append(Source(doc_id, record.document, error=None if record.error is None else str(record.error)))
    except FormatError as error:
        sources.append(Source(f"{path.name}:rest", None, error=str(error)))
    return sources


def _line(error: FormatError) -> float:
    """Where a reader's error is, for attaching it to a document; one without a line comes last."""
    return math.inf if error.line is None else error.line
