"""Recall and speed of the approximate (FAISS) index against exact search.

    .venv/bin/python benchmarks/ann_recall.py --index DIR --model minilm    # a saved dense index
    .venv/bin/python benchmarks/ann_recall.py --synthetic 1000000           # random unit vectors, 384 wide

With a real index, the queries are the NCBI disease test mentions (BioSyn's preprocessing)
embedded by the model; recall@k is the share of the exact dense top-k that the approximate
search returns, and the hybrid top-1 agreement compares the full hybrid ranking. With
--synthetic, queries are perturbed copies of random rows. Prints build time, query rate and
recall for HNSW and IVF.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from biosyn.search.exact import dense_topk
from biosyn.search.index import NameIndex


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


def run(matrix: np.ndarray, queries: np.ndarray, k: int, index: NameIndex | None = None, model=None, texts=None) -> None:
    started = time.perf_counter()
    exact_idx, _ = dense_topk(queries, matrix, k)
    exact_s = time.perf_counter() - started
    print(json.dumps({"kind": "exact", "names": len(matrix), "queries": len(queries), "queries_per_s": round(len(queries) / exact_s, 1)}))
    holder = index or NameIndex([""] * len(matrix), [()] * len(matrix), None, _empty_sparse(len(matrix)), matrix)
    for kind in ("hnsw", "ivf"):
        started = time.perf_counter()
        faiss_index = holder.add_faiss(kind)
        built = time.perf_counter() - started
        started = time.perf_counter()
        _, approx_idx = faiss_index.search(queries, k)
        searched = time.perf_counter() - started
        row = {"kind": kind, "build_s": round(built, 1), "queries_per_s": round(len(queries) / searched, 1),
               f"recall@{k}": round(recall(approx_idx, exact_idx), 4)}
        if model is not None:
            exact_top = [r[0].name for r in model.rank(texts, k=1)]
            approx_top = [r[0].name for r in model.rank(texts, k=1, approximate=True)]
            row["hybrid_top1_agreement"] = round(float(np.mean([a == b for a, b in zip(exact_top, approx_top)])), 4)
        print(json.dumps(row), flush=True)


def _empty_sparse(n: int):
    import scipy.sparse as sp

    return sp.csr_matrix((n, 1), dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", help="a saved index with dense embeddings")
    parser.add_argument("--model", default="minilm", help="the model the index was built with")
    parser.add_argument("--synthetic", type=int, help="random unit vectors instead of a real index")
    parser.add_argument("-k", type=int, default=20)
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    if args.synthetic:
        rng = np.random.default_rng(0)
        matrix = rng.standard_normal((args.synthetic, 384), dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        queries = matrix[rng.choice(len(matrix), 1000, replace=False)] + 0.05 * rng.standard_normal((1000, 384), dtype=np.float32)
        run(matrix, queries.astype(np.float32), args.k)
        return
    from biosyn.evaluation.protocol import load_benchmark
    from biosyn.interfaces.loading import load_model

    index = NameIndex.load(args.index, mmap=False)
    model = load_model(args.model).use_index(index)
    texts = list(dict.fromkeys(p for q in load_benchmark("ncbi-disease", "test").queries for p in q.parts))
    run(np.asarray(index.dense_matrix), model.embed(texts, queries=True), args.k, index, model, texts)


if __name__ == "__main__":
    main()
