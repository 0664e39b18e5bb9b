"""BioSyn's synonym-marginalisation loss.

softmax over each query's candidate scores, then −log of the summed probability of its
positive candidates; queries without a positive candidate are skipped, and the loss is the
mean over the rest. Computed as logsumexp(positives) − logsumexp(all), which equals
−log Σ_pos softmax without BioSyn's clamp at 1e-9 (the value is the same wherever the clamp
does not bite; underflow cannot happen here).
"""

from __future__ import annotations

import torch


def marginal_nll(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(mean loss over queries with a positive, number of such queries). No positive at all: 0 with a graph."""
    labels = labels.to(scores.dtype)
    has_positive = labels.sum(dim=-1) > 0
    n = int(has_positive.sum())
    if n == 0:
        return scores.sum() * 0.0, 0
    s, lab = scores[has_positive], labels[has_positive]
    positive = s.masked_fill(lab <= 0, float("-inf"))
    loss = torch.logsumexp(s, dim=-1) - torch.logsumexp(positive, dim=-1)
    return loss.mean(), n
