"""Training the cross-encoder reranker (`biosyn.model.rerank`) on the BioSyn model's own candidates.

Each training query is ranked by the BioSyn model (its index must be built); its `depth` best
candidates are the list, and the wrong ones among them are the hard negatives. The loss is
BioSyn's synonym marginalisation over the list (`loss.marginal_nll`), on the residual score
BioSyn score + cross-encoder logit, so the cross-encoder learns what BioSyn gets wrong. A list
without a positive, or with nothing but positives, teaches nothing and is counted, not used.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..data.records import Candidate
from ..model.biosyn import BioSyn
from ..model.rerank import CandidateText, CrossEncoderReranker
from .candidates import is_positive
from .config import RerankTrainingConfig
from .loss import marginal_nll
from .optimization import adamw, optimizer_step, warmup_linear
from .queries import TrainingQuery


@dataclass
class TrainingList:
    text: str
    candidates: list[Candidate]
    labels: list[bool]


def training_lists(model: BioSyn, queries: Sequence[TrainingQuery], depth: int) -> tuple[list[TrainingList], dict]:
    """The BioSyn model's top `depth` for each query, labelled; and how many lists were left out and why."""
    ranked = model.rank([q.text for q in queries], depth, rerank=False)  # the lists are BioSyn's own ranking
    lists, counts = [], {"queries": len(queries), "no_positive": 0, "only_positives": 0}
    for query, candidates in zip(queries, ranked):
        gold = set(query.gold)
        labels = [is_positive(gold, c.ids) for c in candidates]
        if not any(labels):
            counts["no_positive"] += 1
        elif all(labels):
            counts["only_positives"] += 1
        else:
            lists.append(TrainingList(query.text, candidates, labels))
    counts["lists"] = len(lists)
    return lists, counts


def train_reranker(reranker: CrossEncoderReranker, model: BioSyn, queries: Sequence[TrainingQuery], config: RerankTrainingConfig, *,
                   progress: bool = True) -> dict:
    """Trains `reranker` in place on `model`'s candidates for `queries`; returns the training record."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    started = time.perf_counter()
    lists, counts = training_lists(model, queries, reranker.options.depth)
    if not lists:
        raise ValueError(f"no training list with both a positive and a negative candidate ({counts})")
    listed = time.perf_counter() - started
    render = CandidateText(reranker.options.candidate_text).render
    steps_per_epoch = -(-len(lists) // config.batch_size)
    if config.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    total = steps_per_epoch * config.epochs
    optimizer = adamw(reranker.model, config.lr, config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_linear(step, total, config.warmup))
    rng = random.Random(config.seed)
    epochs = []
    reranker.model.train()
    for epoch in range(1, config.epochs + 1):
        order = list(range(len(lists)))
        rng.shuffle(order)
        losses: list[float] = []
        epoch_start = time.perf_counter()
        with tqdm(total=steps_per_epoch, unit="steps", desc=f"rerank epoch {epoch}/{config.epochs}", disable=not progress) as bar:
            for step in range(steps_per_epoch):
                batch = [lists[i] for i in order[step * config.batch_size:(step + 1) * config.batch_size]]
                width = max(len(item.candidates) for item in batch)
                logits = reranker.logits([item.text for item in batch for _ in item.candidates],
                                         [render(c) for item in batch for c in item.candidates], train=True)
                # Lists shorter than the widest are padded with -inf scores (no probability, no gradient).
                scores = torch.full((len(batch), width), float("-inf"), device=logits.device)
                labels = torch.zeros((len(batch), width), device=logits.device)
                offset = 0
                for row, item in enumerate(batch):
                    n = len(item.candidates)
                    base = torch.tensor([c.score for c in item.candidates], device=logits.device)
                    scores[row, :n] = base + logits[offset:offset + n]
                    labels[row, :n] = torch.tensor(item.labels, dtype=torch.float32)
                    offset += n
                loss, _ = marginal_nll(scores, labels)
                losses.append(optimizer_step(loss, reranker.model, optimizer, scheduler))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        epochs.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "seconds": round(time.perf_counter() - epoch_start, 1)})
    reranker.model.eval()
    return {"config": asdict(config), "options": asdict(reranker.options), "lists": counts, "epochs": epochs,
            "seconds": {"candidates": round(listed, 1), "total": round(time.perf_counter() - started, 1)}}


def save_reranker(reranker: CrossEncoderReranker, folder: str | os.PathLike, record: dict) -> None:
    """The trained reranker, its training record and its card, written as one folder (whole or absent)."""
    from ..data.atomic import atomic_dir
    from .rerank_card import write_reranker_card

    with atomic_dir(folder) as tmp:
        reranker.save_pretrained(tmp, trained_on=record)
        write_reranker_card(tmp, record)
