"""One entry point for every vocabulary format: `load_vocabulary("medic-2012")` or a path."""

from __future__ import annotations

import os
from pathlib import Path

from .biosyn_files import read_dictionary
from .ctd import read_ctd
from .custom import read_jsonl_vocabulary, read_tsv_vocabulary
from .errors import FormatError
from .lines import text_lines
from .locate import VOCABULARIES, data_file
from .medic import read_medic
from .records import Concept, Vocabulary

FORMATS = ("medic", "ctd", "tsv", "jsonl", "biosyn-dict")


def detect_format(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".gz"):
        return "ctd"
    header, line_no = [], 0
    for line_no, line in text_lines(path):  # noqa: B007  # the last line number is reported below
        if line.strip():
            header.append(line)
        if len(header) > 50 or (line.strip() and not line.startswith("#")):
            break
    first = header[-1] if header else ""
    if any("DiseaseID" in line for line in header) or first.count("\t") >= 7:
        return "ctd"
    if name.endswith(".tsv") or "\t" in first:
        return "tsv"
    if "||" in first:
        return "medic"
    raise FormatError(path, line_no or None, "format", f"cannot tell the vocabulary format; pass one of {', '.join(FORMATS)}")


def vocabulary_path(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """The file a vocabulary is read from: a named one's in the data folder, else the path given."""
    path = data_file(VOCABULARIES[str(spec)], data_dir) if str(spec) in VOCABULARIES else Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such vocabulary file (known names: {', '.join(VOCABULARIES)})")
    return path


def load_vocabulary(
    spec: str | os.PathLike,
    *,
    format: str | None = None,
    data_dir: str | os.PathLike | None = None,
    skipped: list[FormatError] | None = None,
) -> Vocabulary:
    """A vocabulary by name (`medic-2012`, `ctd`: files of the data folder) or by path."""
    path = vocabulary_path(spec, data_dir)
    fmt = format or detect_format(path)
    if fmt == "medic":
        return read_medic(path, skipped=skipped)
    if fmt == "ctd":
        return read_ctd(path, skipped=skipped)
    if fmt == "tsv":
        return read_tsv_vocabulary(path, skipped=skipped)
    if fmt == "jsonl":
        return read_jsonl_vocabulary(path, skipped=skipped)
    if fmt == "biosyn-dict":
        # One concept per CUI string: its first ID is the main one, the rest alternatives.
        entries = read_dictionary(path)
        return Vocabulary((Concept(id=e.ids[0], name=e.name, alt_ids=e.ids[1:]) for e in entries), source=str(path))
    raise ValueError(f"unknown vocabulary format {fmt!r}; choose one of {', '.join(FORMATS)}")
