"""PubTator documents: `PMID|t|title`, `PMID|a|abstract`, then tab-separated annotation lines
`PMID start end text type IDs` and, in corpora such as BC5CDR, relation lines
`PMID CID id1 id2`. Blocks are separated by blank lines.

Survives the quirks of the official NCBI disease files: a PMID that occurs twice (kept as two
documents), ID fields with leading spaces, mention texts with trailing spaces, `+`-joined IDs.
A mention's span must be non-empty. With `check_text` (the default of `read_pubtator`) it must
also lie inside the document's text and cover the mention's text (compared without surrounding
whitespace); `parse_pubtator` checks that only when asked. Span problems are `SpanError`s, so
that callers can tell them from other malformed lines (the server's `bad_span` and `bad_pubtator`).
A BOM before the first line is dropped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

from .atomic import atomic_write
from .errors import FormatError, SpanError
from .ids import split_ids
from .lines import BOM, text_lines
from .records import Document, Mention, Relation

_TEXT_LINE = re.compile(r"^[^|\t]+\|[ta]\|")


def is_text_line(line: str) -> bool:
    """`PMID|t|…` or `PMID|a|…`: how a PubTator file starts, for telling formats apart."""
    return _TEXT_LINE.match(line) is not None


def read_pubtator(
    path: str | os.PathLike,
    *,
    types: Collection[str] | None = None,
    skipped: list[FormatError] | None = None,
    check_text: bool = True,
) -> list[Document]:
    """Reads a PubTator file. `types` keeps only mentions of those entity types.

    A malformed line raises FormatError, unless `skipped` is a list: then the line is
    left out, the error appended to it, and reading goes on.
    """
    return list(parse_numbered(text_lines(path, skipped), str(path), types=types, skipped=skipped, check_text=check_text))


def parse_pubtator(
    lines: Iterable[str],
    *,
    source: str = "<input>",
    types: Collection[str] | None = None,
    skipped: list[FormatError] | None = None,
    check_text: bool = False,
) -> Iterator[Document]:
    numbered = ((n, raw.rstrip("\r\n")) for n, raw in enumerate(lines, start=1))
    return parse_numbered(numbered, source, types=types, skipped=skipped, check_text=check_text)


def parse_numbered(
    numbered: Iterable[tuple[int, str]],
    source: str,
    *,
    types: Collection[str] | None = None,
    skipped: list[FormatError] | None = None,
    check_text: bool = True,
) -> Iterator[Document]:
    """Documents from (line number, line) pairs as `text_lines` gives them (numbers may skip the
    lines it left out), for callers that need each error's line in the file."""
    doc: Document | None = None
    for line_no, line in numbered:
        if line_no == 1 and line.startswith(BOM):
            line = line[1:]
        if not line.strip():
            if doc is not None:
                yield doc
                doc = None
            continue
        try:
            if "\t" not in line:
                pmid, kind, text = _split_text_line(line, source, line_no)
                if doc is not None and (doc.pmid != pmid or (kind == "t" and doc.title)):
                    yield doc  # a new document without a blank line between
                    doc = None
                if doc is None:
                    doc = Document(pmid=pmid)
                if kind == "t":
                    doc.title = text
                else:
                    doc.abstract = text
                continue
            fields = line.split("\t")
            if doc is None or fields[0] != doc.pmid:
                raise FormatError(source, line_no, "PMID", f"annotation for {fields[0]!r} outside its document")
            if len(fields) == 4 and not fields[1].strip().isdigit():
                doc.relations.append(Relation(fields[1], tuple(fields[2:])))
                continue
            mention = _parse_mention(fields, doc, source, line_no, check_text)
            if types is None or mention.type in types:
                doc.mentions.append(mention)
        except FormatError as error:
            if skipped is None:
                raise
            skipped.append(error)
    if doc is not None:
        yield doc


def _split_text_line(line: str, source: str, line_no: int) -> tuple[str, str, str]:
    parts = line.split("|", 2)
    if len(parts) != 3 or parts[1] not in ("t", "a"):
        raise FormatError(source, line_no, "line", "expected 'PMID|t|title', 'PMID|a|abstract' or a tab-separated annotation")
    if not parts[0].strip():
        raise FormatError(source, line_no, "PMID", "empty")
    return parts[0].strip(), parts[1], parts[2]


def _parse_mention(fields: list[str], doc: Document, source: str, line_no: int, check_text: bool) -> Mention:
    if len(fields) < 5:
        raise FormatError(source, line_no, "annotation", f"expected at least 5 tab-separated fields, found {len(fields)}")
    try:
        start, end = int(fields[1]), int(fields[2])
    except ValueError:
        raise FormatError(source, line_no, "start/end", f"offsets must be integers, got {fields[1]!r}, {fields[2]!r}") from None
    if not 0 <= start < end:
        raise SpanError(source, line_no, "start/end", f"invalid span {start}-{end}")
    text, mention = doc.text, fields[3].strip()
    if check_text and end > len(text):
        raise SpanError(source, line_no, "start/end", f"span {start}-{end} ends past the document's {len(text)} characters")
    if check_text and not mention:
        raise SpanError(source, line_no, "text", f"span {start}-{end} is blank")
    if check_text and text[start:end].strip() != mention:
        raise SpanError(source, line_no, "text", f"{mention!r} is not the document's text {text[start:end]!r} at {start}-{end}")
    ids = split_ids(fields[5]) if len(fields) > 5 else ()
    return Mention(start=start, end=end, text=mention, type=fields[4].strip(), ids=ids)


# Characters that would end a PubTator line or field early; each becomes one space, so offsets hold.
_LINE_BREAKING = re.compile("[\t\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")


def format_pubtator(doc: Document) -> str:
    """A PubTator block. A text with line breaks or tabs (plain text read as one document) has
    each of them written as a space: PubTator has one line per title or abstract."""
    pmid, title, abstract = (_LINE_BREAKING.sub(" ", s) for s in (doc.pmid, doc.title, doc.abstract))
    lines = [f"{pmid}|t|{title}", f"{pmid}|a|{abstract}"]
    for m in doc.mentions:
        lines.append(f"{pmid}\t{m.start}\t{m.end}\t{_LINE_BREAKING.sub(' ', m.text)}\t{m.type}\t{'|'.join(m.ids) if m.ids else '-1'}")
    for r in doc.relations:
        lines.append("\t".join((doc.pmid, r.type, *r.arguments)))
    return "\n".join(lines) + "\n"


def write_pubtator(docs: Iterable[Document], path: str | os.PathLike) -> Path:
    with atomic_write(path) as out:
        out.write("\n".join(format_pubtator(d) for d in docs))
    return Path(path)
