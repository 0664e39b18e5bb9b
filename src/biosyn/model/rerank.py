"""A cross-encoder that re-scores the BioSyn model's top candidates.

BioSyn scores a mention and a name from two separate vectors; a cross-encoder reads them together
("[CLS] mention [SEP] candidate [SEP]") and can weigh the words that decide between near names
("type 1" / "type 2", "breast" / "ovarian"). It re-scores the `depth` best candidates of the
BioSyn ranking, and the final score is residual:

    score = BioSyn score + cross-encoder logit

so an untrained head (logit ~ constant) keeps BioSyn's order, and training learns a correction.

A reranker folder is a standard transformers sequence-classification folder (one label, safetensors
weights, tokenizer files), loadable with `AutoModelForSequenceClassification.from_pretrained`, plus
`biosyn_reranker.json` (`RerankerOptions`) and a model card.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from pathlib import Path

import numpy as np

from ..data.atomic import atomic_write
from ..data.records import Candidate

CONFIG_FILE = "biosyn_reranker.json"


class CandidateText(StrEnum):
    """What the cross-encoder reads for a candidate."""

    NAME = "name"  # the dictionary name that matched
    NAME_AND_PREFERRED = "name+preferred"  # ... and its concept's preferred name, when they differ

    def render(self, candidate: Candidate) -> str:
        if self is CandidateText.NAME_AND_PREFERRED and candidate.preferred_name.lower() != candidate.name.lower():
            return f"{candidate.name} ; {candidate.preferred_name}"
        return candidate.name


@dataclass(frozen=True)
class RerankerOptions:
    depth: int = 20  # how many BioSyn candidates are re-scored
    max_length: int = 48  # tokens of one (mention, candidate) pair
    batch_size: int = 128  # pairs per forward pass
    candidate_text: str = CandidateText.NAME.value
    # Re-score only where BioSyn is unsure: its top two scores closer than this (None: everywhere). Where it
    # is sure, its order stands and no pair is read.
    gate: float | None = None

    @classmethod
    def from_dict(cls, data: dict) -> RerankerOptions:
        known = {f.name for f in fields(cls)}
        options = cls(**{k: v for k, v in data.items() if k in known})
        CandidateText(options.candidate_text)  # a clear error for an unknown choice
        return options


class CrossEncoderReranker:
    """Not thread-safe, like BioSyn: one call at a time."""

    def __init__(self, model, tokenizer, options: RerankerOptions | None = None):
        self.model = model  # a transformers sequence-classification model with one label
        self.tokenizer = tokenizer
        self.options = options or RerankerOptions()
        self.spec: str | None = None
        self.trained_on: dict = {}

    # -- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_base(cls, name_or_path: str | os.PathLike, options: RerankerOptions | None = None, *, seed: int = 0,
                  device: str | None = None) -> CrossEncoderReranker:
        """A new reranker over a base encoder folder (its scoring head is random), on `device` (default: cuda when there is one)."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..encoders.dense import default_device

        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(str(name_or_path), num_labels=1).to(default_device(device))
        return cls(model.eval(), AutoTokenizer.from_pretrained(str(name_or_path)), options)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, device: str | None = None, **overrides) -> CrossEncoderReranker:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..encoders.dense import default_device

        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.exists():
            raise FileNotFoundError(f"{folder} is not a biosyn reranker folder: {CONFIG_FILE} is missing "
                                    f"(train one with `biosyn rerank train`)")
        saved = json.loads(config_path.read_text())
        options = replace(RerankerOptions.from_dict(saved.get("options", {})), **overrides)
        reranker = cls(AutoModelForSequenceClassification.from_pretrained(str(folder)).to(default_device(device)).eval(),
                       AutoTokenizer.from_pretrained(str(folder)), options)
        reranker.spec = str(folder)
        reranker.trained_on = saved.get("trained_on", {})
        return reranker

    def save_pretrained(self, folder: str | os.PathLike, *, trained_on: dict | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)  # safetensors
        self.tokenizer.save_pretrained(folder)
        if trained_on is not None:
            self.trained_on = trained_on
        with atomic_write(folder / CONFIG_FILE) as out:
            json.dump({"options": asdict(self.options), "trained_on": self.trained_on}, out, indent=2)
        return folder

    # -- scoring -----------------------------------------------------------------------------

    def logits(self, mentions: Sequence[str], candidates: Sequence[str], *, train: bool = False):
        """The cross-encoder's logit for each (mention, candidate text) pair: a torch tensor."""
        import torch

        batch = self.tokenizer(list(mentions), list(candidates), truncation=True, max_length=self.options.max_length,
                               padding=True, return_tensors="pt").to(self.model.device)
        if train:
            return self.model(**batch).logits[:, 0]
        with torch.inference_mode():
            return self.model(**batch).logits[:, 0].float()

    def pair_logits(self, mentions: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Logits of many pairs, in length-sorted batches (little padding), in the input order."""
        order = sorted(range(len(mentions)), key=lambda i: len(mentions[i]) + len(candidates[i]))
        out = np.empty(len(mentions), dtype=np.float32)
        size = self.options.batch_size
        for start in range(0, len(order), size):
            chosen = order[start:start + size]
            out[chosen] = self.logits([mentions[i] for i in chosen], [candidates[i] for i in chosen]).cpu().numpy()
        return out

    def rerank(self, texts: Sequence[str], ranked: Sequence[Sequence[Candidate]], k: int) -> list[list[Candidate]]:
        """Each text's candidates (BioSyn's order, `depth` of them where there are) re-scored and cut to k.

        The residual score goes into `Candidate.rerank`; `score` stays BioSyn's, so that "no match" and the
        annotation threshold mean what they meant without a reranker."""
        render = CandidateText(self.options.candidate_text).render
        depth, gate = self.options.depth, self.options.gate
        unsure = [gate is None or len(cands) < 2 or cands[0].score - cands[1].score < gate for cands in ranked]
        chosen = [(t, cands) for t, cands, u in zip(texts, ranked, unsure) if u]
        mentions = [t for t, cands in chosen for _ in cands[:depth]]
        logits = iter(self.pair_logits(mentions, [render(c) for _, cands in chosen for c in cands[:depth]]))
        out = []
        for cands, u in zip(ranked, unsure):
            if not u:
                out.append(list(cands[:k]))
                continue
            scores = [c.score + float(next(logits)) for c in cands[:depth]]
            head = [replace(c, rerank=s) for c, s in zip(cands, scores)]
            # A stable sort: ties keep BioSyn's order; past `depth` (k > depth) BioSyn's order goes on.
            order = sorted(range(len(head)), key=lambda j: -scores[j])
            out.append(([head[j] for j in order] + list(cands[depth:]))[:k])
        return out
