"""The one definition of BioSyn's score, for serving (NumPy) and for training (torch).

    score(query, name) = dense(query, name) + sparse_weight × sparse(query, name)

`dense` is the inner product of the pooled vectors as the similarity prepares them: raw
(`dot`, BioSyn's choice) or unit length with the query side multiplied by `scale` (`cosine`).
`sparse` is the TF-IDF cosine. Preparing the vectors once, apart from the product, is what lets
an index store the names' vectors and a FAISS inner-product index search them; so both forms
below split the score into preparing (`vectors`, `vectors_torch`) and combining
(`dense_torch`, or the index's inner products, then `hybrid`).

It lives in the search layer, the lowest one that scores, so that the index, the model and the
trainer all import it. Modes and similarities are defined here once; the CLI's `choices` and
the server's request model take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

import numpy as np

if TYPE_CHECKING:
    import torch

Mode = Literal["hybrid", "dense", "sparse"]
MODES: tuple[str, ...] = get_args(Mode)


class Similarity(StrEnum):
    DOT = "dot"  # BioSyn: raw inner product of the pooled vectors
    COSINE = "cosine"  # unit vectors, the query side times `scale`

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"similarity must be one of {tuple(s.value for s in cls)}, got {value!r}")


SIMILARITIES: tuple[str, ...] = tuple(s.value for s in Similarity)

# The norm floor keeps an all-zero vector at zero instead of NaN.
_EPS = 1e-12

Scores = TypeVar("Scores", np.ndarray, "torch.Tensor")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def hybrid(dense: Scores, sparse: Scores, sparse_weight) -> Scores:
    """dense + sparse_weight × sparse, for NumPy arrays (kept float32) or torch tensors (the weight
    may be a learnable parameter)."""
    if isinstance(dense, np.ndarray):
        return dense + np.float32(sparse_weight) * sparse
    return dense + sparse_weight * sparse


@dataclass(frozen=True)
class Scorer:
    """The dense half of the score: how vectors are prepared, and their product."""

    similarity: Similarity = Similarity.DOT
    scale: float = 1.0

    def __post_init__(self) -> None:
        # Accepts the names too ("cosine"), as configs and the CLI give them.
        object.__setattr__(self, "similarity", Similarity(self.similarity))
        object.__setattr__(self, "scale", float(self.scale))

    def max_hybrid(self, sparse_weight: float) -> float | None:
        """The highest hybrid score a name can get (one equal to the query): `scale + sparse_weight` for
        cosine; none for dot, whose scores are unbounded."""
        return self.scale + max(float(sparse_weight), 0.0) if self.similarity is Similarity.COSINE else None

    # -- NumPy: serving --------------------------------------------------------------------

    def vectors(self, vectors, *, queries: bool = False) -> np.ndarray:
        """Pooled vectors [n, d] as the similarity wants them (float32)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.similarity is Similarity.COSINE:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), np.float32(_EPS))
            if queries:
                vectors = vectors * np.float32(self.scale)
        return vectors

    # -- torch: training -------------------------------------------------------------------

    def vectors_torch(self, vectors: torch.Tensor, *, queries: bool = False) -> torch.Tensor:
        """`vectors` for tensors, differentiable."""
        import torch

        if self.similarity is Similarity.COSINE:
            vectors = torch.nn.functional.normalize(vectors, dim=-1, eps=_EPS)
            if queries:
                vectors = vectors * self.scale
        return vectors

    def dense_torch(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Dense scores [B, K] of raw pooled query vectors [B, d] and their candidates' [B, K, d]."""
        import torch

        return torch.einsum("bh,bkh->bk", self.vectors_torch(queries, queries=True), self.vectors_torch(candidates))
