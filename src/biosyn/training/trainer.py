"""BioSyn training: synonym marginalisation over iteratively retrieved candidates.

Per epoch: embed the dictionary (and the queries) with the current encoder, retrieve each
query's dense top names and merge them with its fixed sparse top names (`candidates.py`),
then for each batch encode the query and its candidates with gradients, score them
(dense similarity + learnable sparse weight × sparse score) and minimise the marginal
negative log-likelihood of the positives (`loss.py`). AdamW, weight decay 0.01 on the
encoder; the sparse weight is one scalar with its own learning rate and no decay.

Speed (same mathematics): every distinct name of a batch is encoded once (a query's name is
often one of its candidates, and candidates repeat across queries), batches are padded to
their longest member only, and bf16 autocast is optional. With dropout on (train mode, as
BioSyn), a name shared by two rows gets one dropout sample instead of two. The dictionary
embedding made for the dev evaluation at the end of an epoch is reused for the next epoch's
retrieval, so each epoch embeds the names once.

After every epoch the model folder (`<output>/model`) and the trainer state
(`<output>/trainer_state`: optimizer tensors as safetensors, the rest JSON) are replaced
(`checkpoints.py`); `load_state()` continues from the last finished epoch. Each epoch's shuffle and dropout are
seeded from (seed, epoch), so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.records import Dictionary, Vocabulary
from ..encoders.dense import native_bf16
from ..model.biosyn import BioSyn
from ..search.scoring import hybrid
from .candidates import CandidateRetriever, add_gold_positives, candidate_labels, gold_rows
from .checkpoints import MODEL_DIR, Checkpoints, TrainerState
from .config import TrainConfig
from .loss import marginal_nll
from .optimization import warmup_linear
from .plot import PLOT_FILE, plot_history
from .progress import TrainingLog
from .queries import TrainingQuery

__all__ = ["MODEL_DIR", "TrainConfig", "Trainer", "TrainerState"]


class Trainer:
    def __init__(self, model: BioSyn, queries: Sequence[TrainingQuery], dictionary: Dictionary, vocabulary: Vocabulary,
                 config: TrainConfig, output_dir: str | os.PathLike, *, dev=None, progress: bool = True,
                 card: dict | None = None):
        if model.encoder is None:
            raise ValueError("training needs a dense encoder")
        if not queries:
            raise ValueError("no training queries left after filtering")
        if config.bf16 is None:
            config = replace(config, bf16=native_bf16(model.encoder.device))
        self.model, self.config, self.dev = model, config, dev
        self.queries = list(queries)
        self.dictionary, self.vocabulary = dictionary, vocabulary
        self.output = Path(output_dir)
        self.progress = progress
        self.checkpoints = Checkpoints(self.output, card)
        self.log = TrainingLog(self.output, echo=progress)
        self.state = TrainerState()
        torch.manual_seed(config.seed)
        model.configure(max_length=config.max_length)
        model.configure_embedding(batch_size=config.embed_batch_size, bf16=config.bf16)
        self.names = dictionary.names
        self.ids = dictionary.ids
        sparse = model.sparse_encoder or model.fit_sparse(vocabulary)
        self.retriever = CandidateRetriever(sparse.transform([q.text for q in self.queries]), sparse.transform(self.names),
                                            topk=config.topk, dense_ratio=config.dense_ratio)
        self.device = model.encoder.device
        self.sparse_weight = torch.nn.Parameter(torch.tensor(float(config.sparse_weight_init), device=self.device))
        model.sparse_weight = float(config.sparse_weight_init)
        self.optimizer = torch.optim.AdamW([
            {"params": [p for p in model.encoder.model.parameters() if p.requires_grad],
             "lr": config.lr, "weight_decay": config.weight_decay},
            {"params": [self.sparse_weight], "lr": config.sparse_lr, "weight_decay": 0.0},
        ])
        self._gold_rows: list[np.ndarray] | None = None
        self.without_positive = 0
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self._cache: tuple[int, dict[str, int], np.ndarray] | None = None  # (step, name -> row, raw vectors)

    def steps_per_epoch(self) -> int:
        n = math.ceil(len(self.queries) / self.config.batch_size)
        return n if self.config.max_steps is None else min(n, self.config.max_steps)

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rates at optimiser step `step` (0-based); a function of the
        step alone, so a resumed run follows the same schedule without storing scheduler state."""
        cfg = self.config
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule != "linear":
            raise ValueError(f"unknown schedule {cfg.schedule!r}; choose constant or linear")
        return warmup_linear(step, cfg.epochs * self.steps_per_epoch(), cfg.warmup)

    # -- embeddings ------------------------------------------------------------------------

    def _raw_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Raw pooled vectors of `texts` for the current weights, reusing this step's cache."""
        rows: dict[str, int] = {}
        matrix: np.ndarray | None = None
        if self._cache is not None and self._cache[0] == self.state.step:
            _, rows, matrix = self._cache
        missing = [t for t in dict.fromkeys(texts) if t not in rows]
        if missing:
            enc = self.model.encoder
            new = enc.embed(missing, batch_size=self.config.embed_batch_size, bf16=self.config.bf16, progress=self.progress)
            start = 0 if matrix is None else matrix.shape[0]
            matrix = new if matrix is None else np.vstack([matrix, new])
            rows = {**rows, **{t: start + i for i, t in enumerate(missing)}}
            self._cache = (self.state.step, rows, matrix)
        assert matrix is not None  # texts is not empty
        return matrix[[rows[t] for t in texts]]

    # -- one step --------------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> torch.Tensor:
        enc = self.model.encoder
        if self.config.fast:
            return enc.encode(texts, bucket_size=self.config.bucket_size)
        # BioSyn's way: every sequence padded to max_length.
        batch = enc.tokenizer(texts, padding="max_length", truncation=True, max_length=enc.max_length,
                              return_tensors="pt").to(enc.device)
        return enc.pool(enc.model(**batch).last_hidden_state, batch["attention_mask"])

    def batch_scores(self, query_texts: list[str], candidate_names: list[list[str]], sparse: torch.Tensor) -> torch.Tensor:
        """Hybrid scores [B, K] with gradients."""
        flat = [n for row in candidate_names for n in row]
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(self.config.bf16))
        with autocast:
            if self.config.fast:
                unique = list(dict.fromkeys(query_texts + flat))
                pos = {t: i for i, t in enumerate(unique)}
                emb = self._encode(unique).float()
                q = emb[[pos[t] for t in query_texts]]
                c = emb[[pos[t] for t in flat]]
            else:
                q = self._encode(query_texts).float()
                c = self._encode(flat).float()
        c = c.view(len(query_texts), -1, c.shape[-1])
        return hybrid(self.model.scorer.dense_torch(q, c), sparse, self.sparse_weight)

    def step(self, batch: np.ndarray, candidates: np.ndarray, sparse: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        scores = self.batch_scores([self.queries[i].text for i in batch],
                                   [[self.names[j] for j in candidates[i]] for i in batch],
                                   torch.from_numpy(sparse[batch]).to(self.device))
        loss, n = marginal_nll(scores, torch.from_numpy(labels[batch]).to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        factor = self.lr_factor(self.state.step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        if n:
            loss.backward()
            self.optimizer.step()
        self.state.step += 1
        return float(loss.detach()), n

    # -- epochs ----------------------------------------------------------------------------

    def retrieve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.model.encoder.model.eval()
        dense_q = dense_d = None
        if self.retriever.n_dense:
            dense_d = self.model.scorer.vectors(self._raw_vectors(self.names))
            dense_q = self.model.scorer.vectors(self._raw_vectors([q.text for q in self.queries]), queries=True)
        cand, sparse = self.retriever.candidates(dense_q, dense_d)
        gold = [q.gold for q in self.queries]
        labels = candidate_labels(gold, cand, self.ids)
        self.without_positive = int((labels.sum(1) == 0).sum())
        if self.config.add_gold:
            if self._gold_rows is None:
                self._gold_rows = gold_rows(gold, self.ids)
            cand, _ = add_gold_positives(cand, labels, self._gold_rows, dense_q, dense_d)
            sparse = self.retriever.sparse_scores(cand)
            labels = candidate_labels(gold, cand, self.ids)
        return cand, sparse, labels

    def train(self, command: str | None = None) -> TrainerState:
        cfg = self.config
        self.output.mkdir(parents=True, exist_ok=True)
        while self.state.epoch < cfg.epochs:
            epoch = self.state.epoch + 1
            t0 = time.perf_counter()
            cand, sparse, labels = self.retrieve()
            t_retrieve = time.perf_counter() - t0
            no_positive = self.without_positive  # before gold names were added
            rng = np.random.default_rng([cfg.seed, epoch])
            torch.manual_seed(cfg.seed * 1000 + epoch)
            order = rng.permutation(len(self.queries))
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            if cfg.max_steps is not None:
                batches = batches[:cfg.max_steps]
            self.model.encoder.model.train()
            losses, used = [], 0
            t1 = time.perf_counter()
            with tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", disable=not self.progress) as bar:
                for b, batch in enumerate(bar):
                    loss, n = self.step(batch, cand, sparse, labels)
                    used += n
                    if n:
                        losses.append(loss)
                    rate = (b + 1) * cfg.batch_size / (time.perf_counter() - t1)
                    bar.set_postfix(loss=f"{loss:.4f}", w=f"{float(self.sparse_weight.detach()):.3f}", q_s=f"{rate:.1f}")
                    if cfg.log_every and (b + 1) % cfg.log_every == 0:
                        self.log.write({"event": "step", "epoch": epoch, "step": self.state.step, "loss": round(loss, 6),
                                   "sparse_weight": round(float(self.sparse_weight.detach()), 6),
                                   "seconds": round(time.perf_counter() - t1, 2)})
            t_train = time.perf_counter() - t1
            self.model.encoder.model.eval()
            self.model.sparse_weight = float(self.sparse_weight.detach())
            self.model.weights_changed()
            seconds = {"retrieve": round(t_retrieve, 1), "train": round(t_train, 1),
                       "per_step": round(t_train / max(len(batches), 1), 3)}
            record = {"epoch": epoch, "step": self.state.step, "loss": round(float(np.mean(losses)), 6) if losses else None,
                      "queries_with_positive": used, "queries_without_positive": no_positive,
                      "sparse_weight": round(self.model.sparse_weight, 6),
                      "seconds": seconds}
            if self.dev is not None:
                t2 = time.perf_counter()
                record["dev"] = self.evaluate(self.dev)
                seconds["dev"] = round(time.perf_counter() - t2, 1)
            self.state.epoch = epoch
            self.state.history.append(record)
            t3 = time.perf_counter()
            self.save(command)
            seconds["save"] = round(time.perf_counter() - t3, 1)
            self.log.epoch(record)
            self.plot()
        return self.state

    def evaluate(self, benchmark, *, k: int = 5) -> dict:
        """Acc@1..k on a benchmark with the current weights (the dictionary embedding is cached)."""
        from ..evaluation.evaluate import run_evaluation
        from ..search.index import NameIndex

        model = self.model
        model.encoder.model.eval()
        bf16 = self.config.bf16 if self.config.eval_bf16 is None else self.config.eval_bf16
        # The dev index and precision are borrowed for this evaluation only, whatever happens in it.
        index, options = model.index, model.embed_options
        try:
            model.configure_embedding(bf16=bf16)
            if bf16 == self.config.bf16:
                matrix = model.scorer.vectors(self._raw_vectors(benchmark.dictionary.names))
            else:
                matrix = model.embed(benchmark.dictionary.names, progress=self.progress)
            model.index = NameIndex.build(benchmark.dictionary, model.sparse_encoder, matrix, list(benchmark.vocabulary),
                                          {"model_fingerprint": model.fingerprint, "similarity": model.similarity})
            evaluation = run_evaluation(model, benchmark, k=k, mode="hybrid")
        finally:
            model.index = index
            model.configure_embedding(batch_size=options.batch_size, bf16=options.bf16)
        return {"benchmark": benchmark.name, **evaluation.result.summary()}

    # -- checkpoints (`checkpoints.py`), log (`progress.py`) and plot (`plot.py`) -----------------

    def save(self, command: str | None = None) -> Path:
        return self.checkpoints.save(self.model, self.optimizer, self.sparse_weight, self.state, asdict(self.config),
                                     self.training_record(command), command)

    def training_record(self, command: str | None = None) -> dict:
        """What a saved model folder and its card record about this training."""
        return {"config": asdict(self.config), "epochs_done": self.state.epoch, "history": self.state.history,
                "command": command, "queries": len(self.queries)}

    def load_state(self, directory: str | os.PathLike | None = None) -> None:
        """Restores the optimizer, sparse weight and counters saved by `save` (the model is loaded by the caller)."""
        self.state = self.checkpoints.load(self.model, self.optimizer, self.sparse_weight, directory)
        self.model.sparse_weight = float(self.sparse_weight.detach())

    def plot(self, path: str | os.PathLike | None = None) -> Path:
        return plot_history(self.state.history, path or self.output / PLOT_FILE)
