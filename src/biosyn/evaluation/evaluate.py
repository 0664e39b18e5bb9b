"""Running a model over a benchmark: predictions, scores and the predictions file."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..data.atomic import atomic_write
from ..data.records import Candidate, Query
from .metrics import EvaluationResult, evaluate_predictions
from .protocol import Benchmark


@dataclass
class Evaluation:
    result: EvaluationResult
    predictions: list[list[list[Candidate]]]
    seconds: dict

    def report(self, benchmark: Benchmark, **extra) -> dict:
        return {**benchmark.describe(), **self.result.summary(), "seconds": self.seconds, **extra}


def run_evaluation(model, benchmark: Benchmark, *, k: int = 5, mode: str | None = None, approximate: bool = False,
                   ks: Sequence[int] | None = None) -> Evaluation:
    """Ranks every part of every query (each distinct text once) and scores Acc@1..k."""
    started = time.perf_counter()
    texts = list(dict.fromkeys(p for q in benchmark.queries for p in q.parts))
    ranked = dict(zip(texts, model.rank(texts, k, mode=mode, approximate=approximate)))
    predictions = [[ranked[p] for p in q.parts] for q in benchmark.queries]
    searched = time.perf_counter() - started
    resolve = benchmark.vocabulary.resolve
    result = evaluate_predictions(benchmark.queries, predictions, ks or range(1, k + 1), resolve)
    return Evaluation(result, predictions, {"rank": round(searched, 3)})


def write_predictions(path: str | os.PathLike, queries: Sequence[Query], evaluation: Evaluation) -> None:
    """One JSON object per query: the mention, its parts, gold IDs, candidates and ranks."""
    with atomic_write(path) as out:
        for q, per_part, rank, strict in zip(queries, evaluation.predictions, evaluation.result.ranks, evaluation.result.strict_ranks):
            out.write(json.dumps({
                "pmid": q.pmid, "start": q.start, "end": q.end, "type": q.type, "mention": q.text,
                "parts": list(q.parts), "gold": list(q.gold), "rank": rank, "strict_rank": strict,
                "candidates": [[{"name": c.name, "ids": list(c.ids), "score": round(c.score, 6),
                                 "dense": None if c.dense is None else round(c.dense, 6),
                                 "sparse": None if c.sparse is None else round(c.sparse, 6),
                                 "correct": not set(c.ids).isdisjoint(q.gold)} for c in cands] for cands in per_part],
            }, ensure_ascii=False) + "\n")
