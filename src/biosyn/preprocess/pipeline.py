"""BioSyn's preprocessing protocol, end to end: documents become queries, vocabularies become
the name dictionary that search ranks.

Queries, in BioSyn's order: abbreviations resolved with Ab3P over the document's text,
composite mentions split into single-concept parts, then each part lowercased, spell-fixed
(NCBI) and stripped of punctuation. Vocabulary names get the last step only (no spelling
fixes). Where BioSyn's reference code differs in a detail, the module of that step says how.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..data.records import Dictionary, Document, Query, Vocabulary
from .abbreviations import expand_abbreviations, find_abbreviations, reordered_abbreviations
from .composites import count_concepts, split_composite
from .text import normalize_text


@dataclass
class Preprocessor:
    resolve_abbreviations: bool = True
    split_composites: bool = True
    spelling_fixes: Mapping[str, str] = field(default_factory=dict)

    def name(self, text: str) -> str:
        """A vocabulary name, as the dictionary stores it."""
        return normalize_text(text)

    def parts(self, mention: str, gold: Sequence[str] = (), abbreviations: Mapping[str, str] | None = None,
              is_name: Callable[[str], bool] | None = None) -> tuple[str, ...]:
        """A mention's preprocessed single-concept parts. `gold` (normalised IDs), when known,
        tells how many parts a composite must have; without it the split rules decide alone, except
        that a mention which is itself a vocabulary name (`is_name` of the whole, preprocessed) stays
        whole: "breast and ovarian cancer" names one syndrome in NCBI's training mentions."""
        if abbreviations and self.resolve_abbreviations:
            mention = expand_abbreviations(mention, abbreviations)
        n_ids = count_concepts(gold) if gold else None
        pieces = split_composite(mention, n_ids) if self.split_composites else [mention]
        if len(pieces) > 1 and not gold and is_name is not None:
            whole = normalize_text(mention, self.spelling_fixes)
            if whole and is_name(whole):
                return (whole,)
        parts = tuple(p for p in (normalize_text(x, self.spelling_fixes) for x in pieces) if p)
        return parts or (normalize_text(mention, self.spelling_fixes),)

    def abbreviations(self, doc: Document) -> dict[str, str]:
        # Title and abstract laid out as BioSyn hands them to Ab3P.
        return self.abbreviations_in(f"{doc.title}\n\n{doc.abstract}\n")

    def abbreviations_in(self, text: str) -> dict[str, str]:
        return find_abbreviations(text) if self.resolve_abbreviations else {}

    def text_abbreviations(self, text: str) -> dict[str, str]:
        """For new text (not BioSyn's protocol, which keeps Ab3P's pairs alone): Ab3P's pairs and
        the short forms that reorder their long form's initials ("myotonic dystrophy (DM)")."""
        found = self.abbreviations_in(text)
        return found | reordered_abbreviations(text, found) if self.resolve_abbreviations else found

    def queries(self, docs: Iterable[Document]) -> list[Query]:
        """One query per mention, in document order. A PMID seen before is skipped, as BioSyn
        does with the NCBI training file's repeated abstract."""
        queries, seen = [], set()
        for doc in docs:
            if doc.pmid in seen:
                continue
            seen.add(doc.pmid)
            abbreviations = self.abbreviations(doc)
            for m in doc.mentions:
                queries.append(Query(
                    text=m.text, parts=self.parts(m.text, m.ids, abbreviations), gold=m.ids,
                    type=m.type, pmid=doc.pmid, start=m.start, end=m.end,
                ))
        return queries


def build_dictionary(vocabulary: Vocabulary, preprocessor: Preprocessor | None = None, extra: Iterable[Query] = ()) -> Dictionary:
    """Every name of the vocabulary with its concept's main and alternative IDs, plus the
    preprocessed `extra` queries (training mentions) with their gold IDs.

    A split composite goes in as BioSyn adds it: its parts joined into one name carrying all
    its IDs. Pairing parts with IDs by position would be wrong: the corpus does not list a
    composite's IDs in mention order ("breast or ovarian cancer" is D010051|D001943 once).
    """
    preprocessor = preprocessor or Preprocessor()
    dictionary = Dictionary()
    for concept in vocabulary:
        for name in concept.names:
            dictionary.add(preprocessor.name(name), concept.ids)
    for q in extra:
        dictionary.add(" ".join(q.parts), q.gold)
    return dictionary


def split_known(queries: Sequence[Query], vocabulary: Vocabulary) -> tuple[list[Query], list[Query]]:
    """Queries whose gold IDs are all in the vocabulary, and the rest (no gold, or unknown IDs)."""
    known: list[Query] = []
    unknown: list[Query] = []
    for q in queries:
        (known if q.gold and all(g in vocabulary for g in q.gold) else unknown).append(q)
    return known, unknown
