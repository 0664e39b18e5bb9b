"""A vocabulary of your own, as TSV (`id<TAB>name<TAB>synonym|synonym...`, optional header
row starting with `id`) or JSONL (`{"id": ..., "name": ..., "synonyms": [...], "alt_ids": [...]}`)."""

from __future__ import annotations

import json
import os

from .atomic import atomic_write
from .errors import FormatError
from .ids import normalize_id
from .lines import parse_json_line, text_lines
from .records import Concept, Vocabulary


def read_tsv_vocabulary(path: str | os.PathLike, *, skipped: list[FormatError] | None = None) -> Vocabulary:
    vocab = Vocabulary(source=str(path))
    for line_no, line in text_lines(path, skipped):
        if not line.strip() or line.startswith("#") or (line_no == 1 and line.lower().startswith("id\t")):
            continue
        fields = line.split("\t")
        try:
            if len(fields) < 2:
                raise FormatError(path, line_no, "row", "expected 'id<TAB>name[<TAB>synonyms]'")
            vocab.add(_concept(fields[0], fields[1], fields[2].split("|") if len(fields) > 2 else [], [], path, line_no))
        except FormatError as error:
            if skipped is None:
                raise
            skipped.append(error)
    return vocab


def read_jsonl_vocabulary(path: str | os.PathLike, *, skipped: list[FormatError] | None = None) -> Vocabulary:
    vocab = Vocabulary(source=str(path))
    for line_no, line in text_lines(path, skipped):
        if not line.strip():
            continue
        try:
            record = parse_json_line(line, path, line_no)
            if not isinstance(record, dict):
                raise FormatError(path, line_no, "json", "expected an object")
            synonyms, alt_ids = record.get("synonyms", []), record.get("alt_ids", [])
            for field, value in (("synonyms", synonyms), ("alt_ids", alt_ids)):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise FormatError(path, line_no, field, "expected a list of strings")
            vocab.add(_concept(record.get("id"), record.get("name"), synonyms, alt_ids, path, line_no))
        except FormatError as error:
            if skipped is None:
                raise
            skipped.append(error)
    return vocab


def _concept(cid, name, synonyms, alt_ids, path, line_no) -> Concept:
    if not isinstance(cid, str) or not cid.strip():
        raise FormatError(path, line_no, "id", "missing or empty")
    if not isinstance(name, str) or not name.strip():
        raise FormatError(path, line_no, "name", "missing or empty")
    name = name.strip()
    return Concept(
        id=normalize_id(cid),
        name=name,
        alt_ids=tuple(dict.fromkeys(normalize_id(a) for a in alt_ids if a.strip())),
        synonyms=tuple(s for s in dict.fromkeys(s.strip() for s in synonyms if s.strip()) if s != name),
    )


def write_jsonl_vocabulary(vocab: Vocabulary, path: str | os.PathLike) -> None:
    with atomic_write(path) as out:
        for c in vocab:
            out.write(json.dumps({"id": c.id, "name": c.name, "synonyms": list(c.synonyms), "alt_ids": list(c.alt_ids)}) + "\n")
