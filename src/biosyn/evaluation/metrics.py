"""Acc@k under BioSyn's protocol, and a strict variant.

BioSyn's rule (lenient): every part of a composite mention is ranked on its own; a candidate is
right when its ID set intersects the query's gold set; a query counts at k when every part
has a right candidate within its top k.

Strict: a candidate is right only when it names exactly one concept and that concept is the
part's gold concept (parts and gold IDs are aligned by position when their counts match,
otherwise any gold concept will do but together the parts must cover all of them). Names
shared by several concepts therefore never count, as in BELB's strict scoring. Alternative IDs
are resolved to main concepts first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..data.records import Candidate, Query

Resolver = Callable[[str], str | None]


def lenient_hit(candidate_ids: Sequence[str], gold: Sequence[str]) -> bool:
    return not set(candidate_ids).isdisjoint(gold)


def first_hit_rank(candidates: Sequence[Candidate], hit: Callable[[Candidate], bool]) -> int | None:
    """1-based rank of the first right candidate, or None."""
    return next((rank for rank, c in enumerate(candidates, start=1) if hit(c)), None)


def query_rank_lenient(query: Query, per_part: Sequence[Sequence[Candidate]]) -> int | None:
    """The smallest k at which the query counts as right under BioSyn's rule, or None."""
    ranks = [first_hit_rank(cands, lambda c: lenient_hit(c.ids, query.gold)) for cands in per_part]
    return _worst(ranks)


def _worst(ranks: Sequence[int | None]) -> int | None:
    """The largest rank, or None when there is none or a part has no hit."""
    hits = [r for r in ranks if r is not None]
    return max(hits) if hits and len(hits) == len(ranks) else None


def query_rank_strict(query: Query, per_part: Sequence[Sequence[Candidate]], resolve: Resolver | None = None) -> int | None:
    resolve = resolve or (lambda i: i)
    gold = [resolve(g) or g for g in query.gold]

    def concepts(c: Candidate) -> set[str]:
        return {resolve(i) or i for i in c.ids}

    if len(per_part) == len(gold):
        def is_only(g: str) -> Callable[[Candidate], bool]:
            return lambda c: concepts(c) == {g}

        return _worst([first_hit_rank(cands, is_only(g)) for cands, g in zip(per_part, gold)])
    # Unaligned: each part must hit a single gold concept; together they must cover every gold.
    worst, covered = 0, set()
    for cands in per_part:
        rank = first_hit_rank(cands, lambda c: len(concepts(c)) == 1 and concepts(c) <= set(gold))
        if rank is None:
            return None
        worst = max(worst, rank)
        covered |= concepts(cands[rank - 1])
    return worst if covered == set(gold) else None


@dataclass
class EvaluationResult:
    n_queries: int
    ks: tuple[int, ...]
    accuracy: dict[int, float]
    strict_accuracy: dict[int, float]
    by_type: dict[str, dict] = field(default_factory=dict)
    ranks: list[int | None] = field(default_factory=list)
    strict_ranks: list[int | None] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "queries": self.n_queries,
            "acc": {f"acc@{k}": round(100 * v, 2) for k, v in self.accuracy.items()},
            "strict": {f"acc@{k}": round(100 * v, 2) for k, v in self.strict_accuracy.items()},
            "by_type": self.by_type,
        }


def _accuracy(ranks: Sequence[int | None], ks: Sequence[int]) -> dict[int, float]:
    n = len(ranks) or 1
    return {k: sum(1 for r in ranks if r is not None and r <= k) / n for k in ks}


def evaluate_predictions(
    queries: Sequence[Query],
    predictions: Sequence[Sequence[Sequence[Candidate]]],
    ks: Sequence[int] = (1, 5),
    resolve: Resolver | None = None,
) -> EvaluationResult:
    """`predictions[i][p]` is the ranked candidate list of part p of query i."""
    if len(queries) != len(predictions):
        raise ValueError(f"{len(queries)} queries but {len(predictions)} predictions")
    ks = tuple(sorted(set(ks)))
    ranks = [query_rank_lenient(q, p) for q, p in zip(queries, predictions)]
    strict = [query_rank_strict(q, p, resolve) for q, p in zip(queries, predictions)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        groups[q.type or "?"].append(i)
    by_type = {
        t: {"queries": len(ix), **{f"acc@{k}": round(100 * v, 2) for k, v in _accuracy([ranks[i] for i in ix], ks).items()}}
        for t, ix in sorted(groups.items())
    }
    return EvaluationResult(len(queries), ks, _accuracy(ranks, ks), _accuracy(strict, ks), by_type, ranks, strict)
