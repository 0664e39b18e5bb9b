"""The dictionary a user's command searches: a vocabulary, optionally plus a corpus's mentions."""

from __future__ import annotations

import os

from ..data.locate import CORPORA, data_file
from ..data.pubtator import read_pubtator
from ..data.records import Dictionary, Vocabulary
from ..data.vocabularies import load_vocabulary
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


def dictionary_for(vocabulary_spec: str, vocabulary_format: str | None, mentions_spec: str | None,
                   data_dir: str | os.PathLike | None, *, default_mentions: bool = False) -> tuple[Vocabulary, Dictionary]:
    """The vocabulary and its dictionary. With `default_mentions`, MEDIC 2012 also gets the NCBI
    disease train and dev mentions when the corpus is in the data folder (BioSyn's test dictionary)."""
    vocabulary = load_vocabulary(vocabulary_spec, format=vocabulary_format, data_dir=data_dir)
    if mentions_spec is None and default_mentions and vocabulary_spec == "medic-2012":
        try:
            data_file(CORPORA["ncbi-disease"].splits["train"], data_dir)
            mentions_spec = "ncbi-disease:train,dev"
        except FileNotFoundError:
            pass
    if not mentions_spec:
        return vocabulary, build_dictionary(vocabulary, Preprocessor())
    corpus, splits = parse_mentions_spec(mentions_spec)
    preprocessor = corpus_preprocessor(corpus, data_dir)
    extra = [q for split in splits
             for q in preprocessor.queries(read_pubtator(data_file(CORPORA[corpus].splits[split], data_dir))) if q.gold]
    return vocabulary, build_dictionary(vocabulary, preprocessor, extra)
