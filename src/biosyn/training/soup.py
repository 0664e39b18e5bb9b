"""Weight averaging of models fine-tuned from one starting point ("model soup", Wortsman et al., ICML 2022).

BioSyn runs that differ only in their seed end in nearby weights; their uniform average is
one model of the same size and speed that varies less from seed to seed than any single run.
Encoder tensors and sparse weights are averaged; every model must share the architecture,
pooling, similarity, scale and sparse encoder (the vocabulary's TF-IDF), which is checked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..data.atomic import atomic_dir
from ..model.biosyn import BioSyn
from ..search.index import sparse_fingerprint


def average_models(models: Sequence[BioSyn]) -> BioSyn:
    """`models[0]`, its encoder weights and sparse weight replaced by the mean of all `models`'."""
    if not models:
        raise ValueError("nothing to average")
    first = models[0]
    for i, m in enumerate(models[1:], start=2):
        same = (m.similarity, m.scale, m.encoder.pooling, m.encoder.max_length) == \
               (first.similarity, first.scale, first.encoder.pooling, first.encoder.max_length)
        if not same:
            raise ValueError(f"model {i} differs from model 1 in similarity, scale, pooling or max length")
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
            averaged[name] = torch.stack([s[name].float() for s in states]).mean(0).to(tensor.dtype)
        else:  # integer buffers (position ids) are equal
            averaged[name] = tensor.clone()
    first.encoder.model.load_state_dict(averaged)
    first.sparse_weight = float(sum(m.sparse_weight for m in models) / len(models))
    first.weights_changed()
    return first


def soup(paths: Sequence[str | os.PathLike], output: str | os.PathLike, *, extra: dict | None = None) -> BioSyn:
    """Averages the model folders `paths` and saves the result to `output`."""
    model = average_models([BioSyn.from_pretrained(p, device="cpu") for p in paths])  # averaging needs no GPU
    with atomic_dir(output) as tmp:
        model.save_pretrained(tmp, extra={"soup_of": [str(p) for p in paths], **(extra or {})})
    return model
