"""Candidate names per training query: BioSyn's iterative candidate retrieval.

Each query gets `topk` dictionary names: the `n_sparse` best by sparse (TF-IDF) score,
computed once, then the best by dense score not already taken, re-retrieved at the start of
every epoch from a freshly embedded dictionary. A candidate is positive when its ID set holds
every gold ID of the query (set membership on split IDs, never a substring test).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..search.exact import dense_topk, sparse_scores, sparse_topk


def merge_candidates(sparse_idx: np.ndarray, dense_idx: np.ndarray | None, topk: int, n_sparse: int) -> np.ndarray:
    """[n_q, topk] dictionary indices: the first `n_sparse` sparse ones, then dense ones not yet
    taken, then (if the dense list ran out) further sparse ones; no index twice in a row."""
    n_q = sparse_idx.shape[0]
    out = np.empty((n_q, topk), dtype=np.int64)
    for i in range(n_q):
        chosen = list(dict.fromkeys(int(x) for x in sparse_idx[i, :n_sparse]))
        taken = set(chosen)
        for pool in (dense_idx[i] if dense_idx is not None else (), sparse_idx[i, n_sparse:]):
            for x in pool:
                if len(chosen) >= topk:
                    break
                x = int(x)
                if x not in taken:
                    chosen.append(x)
                    taken.add(x)
        if len(chosen) < topk:
            raise ValueError(f"query {i}: only {len(chosen)} distinct candidates for top {topk}; retrieve more")
        out[i] = chosen
    return out


def is_positive(gold: set[str] | frozenset[str], ids) -> bool:
    """A candidate is right for a query when it carries every one of the query's (non-empty) gold IDs."""
    return bool(gold) and gold <= set(ids)


def candidate_labels(gold: Sequence[Sequence[str]], candidates: np.ndarray, dictionary_ids: Sequence[Sequence[str]]) -> np.ndarray:
    """1.0 where candidate j of query i carries every gold ID of query i, else 0.0."""
    id_sets: dict[int, frozenset[str]] = {}
    labels = np.zeros(candidates.shape, dtype=np.float32)
    for i, query_gold in enumerate(gold):
        g = set(query_gold)
        for j, cand in enumerate(candidates[i]):
            c = int(cand)
            if c not in id_sets:
                id_sets[c] = frozenset(dictionary_ids[c])
            labels[i, j] = float(is_positive(g, id_sets[c]))
    return labels


def gold_rows(gold: Sequence[Sequence[str]], dictionary_ids: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """For each query, the dictionary rows that carry every one of its gold IDs."""
    rows_of: dict[str, list[int]] = {}
    for j, ids in enumerate(dictionary_ids):
        for i in ids:
            rows_of.setdefault(i, []).append(j)
    out = []
    for query_gold in gold:
        g = set(query_gold)
        first = rows_of.get(next(iter(g)), []) if g else []
        out.append(np.array([j for j in first if g <= set(dictionary_ids[j])], dtype=np.int64))
    return out


def add_gold_positives(candidates: np.ndarray, labels: np.ndarray, rows: Sequence[np.ndarray],
                       dense_queries: np.ndarray | None, dense_dictionary: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Where no candidate is positive, the last candidate makes way for the query's best gold name
    (highest dense score; the first one without dense vectors). Returns the new candidates and how
    many queries got one; queries whose gold no dictionary name carries stay without."""
    out = candidates.copy()
    added = 0
    for i in map(int, np.flatnonzero(labels.sum(1) == 0)):
        if not len(rows[i]):
            continue
        if dense_queries is None or dense_dictionary is None:
            best = rows[i][0]
        else:
            best = rows[i][int(np.argmax(dense_dictionary[rows[i]] @ dense_queries[i]))]
        out[i, -1] = best
        added += 1
    return out, added


class CandidateRetriever:
    """Holds the sparse half (computed once) and merges in a dense half per epoch."""

    def __init__(self, query_csr, dictionary_csr, *, topk: int = 20, dense_ratio: float = 0.5):
        if not 0 <= dense_ratio <= 1:
            raise ValueError(f"dense_ratio must be in [0, 1], got {dense_ratio}")
        self.topk = topk
        self.n_dense = int(topk * dense_ratio)
        self.n_sparse = topk - self.n_dense
        self.query_csr = query_csr
        self.dictionary_csr = dictionary_csr
        # Enough sparse names to fill in when the dense list overlaps the sparse one.
        self.sparse_idx, _ = sparse_topk(query_csr, dictionary_csr, min(topk, dictionary_csr.shape[0]))

    def candidates(self, dense_queries: np.ndarray | None, dense_dictionary: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(indices [n_q, topk], sparse scores [n_q, topk]) for this epoch."""
        dense_idx = None
        if self.n_dense and dense_queries is not None and dense_dictionary is not None:
            dense_idx, _ = dense_topk(dense_queries, dense_dictionary, self.topk)
        idx = merge_candidates(self.sparse_idx, dense_idx, self.topk, self.n_sparse)
        return idx, self.sparse_scores(idx)

    def sparse_scores(self, candidates: np.ndarray) -> np.ndarray:
        return sparse_scores(self.query_csr, self.dictionary_csr, candidates)
