"""Fine-tuning the disease tagger: BIO labels on whole documents, read through the same windows as
inference, AdamW with linear warm-up and decay, the best epoch on dev kept.

Every mention type of the corpus is one entity (Disease), as in the NER literature on NCBI disease.

With a `teacher` (a trained tagger with the same tokenizer, usually a larger one), the loss mixes the
gold labels' cross-entropy with the teacher's tag distributions (knowledge distillation, Hinton et al.
2015): `(1 - distill) * CE + distill * T^2 * KL(teacher_T || student_T)` over the labelled tokens.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.records import Document
from ..ner.labels import BEGIN, IGNORE, INSIDE, OUTSIDE
from ..ner.tagger import DiseaseTagger
from ..ner.windows import TokenizedText, tokenize, windows
from .config import TaggerTrainingConfig
from .optimization import adamw, optimizer_step, warmup_linear

log = logging.getLogger(__name__)


def word_labels(tokenized: TokenizedText, doc: Document) -> list[int]:
    """BIO label of each word: the first word a mention overlaps is B, the rest I."""
    labels = [OUTSIDE] * len(tokenized.words)
    for m in sorted(doc.mentions, key=lambda m: (m.start, m.end)):
        first = True
        for i, (ws, we) in enumerate(tokenized.words):
            if ws < m.end and m.start < we and labels[i] == OUTSIDE:
                labels[i] = BEGIN if first else INSIDE
                first = False
    return labels


def training_windows(tagger: DiseaseTagger, docs: Sequence[Document]) -> list[tuple[list[int], list[int]]]:
    """(input ids with [CLS]/[SEP], labels) per window; only a word's first sub-token is labelled."""
    tok = tagger.tokenizer
    out = []
    for doc in docs:
        tokenized = tokenize(tok, doc.text)
        token_labels = [IGNORE] * len(tokenized)
        for first, label in zip(tokenized.first_token, word_labels(tokenized, doc)):
            token_labels[first] = label
        for s, e, _, _ in windows(len(tokenized), tagger.options.body, tagger.options.overlap):
            if e > s:
                out.append(([tok.cls_token_id, *tokenized.input_ids[s:e], tok.sep_token_id],
                            [IGNORE, *token_labels[s:e], IGNORE]))
    return out


def _batch(examples, pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        ids[row, :len(x)] = torch.tensor(x)
        labels[row, :len(y)] = torch.tensor(y)
        mask[row, :len(x)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _length_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of windows of similar length (little padding), in random order; ties broken at random."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      distill: float, temperature: float) -> torch.Tensor:
    """Cross-entropy on the gold labels mixed with the KL divergence from the teacher's softened tag
    distribution, both over the labelled tokens (a word's first sub-token)."""
    import torch.nn.functional as F

    labelled = labels != IGNORE
    student, teacher = student_logits[labelled].float(), teacher_logits[labelled].float()
    gold = F.cross_entropy(student, labels[labelled])
    soft = F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                    log_target=True, reduction="batchmean") * temperature ** 2
    return (1 - distill) * gold + distill * soft


def train_tagger(tagger: DiseaseTagger, train_docs: Sequence[Document], config: TaggerTrainingConfig, *,
                 evaluate: Callable[[DiseaseTagger], float] | None = None, progress: bool = True,
                 teacher: DiseaseTagger | None = None) -> dict:
    """Trains `tagger` in place. With `evaluate` (a dev score, higher is better) the best epoch's
    weights are kept; with `teacher`, its tag distributions are distilled (module docstring).
    Returns the training record (losses, dev scores, seconds)."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    examples = training_windows(tagger, train_docs)
    model = tagger.model
    optimizer = adamw(model, config.lr, config.weight_decay)
    steps_per_epoch = (len(examples) + config.batch_size - 1) // config.batch_size
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_linear(step, total, config.warmup))
    epochs: list[dict] = []
    record: dict = {"config": asdict(config), "windows": len(examples), "documents": len(train_docs), "epochs": epochs}
    if teacher is not None:
        teacher.model.eval()
        record["teacher"] = teacher.spec or str(teacher.model.name_or_path) or "(in memory)"
    best_score, best_state, best_epoch = -1.0, None, 0
    started = time.perf_counter()
    rng = random.Random(config.seed)
    for epoch in range(1, config.epochs + 1):
        model.train()
        batches = _length_batches([len(x) for x, _ in examples], config.batch_size, rng)
        losses = []
        epoch_start = time.perf_counter()
        with tqdm(total=steps_per_epoch, unit="steps", desc=f"epoch {epoch}/{config.epochs}", disable=not progress) as bar:
            for indices in batches:
                batch = _batch([examples[i] for i in indices], tagger.tokenizer.pad_token_id, tagger.device)
                if teacher is None:
                    loss = model(**batch).loss
                else:
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    with torch.no_grad():
                        teacher_logits = teacher.model(**inputs).logits
                    loss = distillation_loss(model(**inputs).logits, teacher_logits, batch["labels"], config.distill, config.temperature)
                losses.append(optimizer_step(loss, model, optimizer, scheduler))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        entry = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "seconds": round(time.perf_counter() - epoch_start, 1)}
        if evaluate is not None:
            model.eval()
            entry["dev"] = round(float(evaluate(tagger)), 4)
            if entry["dev"] > best_score:
                best_score, best_state, best_epoch = entry["dev"], copy.deepcopy(model.state_dict()), epoch
        epochs.append(entry)
        log.info("tagger epoch %s: %s", epoch, entry)
        if progress:
            tqdm.write(f"epoch {epoch}: {entry}")
    if best_state is not None:
        model.load_state_dict(best_state)
        record["best_epoch"] = best_epoch
        record["best_dev"] = best_score
    model.eval()
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record
