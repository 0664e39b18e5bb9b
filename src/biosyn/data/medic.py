"""MEDIC 2012, BioSyn's vocabulary file: one concept a line, `ID|altID...||name|synonym...`.

Alternative IDs are bare OMIM numbers or MeSH IDs, the same spelling `biosyn.data.ids` uses.
BioSyn's copy lists an OMIM number first on 1,362 lines that CTD files under a MeSH ID
(`114480|D001943||Breast Neoplasms|...`); the reader makes the MeSH ID the main one, as CTD
does, and keeps the OMIM number as an alternative. The ID set, and so every score, is unchanged.
"""

from __future__ import annotations

import os

from .errors import FormatError
from .ids import normalize_id
from .lines import text_lines
from .records import Concept, Vocabulary


def read_medic(path: str | os.PathLike, *, skipped: list[FormatError] | None = None) -> Vocabulary:
    vocab = Vocabulary(source=str(path))
    for line_no, line in text_lines(path, skipped):
        if not line.strip():
            continue
        try:
            vocab.add(parse_medic_line(line, str(path), line_no))
        except FormatError as error:
            if skipped is None:
                raise
            skipped.append(error)
    return vocab


def parse_medic_line(line: str, source: str = "<input>", line_no: int | None = None) -> Concept:
    if "||" not in line:
        raise FormatError(source, line_no, "line", "expected 'ID|altIDs||name|synonyms'")
    id_part, name_part = line.split("||", 1)
    ids = [normalize_id(i) for i in id_part.split("|") if i.strip()]
    names = [n.strip() for n in name_part.split("|") if n.strip()]
    if not ids:
        raise FormatError(source, line_no, "ID", "no concept ID before '||'")
    if not names:
        raise FormatError(source, line_no, "name", f"concept {ids[0]} has no name after '||'")
    mesh = next((i for i in ids if not i.isdigit()), ids[0])
    ids = [mesh] + [i for i in dict.fromkeys(ids) if i != mesh]
    return Concept(id=ids[0], name=names[0], alt_ids=tuple(ids[1:]), synonyms=tuple(dict.fromkeys(names[1:])))
