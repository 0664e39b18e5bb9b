"""The optimiser and optimiser step of the tagger's and the reranker's fine-tuning; `Trainer` shares the schedule."""

from __future__ import annotations

# Parameters that get no weight decay, as in BERT's recipe.
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


def warmup_linear(step: int, total: int, warmup: float) -> float:
    """The learning-rate multiplier at optimiser step `step` (0-based) of `total`: a linear warm-up over the
    first `warmup` fraction of the steps, then a linear decay to 0. A function of the step alone, so a
    resumed run follows the same schedule without stored scheduler state."""
    total = max(total, 1)
    warm = int(warmup * total)
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(total - warm, 1))


def adamw(model, lr: float, weight_decay: float):
    """AdamW with weight decay on the weights only (not on biases and LayerNorm)."""
    import torch

    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(k in n for k in NO_DECAY)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def optimizer_step(loss, model, optimizer, scheduler, *, max_grad_norm: float = 1.0) -> float:
    """One optimiser step on `loss`: back-propagate, clip the gradient norm, step, advance the schedule; the loss."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())
