"""Concept identifiers: one canonical spelling for MeSH and OMIM IDs.

The corpus writes `OMIM:215600` and `MESH:D012345`, MEDIC 2012 writes bare `215600` and
`D012345`; BioSyn compares the bare forms, and so do we.
"""

from __future__ import annotations

import re

_PREFIX = re.compile(r"^(?:OMIM|MESH):", re.IGNORECASE)
_SEPARATORS = re.compile(r"[|+]")

# PubTator's placeholder for "no concept" (BC5CDR and others).
NO_CONCEPT = "-1"


def normalize_id(raw: str) -> str:
    """`" OMIM:215600"` → `"215600"`; `"MESH:D001943"` → `"D001943"`; other IDs only stripped."""
    return _PREFIX.sub("", raw.strip())


def split_ids(raw: str) -> tuple[str, ...]:
    """All IDs of a field joined by `|` or `+`, normalised, in order, without repeats or `-1`."""
    out: list[str] = []
    for part in _SEPARATORS.split(raw):
        cid = normalize_id(part)
        if cid and cid != NO_CONCEPT and cid not in out:
            out.append(cid)
    return tuple(out)


def join_ids(ids) -> str:
    return "|".join(ids)


def curie(concept_id: str) -> str:
    """The prefixed form that PubTator and BioC files use: `D001943` → `MESH:D001943`, `114480` → `OMIM:114480`."""
    if concept_id[:1] in ("C", "D") and concept_id[1:].isdigit():
        return f"MESH:{concept_id}"
    return f"OMIM:{concept_id}" if concept_id.isdigit() else concept_id
