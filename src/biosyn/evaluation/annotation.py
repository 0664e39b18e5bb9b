"""Scores for text-to-concepts annotation, as the field reports them.

- NER: exact-span precision, recall and F1 (a found span counts only if start and end both match).
- Joint NER+NEN, mention level: the span and its set of concept IDs must both match.
- Joint NER+NEN, document level: micro F1 over each document's set of concept IDs, the
  normalisation F-score of DNorm and TaggerOne.

Documents are paired by position and must carry the same PMIDs. IDs are compared after
`resolve` (e.g. a vocabulary's alternative ID -> main ID), so OMIM:114480 and its MeSH main ID agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..data.records import Document, Mention

Resolve = Callable[[str], str]


@dataclass(frozen=True)
class PRF:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: PRF) -> PRF:
        return PRF(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict:
        return {"precision": round(100 * self.precision, 2), "recall": round(100 * self.recall, 2),
                "f1": round(100 * self.f1, 2), "tp": self.tp, "fp": self.fp, "fn": self.fn}


def _compare(gold: set, found: set) -> PRF:
    return PRF(len(gold & found), len(found - gold), len(gold - found))


def _pairs(gold_docs: Sequence[Document], found_docs: Sequence[Document]):
    if len(gold_docs) != len(found_docs):
        raise ValueError(f"{len(gold_docs)} gold documents but {len(found_docs)} predicted ones")
    for g, f in zip(gold_docs, found_docs):
        if g.pmid != f.pmid:
            raise ValueError(f"documents out of step: gold {g.pmid!r} against predicted {f.pmid!r}")
        yield g, f


def _ids(m: Mention, resolve: Resolve | None) -> frozenset[str]:
    return frozenset(resolve(i) if resolve else i for i in m.ids)


def span_scores(gold_docs: Sequence[Document], found_docs: Sequence[Document]) -> PRF:
    total = PRF(0, 0, 0)
    for g, f in _pairs(gold_docs, found_docs):
        total += _compare({(m.start, m.end) for m in g.mentions}, {(m.start, m.end) for m in f.mentions})
    return total


def mention_concept_scores(gold_docs: Sequence[Document], found_docs: Sequence[Document],
                           resolve: Resolve | None = None) -> PRF:
    """Span and concept set both right. Gold mentions without IDs are left out of both sides."""
    total = PRF(0, 0, 0)
    for g, f in _pairs(gold_docs, found_docs):
        unscored = {(m.start, m.end) for m in g.mentions if not m.ids}
        total += _compare({(m.start, m.end, _ids(m, resolve)) for m in g.mentions if m.ids},
                          {(m.start, m.end, _ids(m, resolve)) for m in f.mentions
                           if m.ids and (m.start, m.end) not in unscored})
    return total


def document_concept_scores(gold_docs: Sequence[Document], found_docs: Sequence[Document],
                            resolve: Resolve | None = None) -> PRF:
    total = PRF(0, 0, 0)
    for g, f in _pairs(gold_docs, found_docs):
        total += _compare({i for m in g.mentions for i in _ids(m, resolve)},
                          {i for m in f.mentions for i in _ids(m, resolve)})
    return total
