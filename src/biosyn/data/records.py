"""Typed records shared by every layer: documents and mentions, concepts and vocabularies,
the name dictionary that search ranks, and evaluation queries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mention:
    """An annotated span of a document. `ids` are normalised (see `biosyn.data.ids`)."""

    start: int
    end: int
    text: str
    type: str
    ids: tuple[str, ...] = ()
    # A tagger's probability of the span's tags (its least sure word); None for spans given or added by a rule.
    confidence: float | None = field(default=None, compare=False)

    @property
    def is_composite(self) -> bool:
        return self.type == "CompositeMention" or len(self.ids) > 1


@dataclass(frozen=True)
class Relation:
    type: str
    arguments: tuple[str, ...]


@dataclass
class Document:
    pmid: str
    title: str = ""
    abstract: str = ""
    mentions: list[Mention] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Title and abstract as PubTator offsets count them."""
        return f"{self.title} {self.abstract}" if self.abstract else self.title


@dataclass(frozen=True)
class Concept:
    """A vocabulary entry: main ID, alternative IDs, preferred name and synonyms."""

    id: str
    name: str
    alt_ids: tuple[str, ...] = ()
    synonyms: tuple[str, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.alt_ids)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.name, *self.synonyms)))


class Vocabulary:
    """Concepts by main ID; alternative IDs resolve to their main concept."""

    def __init__(self, concepts: Iterable[Concept] = (), source: str = ""):
        self.source = source
        self._concepts: dict[str, Concept] = {}
        self._alias: dict[str, str] = {}
        for concept in concepts:
            self.add(concept)

    def add(self, concept: Concept) -> None:
        """Adds a concept; a second record with the same main ID merges into the first."""
        old = self._concepts.get(concept.id)
        if old is not None:
            concept = Concept(
                id=old.id,
                name=old.name,
                alt_ids=tuple(dict.fromkeys((*old.alt_ids, *concept.alt_ids))),
                synonyms=tuple(n for n in dict.fromkeys((*old.synonyms, concept.name, *concept.synonyms)) if n != old.name),
            )
        self._concepts[concept.id] = concept
        for alt in concept.alt_ids:
            self._alias.setdefault(alt, concept.id)

    def __len__(self) -> int:
        return len(self._concepts)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self._concepts.values())

    def __contains__(self, concept_id: str) -> bool:
        return self.resolve(concept_id) is not None

    def resolve(self, concept_id: str) -> str | None:
        """The main ID for a main or alternative ID, or None."""
        if concept_id in self._concepts:
            return concept_id
        return self._alias.get(concept_id)

    def get(self, concept_id: str) -> Concept | None:
        main = self.resolve(concept_id)
        return None if main is None else self._concepts[main]

    @property
    def n_names(self) -> int:
        return sum(len(c.names) for c in self)


@dataclass(frozen=True)
class DictionaryEntry:
    """One searchable name and every ID that carries it."""

    name: str
    ids: tuple[str, ...]


class Dictionary:
    """The names that search ranks: unique preprocessed names, each with all its IDs.

    A name shared by several concepts keeps all their IDs, so a hit on it counts for each.
    """

    def __init__(self, entries: Iterable[DictionaryEntry] = ()):
        self._ids: dict[str, list[str]] = {}
        for entry in entries:
            self.add(entry.name, entry.ids)

    def add(self, name: str, ids: Sequence[str]) -> None:
        if not name:
            return
        known = self._ids.setdefault(name, [])
        known.extend(i for i in ids if i not in known)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def names(self) -> list[str]:
        return list(self._ids)

    @property
    def ids(self) -> list[tuple[str, ...]]:
        return [tuple(v) for v in self._ids.values()]

    def __iter__(self) -> Iterator[DictionaryEntry]:
        return (DictionaryEntry(n, tuple(i)) for n, i in self._ids.items())


@dataclass(frozen=True)
class Query:
    """A mention prepared for search: its preprocessed parts (one per single concept) and gold IDs."""

    text: str
    parts: tuple[str, ...]
    gold: tuple[str, ...] = ()
    type: str = ""
    pmid: str = ""
    start: int = -1
    end: int = -1

    @property
    def is_composite(self) -> bool:
        return len(self.parts) > 1 or len(self.gold) > 1


@dataclass(frozen=True)
class Candidate:
    """One ranked dictionary name for a query part, with its score and the parts of the score."""

    name: str
    ids: tuple[str, ...]
    score: float
    dense: float | None = None
    sparse: float | None = None
    concepts: tuple[str, ...] = ()  # main IDs of the concepts behind `ids`
    preferred_names: tuple[str, ...] = ()  # their preferred names, in the same order
    rerank: float | None = None  # the reranker's score (`biosyn.model.rerank`); when set, the list is in its order

    @property
    def concept_id(self) -> str:
        """The one ID this candidate answers with: its first concept's main ID, else its first ID."""
        return self.concepts[0] if self.concepts else self.ids[0]

    @property
    def preferred_name(self) -> str:
        return self.preferred_names[0] if self.preferred_names else self.name
