"""Weight averaging of models fine-tuned from one starting point ("model soup", Wortsman et al., ICML 2022).

BioSyn runs that differ only in their seed end in nearby weights; their uniform average is
one model of the same size and speed that varies less from seed to seed than any single run.
A weighted average of a fine-tuned model and its starting point (WiSE-FT, Wortsman et al.,
CVPR 2022) moves part of the way back toward what the start knew. Encoder tensors and sparse
weights are averaged; every model must share the architecture, pooling, similarity, scale and
sparse encoder (the vocabulary's TF-IDF), which is checked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..data.atomic import atomic_dir
from ..model.biosyn import BioSyn
from ..search.index import sparse_fingerprint


def average_models(models: Sequence[BioSyn], weights: Sequence[float] | None = None, *, encoder_only: bool = False) -> BioSyn:
    """`models[0]`, its encoder weights and sparse weight replaced by the mean of all `models`',
    weighted by `weights` (normalised to sum to 1; default: uniform). `encoder_only` averages the
    encoders alone and keeps `models[0]`'s scoring (similarity, scale, sparse encoder and weight):
    WiSE-FT toward a start, such as a `biosyn pretrain` folder, that was saved with other scoring."""
    shares = _shares(len(models), weights)
    first = models[0]
    for i, m in enumerate(models[1:], start=2):
        if (m.encoder.pooling, m.encoder.max_length) != (first.encoder.pooling, first.encoder.max_length):
            raise ValueError(f"model {i} differs from model 1 in pooling or max length")
        if encoder_only:
            continue
        if (m.similarity, m.scale) != (first.similarity, first.scale):
            raise ValueError(f"model {i} differs from model 1 in similarity or scale")
        if (m.sparse_encoder is None) != (first.sparse_encoder is None) or (
                m.sparse_encoder is not None and first.sparse_encoder is not None
                and sparse_fingerprint(m.sparse_encoder) != sparse_fingerprint(first.sparse_encoder)):
            raise ValueError(f"model {i} has another sparse encoder than model 1")
    states = [m.encoder.model.state_dict() for m in models]
    if any(s.keys() != states[0].keys() or any(s[k].shape != states[0][k].shape for k in s) for s in states[1:]):
        raise ValueError("the encoders differ in architecture")
    averaged = {}
    for name, tensor in states[0].items():
        if tensor.is_floating_point():
            averaged[name] = sum(share * s[name].float() for share, s in zip(shares, states)).to(tensor.dtype)
        else:  # integer buffers (position ids) are equal
            averaged[name] = tensor.clone()
    first.encoder.model.load_state_dict(averaged)
    if not encoder_only:
        first.sparse_weight = float(sum(share * m.sparse_weight for share, m in zip(shares, models)))
    first.weights_changed()
    return first


def _shares(n: int, weights: Sequence[float] | None) -> list[float]:
    """Each model's share of the average: `weights` normalised to sum to 1, or uniform."""
    if not n:
        raise ValueError("nothing to average")
    weights = [1.0] * n if weights is None else [float(w) for w in weights]
    if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"give one non-negative weight per model, not summing to 0 (got {weights} for {n} models)")
    return [w / sum(weights) for w in weights]


def soup(paths: Sequence[str | os.PathLike], output: str | os.PathLike, *, weights: Sequence[float] | None = None,
         encoder_only: bool = False, extra: dict | None = None) -> BioSyn:
    """Averages the model folders `paths` (see `average_models`) and saves the result to `output`."""
    _shares(len(paths), weights)  # before loading anything
    models = [BioSyn.from_pretrained(p, device="cpu") for p in paths]  # averaging needs no GPU
    model = average_models(models, weights, encoder_only=encoder_only)
    recipe = {"soup_of": [str(p) for p in paths], **({"soup_weights": [float(w) for w in weights]} if weights is not None else {}),
              **({"soup_encoder_only": True} if encoder_only else {})}
    with atomic_dir(output) as tmp:
        model.save_pretrained(tmp, extra={**recipe, **(extra or {})})
    return model
