"""A training run's folder: the model (`model/`) and the trainer state (`trainer_state/`),
each replaced whole after every epoch, so an interrupted save leaves the previous epoch's."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data.atomic import atomic_dir, write_json
from ..model.biosyn import BioSyn
from .state import STATE_FILE, load_optimizer, save_optimizer

MODEL_DIR = "model"
STATE_DIR = "trainer_state"


@dataclass
class TrainerState:
    epoch: int = 0  # finished epochs
    step: int = 0  # optimiser steps so far
    history: list = field(default_factory=list)  # one dict per finished epoch


class Checkpoints:
    def __init__(self, output: str | os.PathLike, card: dict | None = None):
        self.output = Path(output)
        self.card = card or {}

    def save(self, model: BioSyn, optimizer: torch.optim.Optimizer, sparse_weight: torch.Tensor, state: TrainerState,
             config: dict, training: dict, command: str | None = None) -> Path:
        """Replaces `<output>/trainer_state` then `<output>/model` (each written aside, then renamed)."""
        from .model_card import write_model_card

        fingerprint = model.fingerprint
        with atomic_dir(self.output / STATE_DIR) as state_tmp:
            save_optimizer(optimizer, state_tmp, {"sparse_weight": sparse_weight.detach()})
            write_json(state_tmp / STATE_FILE, {"format": "biosyn.trainer_state", "version": 1, **asdict(state),
                                                "config": config, "model_fingerprint": fingerprint})
        with atomic_dir(self.output / MODEL_DIR) as model_tmp:
            model.save_pretrained(model_tmp, extra={"training": training,
                                                    "base_model": model.base_model or self.card.get("base_model")})
            write_model_card(model_tmp, {**self.card, "training": training, "command": command or self.card.get("command")})
        return self.output / MODEL_DIR

    def load(self, model: BioSyn, optimizer: torch.optim.Optimizer, sparse_weight: torch.Tensor,
             directory: str | os.PathLike | None = None) -> TrainerState:
        """Restores the optimizer and sparse weight saved by `save` into the given objects (the model
        itself is loaded by the caller) and returns the counters."""
        directory = Path(directory or self.output / STATE_DIR)
        meta = json.loads((directory / STATE_FILE).read_text())
        if meta.get("model_fingerprint") != model.fingerprint:
            raise ValueError(f"{directory} does not belong to the model being resumed (fingerprints differ); "
                             "the last save was interrupted: start again or resume from a copy")
        extra = load_optimizer(optimizer, directory)
        with torch.no_grad():
            sparse_weight.copy_(extra["sparse_weight"])
        return TrainerState(meta["epoch"], meta["step"], meta["history"])
