"""SapBERT-style synonym pre-training (self-alignment) on a vocabulary's synonym sets.

Each step draws `batch_size` distinct concepts with at least two distinct (preprocessed)
names and two names of each, encodes the 2×batch names, and applies the multi-similarity
loss (Wang et al. 2019) on their cosine similarities with SapBERT's in-batch hard mining
(MultiSimilarityMiner, epsilon 0.2): a negative pair counts only when it is more similar
than the anchor's hardest positive minus epsilon, a positive pair only when it is less
similar than the hardest negative plus epsilon. Defaults are SapBERT's
(MultiSimilarityLoss(alpha=1, beta=60, base=0.5), miner epsilon 0.2; SapBERT used UMLS pairs,
batch 512); all are options here. Steps are bounded (`steps`).

Beyond the vocabulary, the training corpus's mentions can join their concepts' synonym sets
(`mentions`); a share of each batch then pairs a mention with a name of its concept, as
SapBERT's task fine-tuning paired mentions with names.

Random batches of 64 out of ~10k concepts hold few confusable concepts, so in-batch mining
finds few hard negatives (SapBERT had batches of 512 out of millions of UMLS names). With
`neighbours` = g, the batch is built of groups of g concepts: a random concept and its g − 1
nearest concepts by the starting model's embeddings (mean of up to three names), so every
anchor meets the concepts the model confuses it with.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.records import Vocabulary
from ..encoders.dense import native_bf16
from ..model.biosyn import BioSyn
from ..preprocess.pipeline import Preprocessor
from .config import PretrainConfig
from .queries import TrainingQuery


def synonym_sets(vocabulary: Vocabulary, preprocessor: Preprocessor | None = None) -> list[list[str]]:
    """The distinct preprocessed names of each concept that has at least two."""
    return [names for names, _ in concept_names(vocabulary, preprocessor, ()) if len(names) >= 2]


def concept_names(vocabulary: Vocabulary, preprocessor: Preprocessor | None,
                   mentions: Sequence[TrainingQuery]) -> list[tuple[list[str], list[str]]]:
    """(distinct preprocessed names, distinct training mentions not among them) per concept."""
    preprocessor = preprocessor or Preprocessor()
    extra: dict[str, list[str]] = {}
    for q in mentions:
        main = vocabulary.resolve(q.gold[0]) if len(q.gold) == 1 else None
        if main is not None:
            extra.setdefault(main, []).append(q.text)
    out = []
    for c in vocabulary:
        names = list(dict.fromkeys(n for n in (preprocessor.name(x) for x in c.names) if n))
        known = set(names)
        out.append((names, [m for m in dict.fromkeys(extra.get(c.id, ())) if m not in known]))
    return out


def multi_similarity_loss(embeddings: torch.Tensor, labels: torch.Tensor, *, alpha: float = 1.0, beta: float = 60.0,
                          base: float = 0.5, epsilon: float = 0.2) -> torch.Tensor:
    """Multi-similarity loss with in-batch hard mining on cosine similarities; 0 when nothing is mined."""
    x = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    sim = x @ x.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=sim.device)
    pos_mask, neg_mask = same & ~eye, ~same
    big = torch.tensor(float("inf"), device=sim.device)
    with torch.no_grad():
        hardest_pos = torch.where(pos_mask, sim, big).min(dim=1).values  # least similar positive
        hardest_neg = torch.where(neg_mask, sim, -big).max(dim=1).values  # most similar negative
        neg_keep = neg_mask & (sim > (hardest_pos[:, None] - epsilon))
        pos_keep = pos_mask & (sim < (hardest_neg[:, None] + epsilon))
    zero = torch.zeros((), device=sim.device)
    pos_term = torch.log1p(torch.where(pos_keep, torch.exp(-alpha * (sim - base)), zero).sum(1)) / alpha
    neg_term = torch.log1p(torch.where(neg_keep, torch.exp(beta * (sim - base)), zero).sum(1)) / beta
    anchors = pos_keep.any(1) | neg_keep.any(1)
    if not anchors.any():
        return sim.sum() * 0.0
    return (pos_term + neg_term)[anchors].mean()


def nearest_sets(encoder, sets: Sequence[Sequence[str]], k: int, *, bf16: bool = True, chunk: int = 2048) -> np.ndarray:
    """[n_sets, k] indices of each synonym set's k nearest other sets, by the cosine of the mean
    embedding of (up to) their first three names, nearest first."""
    names = [n for s in sets for n in s[:3]]
    owner = np.repeat(np.arange(len(sets)), [len(s[:3]) for s in sets])
    vectors = encoder.embed(names, bf16=bf16)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    centres = np.zeros((len(sets), vectors.shape[1]), dtype=np.float32)
    np.add.at(centres, owner, vectors)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True) + 1e-12
    k = min(k, len(sets) - 1)
    out = np.empty((len(sets), k), dtype=np.int64)
    for start in range(0, len(sets), chunk):
        sim = centres[start:start + chunk] @ centres.T
        sim[np.arange(len(sim)), np.arange(start, start + len(sim))] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        out[start:start + len(sim)] = np.take_along_axis(top, order, axis=1)
    return out


class PairSampler:
    """Draws a batch of (name, synonym) pairs of distinct concepts; a `mention_share` of the batch
    pairs a training mention with another name of its concept. After `group_neighbours`, the
    other concepts come in groups: a random one followed by its nearest ones not yet in the batch."""

    def __init__(self, concepts: list[tuple[list[str], list[str]]], batch_size: int, mention_share: float = 0.5):
        self.sets = [names + extra for names, extra in concepts if len(names) + len(extra) >= 2]
        self.with_mentions = [(names, extra) for names, extra in concepts if extra and names]
        if len(self.sets) < 2:
            raise ValueError("pre-training needs at least two concepts with two or more names")
        self.batch = min(batch_size, len(self.sets))
        self.n_mention = min(round(mention_share * self.batch), len(self.with_mentions))
        self.neighbours: np.ndarray | None = None
        self.group = 0

    def group_neighbours(self, neighbours: np.ndarray, group: int) -> None:
        """Draw groups of `group` concepts: `neighbours[i]` lists set i's nearest sets (`nearest_sets`)."""
        if len(neighbours) != len(self.sets):
            raise ValueError(f"{len(neighbours)} rows of neighbours for {len(self.sets)} synonym sets")
        self.neighbours, self.group = neighbours, group

    def _set_indices(self, rng: np.random.Generator, n: int) -> list[int]:
        if self.group <= 1 or self.neighbours is None:
            return [int(c) for c in rng.choice(len(self.sets), size=n, replace=False)]
        chosen: dict[int, None] = {}
        while len(chosen) < n:
            seed = int(rng.integers(len(self.sets)))
            if seed in chosen:
                continue
            group = [seed] + [int(c) for c in self.neighbours[seed] if int(c) not in chosen and int(c) != seed]
            for c in group[:min(self.group, n - len(chosen))]:
                chosen[c] = None
        return list(chosen)

    def draw(self, rng: np.random.Generator) -> tuple[list[str], list[int]]:
        pairs = []
        mention_concepts = rng.choice(len(self.with_mentions), size=self.n_mention, replace=False) if self.n_mention else ()
        for c in mention_concepts:
            names, extra = self.with_mentions[c]
            mention = extra[rng.integers(len(extra))]
            others = [n for n in names + extra if n != mention]
            pairs.append((mention, others[rng.integers(len(others))], names[0]))
        for c in self._set_indices(rng, self.batch - self.n_mention):
            a, b = rng.choice(len(self.sets[c]), size=2, replace=False)
            pairs.append((self.sets[c][a], self.sets[c][b], self.sets[c][0]))
        # The two draws may hit one concept twice: its pairs share a label, so they stay positives.
        label_of: dict[str, int] = {}
        texts, labels = [], []
        for a, b, key in pairs:
            label = label_of.setdefault(key, len(label_of))
            texts += [a, b]
            labels += [label, label]
        return texts, labels


