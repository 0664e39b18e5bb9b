"""The one resolver of model specs: what a user names (`minilm`, `sparse`, a folder, a hub id)
turned into a `BioSyn` model. Serving, evaluation and training all load through it.

- `sparse`: TF-IDF only (no encoder).
- `minilm`: the packaged all-MiniLM-L6-v2 with its preset (mean pooling, cosine, sparse weight 0.2).
- a folder or hub id: a biosyn model folder, a released BioSyn checkpoint, or a plain transformers
  encoder (then BioSyn's defaults: `cls` pooling unless sentence-transformers says otherwise, `dot`).

The keyword options override what the spec says (training sets its own similarity and length);
`None` keeps it. A training start from `minilm` used to get sparse weight 1.0 and now gets the
preset's 0.2: training replaces the weight with its own initial value, so only a pre-trained-only
folder records another weight than before.
"""

from __future__ import annotations

import os
from pathlib import Path

from .biosyn import BioSyn, _local_or_download
from .presets import MINILM, minilm_path

ENV_MODEL = "BIOSYN_MODEL"
# Where `biosyn reproduce` and `biosyn train` put their final model by default.
TRAINED_DEFAULT = Path("runs") / "ncbi-disease" / "model"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_spec() -> str:
    """$BIOSYN_MODEL, else a trained model when one exists, else the packaged MiniLM."""
    if os.environ.get(ENV_MODEL):
        return os.environ[ENV_MODEL]
    if (TRAINED_DEFAULT / "biosyn.json").exists():
        return str(TRAINED_DEFAULT)
    return "minilm"


def load_model(spec: str | os.PathLike | None = None, *, pooling: str | None = None, max_length: int | None = None,
               similarity: str | None = None, scale: float | None = None, device: str | None = None,
               trust_pickle: bool = False, bf16: bool = False, backend: str | None = "torch") -> BioSyn:
    """`backend` runs the encoder (`encoders.onnx.Backend`); None: ONNX when the model has a current export,
    else torch. Training needs torch, the default here; the commands that only infer pass None."""
    spec = str(spec or default_model_spec())
    if spec == "sparse":
        model = BioSyn()
    elif spec == "minilm":
        model = BioSyn.from_encoder(minilm_path(), pooling=pooling or MINILM["pooling"], max_length=max_length or 25,
                                    similarity=MINILM["similarity"], scale=MINILM["scale"],
                                    sparse_weight=MINILM["sparse_weight"], device=device, backend=backend)
        model.base_model = MINILM_HUB_ID
    else:
        model = BioSyn.from_pretrained(spec, trust_pickle=trust_pickle, device=device, backend=backend)
        model.base_model = model.base_model or spec
    if model.encoder is not None and (pooling or max_length or similarity or scale is not None):
        model.configure(similarity=similarity, scale=scale, pooling=pooling, max_length=max_length)
    model.configure_embedding(bf16=bf16)
    model.spec = spec
    return model


def model_folder(spec: str | os.PathLike | None = None) -> Path:
    """The folder of a model's encoder weights (downloaded for a hub id)."""
    spec = str(spec or default_model_spec())
    if spec == "sparse":
        raise ValueError("the sparse model has no encoder to export")
    return minilm_path() if spec == "minilm" else _local_or_download(spec, {})
