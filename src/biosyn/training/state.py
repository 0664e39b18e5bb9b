"""Trainer state on disk without pickle: optimizer tensors as safetensors, the rest as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data.atomic import atomic_write

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path, extra_tensors: dict[str, torch.Tensor]) -> None:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    for key, value in extra_tensors.items():
        tensors[f"extra.{key}"] = value.detach().cpu().contiguous()
    save_file(tensors, str(directory / OPTIMIZER_FILE))
    with atomic_write(directory / "optimizer.json") as out:
        json.dump({"param_groups": sd["param_groups"], "scalars": scalars}, out)


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> dict[str, torch.Tensor]:
    """Restores `optimizer` in place; returns the extra tensors saved beside it."""
    tensors = load_file(str(directory / OPTIMIZER_FILE))
    meta = json.loads((directory / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    extra = {}
    for name, value in tensors.items():
        kind, rest = name.split(".", 1)
        if kind == "extra":
            extra[rest] = value
            continue
        pid, key = rest.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return extra