def pretrain(model: BioSyn, vocabulary: Vocabulary, config: PretrainConfig, *, preprocessor: Preprocessor | None = None,
             mentions: Sequence[TrainingQuery] = (), output_dir: str | os.PathLike | None = None, progress: bool = True,
             log_path: str | os.PathLike | None = None) -> dict:
    """Self-aligns `model.encoder` on the vocabulary's synonyms in place; saves it when `output_dir` is given.

    With training `mentions` (single-concept ones; SapBERT's task fine-tuning pairs), a share of
    each batch (`mention_share`) pairs a training mention with another name of its concept."""
    if config.neighbours < 0 or config.neighbours == 1:
        raise ValueError(f"neighbours: 0 (random concepts) or a group size of at least 2, not {config.neighbours}")
    sampler = PairSampler(concept_names(vocabulary, preprocessor, mentions), config.batch_size, config.mention_share)
    encoder = model.encoder
    if config.bf16 is None:
        config = replace(config, bf16=native_bf16(encoder.device))
    encoder.max_length = config.max_length
    neighbour_seconds = 0.0
    if config.neighbours > 1:
        t = time.perf_counter()
        # twice the group size, so a group still fills when some neighbours are already in the batch
        sampler.group_neighbours(nearest_sets(encoder, sampler.sets, 2 * config.neighbours, bf16=bool(config.bf16)), config.neighbours)
        neighbour_seconds = time.perf_counter() - t
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    encoder.model.train()
    losses = []
    started = time.perf_counter()
    log_file = open(log_path, "a", encoding="utf-8") if log_path else contextlib.nullcontext()
    with log_file as log, tqdm(range(config.steps), desc="pretrain", unit="step", disable=not progress) as bar:
        for step in bar:
            texts, labels = sampler.draw(rng)
            with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=bool(config.bf16)):
                emb = encoder.encode(texts)
            loss = multi_similarity_loss(emb, torch.tensor(labels, device=emb.device), alpha=config.alpha, beta=config.beta,
                                         base=config.base, epsilon=config.epsilon)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if log and (step + 1) % 10 == 0:
                log.write(json.dumps({"event": "pretrain_step", "step": step + 1, "loss": round(float(np.mean(losses[-10:])), 6),
                                      "seconds": round(time.perf_counter() - started, 1)}) + "\n")
                log.flush()
    encoder.model.eval()
    model.weights_changed()
    summary = {"config": asdict(config), "synonym_sets": len(sampler.sets), "concepts_with_mentions": len(sampler.with_mentions),
               "first_loss": round(float(np.mean(losses[:20])), 4),
               "last_loss": round(float(np.mean(losses[-20:])), 4), "seconds": round(time.perf_counter() - started, 1),
               **({"neighbour_seconds": round(neighbour_seconds, 1)} if config.neighbours > 1 else {})}
    if output_dir is not None:
        from .model_card import write_model_card

        if model.sparse_encoder is None:
            model.fit_sparse(vocabulary)
        model.save_pretrained(output_dir, extra={"pretraining": summary})
        write_model_card(Path(output_dir), {"pretraining": summary, "stage": "synonym pre-training only (no BioSyn fine-tuning)",
                                            **({"base_model": model.base_model} if model.base_model else {})})
    return summary
