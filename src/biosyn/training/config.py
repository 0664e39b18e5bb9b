"""The training recipes' settings, one dataclass a trainer, free of torch: the CLI takes its
defaults from here, and building its parser must not import torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    epochs: int = 2
    batch_size: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.01
    sparse_lr: float = 0.01
    sparse_weight_init: float = 0.0
    topk: int = 20
    dense_ratio: float = 0.5
    add_gold: bool = False  # beyond BioSyn: a query with no positive candidate gets its best gold name
    max_length: int = 25
    seed: int = 0
    schedule: str = "constant"  # or "linear": warm-up then linear decay to 0 over all epochs
    warmup: float = 0.0  # fraction of all steps spent warming up (linear schedule)
    bf16: bool | None = None  # bf16 autocast; None: where the device computes bf16 natively (`encoders.dense.native_bf16`)
    fast: bool = True  # False: BioSyn's way (every sequence encoded, padded to max_length)
    embed_batch_size: int = 256
    bucket_size: int = 64  # names per length bucket within a step
    eval_bf16: bool | None = None  # None: as bf16 (then the dev dictionary embedding is reused for retrieval)
    log_every: int = 10
    max_steps: int | None = None  # per epoch, for probes and tests


@dataclass
class PretrainConfig:
    steps: int = 150
    batch_size: int = 64  # concepts per step (2 names each)
    lr: float = 2e-5
    weight_decay: float = 0.01
    alpha: float = 1.0
    beta: float = 60.0
    base: float = 0.5
    epsilon: float = 0.2
    max_length: int = 25
    bf16: bool | None = None  # as TrainConfig.bf16
    seed: int = 0
    mention_share: float = 0.5  # with training mentions: share of each batch whose pair is (mention, other name)
    neighbours: int = 0  # >= 2: batches made of groups of this many nearby concepts; 0: random concepts


@dataclass
class RerankTrainingConfig:
    epochs: int = 1
    lr: float = 3e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    batch_size: int = 8  # queries per step, each with its `depth` candidates
    seed: int = 0
    max_steps: int | None = None  # per epoch (probes and tests)


@dataclass
class TaggerTrainingConfig:
    epochs: int = 6  # the shipped tagger's recipe (docs/tagger.md, e2), as `biosyn tagger train` defaults
    lr: float = 1e-4
    batch_size: int = 16
    warmup: float = 0.1  # share of all steps spent warming up
    weight_decay: float = 0.01
    seed: int = 0
    distill: float = 0.5  # with a teacher: the weight of its soft labels against the gold ones
    temperature: float = 2.0  # with a teacher: the softmax temperature of both distributions
