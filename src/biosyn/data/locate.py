"""Where the data lives, and the files of the corpora and vocabularies biosyn knows by name.

The data folder is, in order: an explicit `--data-dir`, `$BIOSYN_DATA_DIR`, or the cache that
`biosyn data fetch` fills (`$BIOSYN_CACHE`, else `~/.cache/biosyn/data`). Its layout is the
same in every case: `ncbi-disease/`, `bc5cdr/`, `medic/`, `ctd/`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_DATA_DIR = "BIOSYN_DATA_DIR"
ENV_CACHE = "BIOSYN_CACHE"


@dataclass(frozen=True)
class CorpusFiles:
    name: str
    splits: dict[str, str]
    vocabulary: str
    spelling_fixes: str | None = None
    entity_types: tuple[str, ...] | None = None
    # BioSyn's protocol for the corpus: leave out (and count) queries whose gold IDs are not all in the vocabulary.
    drop_unknown_ids: bool = False
    reference: str = ""  # who published it, for model cards


CORPORA = {
    "ncbi-disease": CorpusFiles(
        name="ncbi-disease",
        splits={
            "train": "ncbi-disease/NCBItrainset_corpus.txt",
            "dev": "ncbi-disease/NCBIdevelopset_corpus.txt",
            "test": "ncbi-disease/NCBItestset_corpus.txt",
        },
        vocabulary="medic-2012",
        spelling_fixes="ncbi-disease/ncbi-spell-check.txt",
        reference="Doğan et al., 2014",
    ),
    # BioCreative V CDR, its Disease mentions only. The test set is published but not always present.
    "bc5cdr-disease": CorpusFiles(
        name="bc5cdr-disease",
        splits={
            "train": "bc5cdr/CDR_TrainingSet.PubTator.txt",
            "dev": "bc5cdr/CDR_DevelopmentSet.PubTator.txt",
            "test": "bc5cdr/CDR_TestSet.PubTator.txt",
        },
        vocabulary="medic-2012",
        entity_types=("Disease",),
        drop_unknown_ids=True,
        reference="BioCreative V CDR, Li et al., 2016; Disease mentions",
    ),
}

VOCABULARIES = {
    "medic-2012": "medic/medic_06Jul2012.txt",
    "ctd": "ctd/CTD_diseases.tsv.gz",
}


def cache_root() -> Path:
    """biosyn's cache: `$BIOSYN_CACHE`, else `~/.cache/biosyn` (data, indexes, ONNX exports of read-only models)."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "biosyn")


def default_cache_dir() -> Path:
    return cache_root() / "data"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR])
    return default_cache_dir()


def data_file(relative: str, explicit_dir: str | os.PathLike | None = None) -> Path:
    """The path of one file of the data folder; a clear error says how to get it when missing."""
    root = data_dir(explicit_dir)
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found. Point biosyn at a data folder with --data-dir or ${ENV_DATA_DIR}, "
            f"or download the public files with `biosyn data fetch`."
        )
    return path


def corpus(name: str) -> CorpusFiles:
    try:
        return CORPORA[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}") from None
