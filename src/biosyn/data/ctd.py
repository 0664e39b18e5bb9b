"""CTD's disease vocabulary export (`CTD_diseases.tsv` or `.tsv.gz`), the layout CTD publishes:
`#` header lines, then DiseaseName, DiseaseID, AltDiseaseIDs, Definition, ParentIDs,
TreeNumbers, ParentTreeNumbers, Synonyms, SlimMappings, lists joined by `|`."""

from __future__ import annotations

import os

from .errors import FormatError
from .ids import normalize_id
from .lines import text_lines
from .records import Concept, Vocabulary

COLUMNS = ("DiseaseName", "DiseaseID", "AltDiseaseIDs", "Definition", "ParentIDs",
           "TreeNumbers", "ParentTreeNumbers", "Synonyms", "SlimMappings")


def read_ctd(path: str | os.PathLike, *, skipped: list[FormatError] | None = None) -> Vocabulary:
    vocab = Vocabulary(source=str(path))
    for line_no, line in text_lines(path, skipped):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            vocab.add(_parse_row(line.split("\t"), str(path), line_no))
        except FormatError as error:
            if skipped is None:
                raise
            skipped.append(error)
    return vocab


def _split(field: str) -> list[str]:
    return [v.strip() for v in field.split("|") if v.strip()]


def _parse_row(fields: list[str], source: str, line_no: int) -> Concept:
    if len(fields) < 2:
        raise FormatError(source, line_no, "row", f"expected {len(COLUMNS)} tab-separated columns, found {len(fields)}")
    fields += [""] * (len(COLUMNS) - len(fields))
    name, main = fields[0].strip(), normalize_id(fields[1])
    if not main:
        raise FormatError(source, line_no, "DiseaseID", "empty")
    if not name:
        raise FormatError(source, line_no, "DiseaseName", f"concept {main} has no name")
    alt_ids = tuple(dict.fromkeys(normalize_id(i) for i in _split(fields[2])))
    synonyms = tuple(s for s in dict.fromkeys(_split(fields[7])) if s != name)
    return Concept(id=main, name=name, alt_ids=alt_ids, synonyms=synonyms)
