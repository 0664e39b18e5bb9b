"""The dictionary a user's command searches: a vocabulary, optionally plus a corpus's mentions."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.locate import CORPORA, data_file
from ..data.pubtator import read_pubtator
from ..data.records import Dictionary, Vocabulary
from ..data.vocabularies import load_vocabulary, vocabulary_path
from ..preprocess.corpus import corpus_preprocessor
from ..preprocess.pipeline import Preprocessor, build_dictionary


def parse_mentions_spec(spec: str) -> tuple[str, list[str]]:
    """`ncbi-disease:train,dev` → ("ncbi-disease", ["train", "dev"])."""
    corpus, _, splits = spec.partition(":")
    if corpus not in CORPORA:
        raise ValueError(f"--add-mentions: unknown corpus {corpus!r}; known: {', '.join(CORPORA)}")
    names = [s for s in (splits or "train,dev").split(",") if s]
    unknown = [s for s in names if s not in CORPORA[corpus].splits]
    if unknown:
        raise ValueError(f"--add-mentions: unknown split(s) {unknown} of {corpus}")
    return corpus, names


def resolve_mentions(vocabulary_spec: str, mentions_spec: str | None, data_dir: str | os.PathLike | None, *,
                     default_mentions: bool = False) -> str | None:
    """The mentions a dictionary adds. With `default_mentions`, MEDIC 2012 gets the NCBI disease train
    and dev mentions when the corpus is in the data folder (BioSyn's test dictionary)."""
    if mentions_spec is None and default_mentions and vocabulary_spec == "medic-2012":
        try:
            data_file(CORPORA["ncbi-disease"].splits["train"], data_dir)
            return "ncbi-disease:train,dev"
        except FileNotFoundError:
            pass
    return mentions_spec


def input_files(vocabulary_spec: str, mentions_spec: str | None, data_dir: str | os.PathLike | None) -> list[Path]:
    """Every file `dictionary_for` reads: what a cached dictionary's key checksums."""
    files = [vocabulary_path(vocabulary_spec, data_dir)]
    if mentions_spec:
        corpus, splits = parse_mentions_spec(mentions_spec)
        fixes = CORPORA[corpus].spelling_fixes
        files += [data_file(rel, data_dir) for rel in [*(CORPORA[corpus].splits[s] for s in splits), *([fixes] if fixes else [])]]
    return files


def dictionary_for(vocabulary_spec: str, vocabulary_format: str | None, mentions_spec: str | None,
                   data_dir: str | os.PathLike | None, *, default_mentions: bool = False) -> tuple[Vocabulary, Dictionary]:
    """The vocabulary and its dictionary (`default_mentions`: see `resolve_mentions`)."""
    vocabulary = load_vocabulary(vocabulary_spec, format=vocabulary_format, data_dir=data_dir)
    mentions_spec = resolve_mentions(vocabulary_spec, mentions_spec, data_dir, default_mentions=default_mentions)
    if not mentions_spec:
        return vocabulary, build_dictionary(vocabulary, Preprocessor())
    corpus, splits = parse_mentions_spec(mentions_spec)
    preprocessor = corpus_preprocessor(corpus, data_dir)
    extra = [q for split in splits
             for q in preprocessor.queries(read_pubtator(data_file(CORPORA[corpus].splits[split], data_dir))) if q.gold]
    return vocabulary, build_dictionary(vocabulary, preprocessor, extra)
