"""biosyn: biomedical entity normalisation with BioSyn (sparse + dense synonym ranking).

The public API is importable from here (`from biosyn import BioSyn, load_vocabulary`). Names are
imported on first use (PEP 562), so `import biosyn` stays cheap and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# public name -> the module that defines it
_EXPORTS = {
    # data
    "Concept": "biosyn.data.records", "Vocabulary": "biosyn.data.records", "Dictionary": "biosyn.data.records",
    "Document": "biosyn.data.records", "Mention": "biosyn.data.records", "Query": "biosyn.data.records",
    "Candidate": "biosyn.data.records", "FormatError": "biosyn.data.errors", "load_vocabulary": "biosyn.data.vocabularies",
    "read_pubtator": "biosyn.data.pubtator",
    # preprocessing
    "Preprocessor": "biosyn.preprocess.pipeline", "build_dictionary": "biosyn.preprocess.pipeline",
    # search and scoring
    "NameIndex": "biosyn.search.index", "Scorer": "biosyn.search.scoring", "Similarity": "biosyn.search.scoring",
    # the model
    "BioSyn": "biosyn.model.biosyn", "Normalization": "biosyn.model.biosyn", "load_model": "biosyn.model.specs",
    # tagging and annotating
    "DiseaseTagger": "biosyn.ner.tagger", "Annotator": "biosyn.annotation.annotator",
    "LinkedMention": "biosyn.annotation.annotator",
    # evaluation and training
    "load_benchmark": "biosyn.evaluation.protocol", "run_evaluation": "biosyn.evaluation.evaluate",
    "Trainer": "biosyn.training.trainer", "TrainConfig": "biosyn.training.config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'biosyn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs; never run
    from .annotation.annotator import Annotator, LinkedMention
    from .data.errors import FormatError
    from .data.pubtator import read_pubtator
    from .data.records import Candidate, Concept, Dictionary, Document, Mention, Query, Vocabulary
    from .data.vocabularies import load_vocabulary
    from .evaluation.evaluate import run_evaluation
    from .evaluation.protocol import load_benchmark
    from .model.biosyn import BioSyn, Normalization
    from .model.specs import load_model
    from .ner.tagger import DiseaseTagger
    from .preprocess.pipeline import Preprocessor, build_dictionary
    from .search.index import NameIndex
    from .search.scoring import Scorer, Similarity
    from .training.config import TrainConfig
    from .training.trainer import Trainer
