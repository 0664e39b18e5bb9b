"""Annotating read documents (`biosyn.data.sources.Source`) in batches, for `biosyn annotate` and `biosyn batch`.

Kept apart from `annotator.py` so that importing it costs no torch: the annotator is passed in.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..data.sources import Source

BATCH = 16  # documents per tagger and linker call


def annotate_sources(annotator, sources: list[Source], *, batch: int = BATCH, progress: bool = True) -> None:
    """Fills in each good source's `linked` mentions; a batch that fails is retried one document
    at a time, and a document that still fails is skipped with the error."""
    good = [s for s in sources if s.doc is not None]
    with tqdm(total=len(good), unit="documents", desc="annotating", file=sys.stderr, disable=None if progress else True) as bar:
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
    linked = annotator.annotate_spans([s.text for s in sources], [s.spans for s in sources])
    for s, ms in zip(sources, linked):
        s.linked = ms


def mention_json(m) -> dict:
    """A LinkedMention as the JSONL output and the server's JSON give it; `confidence` only for a span the
    tagger found (given spans and spans added by a document rule have none)."""
    out = {"start": m.start, "end": m.end, "text": m.text, "type": m.type, "ids": list(m.ids), "names": list(m.names),
           "scores": [round(s, 6) for s in m.scores]}
    if m.confidence is not None:
        out["confidence"] = round(m.confidence, 4)
    return out
