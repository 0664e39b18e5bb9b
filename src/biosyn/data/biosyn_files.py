"""The reference BioSyn code's own files, read and written so that data prepared for it works here.

- Dictionaries: `CUI||name` a line; CUI may join several IDs with `|`.
- Query files (`*.concept`): `PMID||start|end||type||mention||CUI` a line; composite mentions
  join their parts with `|` in the mention field and their IDs with `|` in the CUI field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .atomic import atomic_write
from .errors import FormatError
from .ids import split_ids
from .lines import text_lines
from .records import Dictionary, Query


def read_dictionary(path: str | os.PathLike) -> Dictionary:
    dictionary = Dictionary()
    for line_no, line in text_lines(path):
        if not line.strip():
            continue
        if "||" not in line:
            raise FormatError(path, line_no, "line", "expected 'CUI||name'")
        cui, name = line.split("||", 1)
        ids = split_ids(cui)
        if not ids:
            raise FormatError(path, line_no, "CUI", "empty")
        if not name.strip():
            raise FormatError(path, line_no, "name", "empty")
        dictionary.add(name.strip(), ids)
    return dictionary


def write_dictionary(dictionary: Dictionary, path: str | os.PathLike) -> Path:
    with atomic_write(path) as out:
        for entry in dictionary:
            out.write(f"{'|'.join(entry.ids)}||{entry.name}\n")
    return Path(path)


def read_concept_file(path: str | os.PathLike) -> list[Query]:
    queries = []
    for line_no, line in text_lines(path):
        if not line.strip():
            continue
        fields = line.split("||")
        if len(fields) != 5:
            raise FormatError(path, line_no, "line", f"expected 'PMID||start|end||type||mention||CUI', found {len(fields)} '||' fields")
        pmid, span, mtype, mention, cui = fields
        try:
            start, end = (int(x) for x in span.split("|"))
        except ValueError:
            raise FormatError(path, line_no, "start|end", f"expected two integers, got {span!r}") from None
        parts = tuple(p.strip() for p in mention.split("|") if p.strip())
        if not parts:
            raise FormatError(path, line_no, "mention", "empty")
        queries.append(Query(text=mention, parts=parts, gold=split_ids(cui), type=mtype, pmid=pmid, start=start, end=end))
    return queries


def read_concept_dir(directory: str | os.PathLike) -> list[Query]:
    """All `*.concept` files of a BioSyn `processed_*` folder, in name order."""
    files = sorted(Path(directory).glob("*.concept"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.concept files")
    return [q for f in files for q in read_concept_file(f)]


def write_concept_file(queries: Iterable[Query], path: str | os.PathLike) -> Path:
    with atomic_write(path) as out:
        for q in queries:
            out.write(f"{q.pmid}||{q.start}|{q.end}||{q.type}||{'|'.join(q.parts)}||{'|'.join(q.gold)}\n")
    return Path(path)
