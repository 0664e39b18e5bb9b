"""BioC JSON output: a collection of documents, each a title and an abstract passage (one `text`
passage for a document that is a single text), with the annotations inside each passage.

Offsets are the documents' own (PubTator's: the abstract starts one character after the title).
IDs are written prefixed (`MESH:D…`, `OMIM:…`) in each annotation's `identifier`, comma-joined
for a composite mention, `-1` for a mention without a concept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from .atomic import atomic_write
from .ids import NO_CONCEPT, curie
from .records import Document


def bioc_collection(docs: Iterable[Document], *, source: str = "biosyn") -> dict:
    documents, n = [], 0
    for doc in docs:
        passages = ([("title", 0, doc.title), ("abstract", len(doc.title) + 1, doc.abstract)] if doc.abstract
                    else [("text", 0, doc.title)])
        out = []
        for kind, offset, text in passages:
            annotations = []
            for m in doc.mentions:
                if offset <= m.start < offset + len(text) + 1:
                    identifier = ",".join(curie(i) for i in m.ids) or NO_CONCEPT
                    annotations.append({"id": str(n), "text": m.text, "infons": {"type": m.type, "identifier": identifier},
                                        "locations": [{"offset": m.start, "length": m.end - m.start}]})
                    n += 1
            out.append({"offset": offset, "infons": {"type": kind}, "text": text, "sentences": [],
                        "annotations": annotations, "relations": []})
        documents.append({"id": doc.pmid, "infons": {}, "passages": out, "relations": []})
    return {"source": source, "date": datetime.now(UTC).strftime("%Y%m%d"), "key": "",
            "infons": {}, "documents": documents}


def write_bioc(docs: Iterable[Document], path: str | os.PathLike) -> Path:
    with atomic_write(path) as out:
        json.dump(bioc_collection(docs), out, ensure_ascii=False)
    return Path(path)
