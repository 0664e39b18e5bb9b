"""The evaluation protocol: which queries, against which dictionary.

As in BioSyn: the test split is ranked against the vocabulary plus the preprocessed train and
dev mentions with their gold IDs (BioSyn's `test_dictionary`); dev against the vocabulary plus
train mentions; train against the vocabulary alone. Mentions without gold IDs cannot be
scored and are always left out; mentions whose gold IDs are missing from the vocabulary are
left out where BioSyn left them out (BC5CDR: `CorpusFiles.drop_unknown_ids`) and kept
otherwise, unless asked. Both counts are reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..data.locate import corpus as corpus_files, data_file
from ..data.pubtator import read_pubtator
from ..data.records import Dictionary, Query, Vocabulary
from ..data.vocabularies import load_vocabulary
from ..preprocess.corpus import corpus_preprocessor
from ..preprocess.pipeline import Preprocessor, build_dictionary, split_known
from ..preprocess.text import normalize_text

EARLIER_SPLITS = {"train": (), "dev": ("train",), "test": ("train", "dev")}


@dataclass
class Benchmark:
    name: str
    queries: list[Query]
    dictionary: Dictionary
    vocabulary: Vocabulary
    preprocessor: Preprocessor
    dropped_no_gold: int = 0
    dropped_unknown: int = 0
    kept_unknown: int = 0
    sources: dict = field(default_factory=dict)

    def __post_init__(self):
        # Accuracy over no query is no figure at all: an empty or unscorable query file is a mistake.
        if not self.queries:
            raise ValueError(f"{self.name}: no query with gold IDs to evaluate ({self.dropped_no_gold} without gold IDs, "
                             f"{self.dropped_unknown} with unknown IDs left out)")

    def describe(self) -> dict:
        return {
            "benchmark": self.name, "queries": len(self.queries), "dictionary_names": len(self.dictionary),
            "vocabulary_concepts": len(self.vocabulary), "dropped_without_gold": self.dropped_no_gold,
            "dropped_unknown_ids": self.dropped_unknown, "kept_unknown_ids": self.kept_unknown, "sources": self.sources,
        }


def load_benchmark(
    corpus: str = "ncbi-disease",
    split: str = "test",
    *,
    data_dir: str | os.PathLike | None = None,
    vocabulary: str | os.PathLike | None = None,
    drop_unknown: bool | None = None,  # default: the corpus's protocol
    preprocessor: Preprocessor | None = None,
) -> Benchmark:
    if split not in EARLIER_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose train, dev or test")
    files = corpus_files(corpus)
    if drop_unknown is None:
        drop_unknown = files.drop_unknown_ids
    preprocessor = preprocessor or corpus_preprocessor(corpus, data_dir)
    vocab = load_vocabulary(vocabulary or files.vocabulary, data_dir=data_dir)

    def queries_of(name: str) -> list[Query]:
        docs = read_pubtator(data_file(files.splits[name], data_dir), types=files.entity_types)
        return preprocessor.queries(docs)

    extra = [q for earlier in EARLIER_SPLITS[split] for q in queries_of(earlier) if q.gold]
    dictionary = build_dictionary(vocab, preprocessor, extra)
    queries = queries_of(split)
    scored = [q for q in queries if q.gold]
    known, unknown = split_known(scored, vocab)
    return Benchmark(
        name=f"{corpus}/{split}", queries=known if drop_unknown else scored, dictionary=dictionary,
        vocabulary=vocab, preprocessor=preprocessor, dropped_no_gold=len(queries) - len(scored),
        dropped_unknown=len(unknown) if drop_unknown else 0, kept_unknown=0 if drop_unknown else len(unknown),
        sources={"split": split, "dictionary_extra_splits": list(EARLIER_SPLITS[split]),
                 "vocabulary": str(vocabulary or files.vocabulary)},
    )


def custom_benchmark(queries: list[Query], vocabulary: Vocabulary, *, extra: Sequence[Query] = (), dictionary: Dictionary | None = None,
                     preprocessor: Preprocessor | None = None, name: str = "custom", drop_unknown: bool = False) -> Benchmark:
    """A benchmark from your own queries (PubTator or BioSyn `.concept` files) and vocabulary."""
    preprocessor = preprocessor or Preprocessor()
    dictionary = dictionary or build_dictionary(vocabulary, preprocessor, extra)
    scored = [q for q in queries if q.gold]
    known, unknown = split_known(scored, vocabulary)
    return Benchmark(name, known if drop_unknown else scored, dictionary, vocabulary, preprocessor,
                     dropped_no_gold=len(queries) - len(scored),
                     dropped_unknown=len(unknown) if drop_unknown else 0, kept_unknown=0 if drop_unknown else len(unknown))


def read_queries(path: str | os.PathLike, preprocessor: Preprocessor, types=None) -> list[Query]:
    """Queries from a PubTator file, or from a BioSyn folder or file of `.concept` queries."""
    from ..data.biosyn_files import read_concept_dir, read_concept_file

    path = Path(path)
    if path.is_dir() or path.suffix == ".concept":
        # Already preprocessed by BioSyn's scripts; normalising again changes nothing in them.
        queries = read_concept_dir(path) if path.is_dir() else read_concept_file(path)
        return [replace(q, parts=tuple(normalize_text(p) for p in q.parts)) for q in queries]
    return preprocessor.queries(read_pubtator(path, types=types))
