"""Training queries, as BioSyn selects them.

BioSyn trains on preprocessed mentions (abbreviations resolved, composites split), then drops
composite mentions, exact duplicates (same text, same gold IDs) and mentions whose gold IDs
are missing from the vocabulary (`filter_cuiless`). The training dictionary is the
vocabulary alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..data.records import Query, Vocabulary


@dataclass(frozen=True)
class TrainingQuery:
    """One preprocessed mention and its gold IDs (a candidate is positive when it carries all of them)."""

    text: str
    gold: tuple[str, ...]


@dataclass
class QuerySelection:
    queries: list[TrainingQuery]
    counts: dict = field(default_factory=dict)


def select_queries(queries: Iterable[Query], vocabulary: Vocabulary) -> QuerySelection:
    """BioSyn's filters, in its order: no gold, composite, duplicate, unknown IDs."""
    counts = {"mentions": 0, "no_gold": 0, "composite": 0, "duplicate": 0, "unknown_ids": 0}
    kept: list[TrainingQuery] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for q in queries:
        counts["mentions"] += 1
        if not q.gold:
            counts["no_gold"] += 1
            continue
        if q.is_composite:
            counts["composite"] += 1
            continue
        key = (q.parts[0], tuple(sorted(q.gold)))
        if key in seen:
            counts["duplicate"] += 1
            continue
        seen.add(key)
        if not all(g in vocabulary for g in q.gold):
            counts["unknown_ids"] += 1
            continue
        kept.append(TrainingQuery(q.parts[0], tuple(q.gold)))
    counts["kept"] = len(kept)
    return QuerySelection(kept, counts)


def corpus_training_queries(corpus: str, splits: Sequence[str], *, data_dir: str | os.PathLike | None = None,
                            vocabulary: str | None = None, add_corpora: Sequence[str] = ()):
    """Training queries of a known corpus's splits, with the vocabulary, training dictionary and preprocessor.

    `add_corpora` adds other corpora's training splits (beyond BioSyn, whose models train on one corpus), each
    preprocessed with its own corpus's preprocessor; the counts say how many queries each source gave."""
    from ..data.locate import corpus as corpus_files, data_file
    from ..data.pubtator import read_pubtator
    from ..data.vocabularies import load_vocabulary
    from ..preprocess.corpus import corpus_preprocessor
    from ..preprocess.pipeline import build_dictionary

    if corpus in add_corpora:
        raise ValueError(f"--add-corpus {corpus}: that is the training corpus already")
    files = corpus_files(corpus)
    preprocessor = corpus_preprocessor(corpus, data_dir)
    vocab = load_vocabulary(vocabulary or files.vocabulary, data_dir=data_dir)
    sources = [(corpus, files, preprocessor, list(splits))]
    for extra in dict.fromkeys(add_corpora):
        sources.append((extra, corpus_files(extra), corpus_preprocessor(extra, data_dir), ["train"]))
    mentions: list[Query] = []
    per_source: dict[str, int] = {}
    for name, source_files, source_preprocessor, source_splits in sources:
        for split in source_splits:
            if split not in source_files.splits:
                raise ValueError(f"{name} has no split {split!r}; choose from {', '.join(source_files.splits)}")
            docs = read_pubtator(data_file(source_files.splits[split], data_dir), types=source_files.entity_types)
            before = len(mentions)
            mentions.extend(source_preprocessor.queries(docs))
            per_source[f"{name}:{split}"] = len(mentions) - before
    selection = select_queries(mentions, vocab)
    if len(sources) > 1:
        selection.counts["mentions_per_source"] = per_source
    return selection, vocab, build_dictionary(vocab, preprocessor), preprocessor
