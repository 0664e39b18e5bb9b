"""Raw text to concept IDs: the tagger finds disease mentions, the BioSyn model links each one.

Linking sees each mention's whole document, so abbreviations defined there (Ab3P) are resolved and
composite mentions ("breast and ovarian cancer") are split, exactly as `BioSyn.normalize` does for
mentions given by hand. Documents that already carry mention spans can be linked without tagging.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..data.records import Document, Mention
from ..model.biosyn import BioSyn, Normalization
from ..model.presets import SURE_SPAN_CONFIDENCE

if TYPE_CHECKING:  # the tagger's module imports torch; linking alone must not
    from ..ner.tagger import DiseaseTagger


@dataclass(frozen=True)
class LinkedMention:
    """A span of a text with the best concept of each of its parts."""

    start: int
    end: int
    text: str
    type: str
    normalization: Normalization = field(repr=False, compare=False)
    confidence: float | None = field(default=None, compare=False)  # the tagger's, for a found span

    @classmethod
    def of(cls, mention: Mention, normalization: Normalization) -> "LinkedMention":
        return cls(mention.start, mention.end, mention.text, mention.type, normalization, mention.confidence)

    def unlinked(self) -> "LinkedMention":
        """The span without concepts (PubTator's -1)."""
        return replace(self, normalization=Normalization(self.normalization.mention, self.normalization.parts, []))

    @property
    def ids(self) -> tuple[str, ...]:
        """The best concept of each part that has a match, each once; none (PubTator's -1) when no part has one."""
        return self.normalization.best_ids

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.preferred_name for c in self.normalization.top)

    @property
    def scores(self) -> tuple[float, ...]:
        return tuple(c.score for c in self.normalization.top)

    def as_mention(self) -> Mention:
        return Mention(self.start, self.end, self.text, self.type, self.ids, self.confidence)


def linked_document(doc: Document, linked: Sequence[LinkedMention]) -> Document:
    """A copy of `doc` whose mentions are `linked`, with their concept IDs."""
    return Document(doc.pmid, doc.title, doc.abstract, [m.as_mention() for m in linked], list(doc.relations))


def confident(linked: list[LinkedMention], min_score: float | None,
              min_confidence: float | None = SURE_SPAN_CONFIDENCE) -> list[LinkedMention]:
    """The found mentions whose every part links with at least `min_score` (all of them for None), and,
    without concepts, those under it that the tagger found with at least `min_confidence` (None: none)."""
    if min_score is None:
        return linked
    kept = []
    for m in linked:
        if m.scores and min(m.scores) >= min_score:
            kept.append(m)
        elif min_confidence is not None and m.confidence is not None and m.confidence >= min_confidence:
            kept.append(m.unlinked())
    return kept


@dataclass
class Timings:
    """Wall seconds spent in each stage, summed over calls."""

    tagger: float = 0.0
    linker: float = 0.0
    documents: int = 0
    mentions: int = 0


class Annotator:
    """`Annotator(tagger, linker).annotate(texts)`: mentions with concept IDs for each text.

    `linker` is a BioSyn model with an index. Without a tagger only documents that carry their
    mention spans can be annotated. Not thread-safe, like its parts.
    """

    def __init__(self, tagger: DiseaseTagger | None, linker: BioSyn, *, mode: str | None = None,
                 min_score: float | None = None, min_confidence: float | None = SURE_SPAN_CONFIDENCE):
        """`min_score`: a span the tagger found is kept only when every part's best link scores at
        least this much (the linker's scale; given spans are always kept). None keeps them all.
        `min_confidence`: ... or, without concepts, when the tagger is at least this sure of it (None: never)."""
        if linker.index is None:
            raise ValueError("the linker has no index: build or attach one first")
        self.tagger, self.linker, self.mode, self.min_score = tagger, linker, mode, min_score
        self.min_confidence = min_confidence
        self.timings = Timings()

    def find(self, texts: Sequence[str]) -> list[list[Mention]]:
        if self.tagger is None:
            raise ValueError("no tagger: give documents with mention spans, or load a tagger to find them")
        started = time.perf_counter()
        found = self.tagger.tag(list(texts))
        self.timings.tagger += time.perf_counter() - started
        return found

    def link(self, texts: Sequence[str], spans: Sequence[Sequence[Mention]]) -> list[list[LinkedMention]]:
        """Links given spans; `spans[i]` are character spans into `texts[i]`."""
        started = time.perf_counter()
        mentions = [m.text for ms in spans for m in ms]
        contexts = [t for t, ms in zip(texts, spans) for _ in ms]
        results = iter(self.linker.normalize(mentions, 1, mode=self.mode, texts=contexts) if mentions else [])
        out = [[LinkedMention.of(m, next(results)) for m in ms] for ms in spans]
        self.timings.linker += time.perf_counter() - started
        self.timings.documents += len(texts)
        self.timings.mentions += len(mentions)
        return out

    def annotate(self, texts: Sequence[str]) -> list[list[LinkedMention]]:
        if isinstance(texts, str):
            raise TypeError("annotate takes a list of texts; wrap a single text in a list")
        return self.annotate_spans(texts, [None] * len(texts))

    def annotate_spans(self, texts: Sequence[str], spans: Sequence[Sequence[Mention] | None]) -> list[list[LinkedMention]]:
        """Links `spans[i]` (character spans into `texts[i]`); where it is None the tagger finds them,
        and `min_score` decides which of those stay. A blank text never reaches the tagger."""
        to_find = [i for i, s in enumerate(spans) if s is None and texts[i].strip()]
        filled: list[Sequence[Mention]] = [s or [] for s in spans]
        for i, found in zip(to_find, self.find([texts[i] for i in to_find]) if to_find else []):
            filled[i] = found
        tagged = set(to_find)
        return [confident(ms, self.min_score, self.min_confidence) if i in tagged else ms
                for i, ms in enumerate(self.link(texts, filled))]

    def annotate_documents(self, docs: Sequence[Document], *, find: bool | None = None) -> list[Document]:
        """Copies of `docs` whose mentions carry concept IDs. Mentions are found by the tagger when
        `find` is true, or (the default, None) for each document that has none of its own."""
        docs = list(docs)
        spans = [None if find or (find is None and not d.mentions) else d.mentions for d in docs]
        linked = self.annotate_spans([d.text for d in docs], spans)
        return [linked_document(d, ms) for d, ms in zip(docs, linked)]
