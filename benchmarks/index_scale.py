"""Search at scale: a 1M- or 4M-name index (float16 rows, IVF-PQ, sparse postings) against exact search.

    BIOSYN_DATA_DIR=/work/shared/data nice -n 10 .venv/bin/python benchmarks/index_scale.py --names 1000000 \
        --folder runs/scale-1m --output runs/scale-1m.json

Names (the sparse side): the MEDIC 2012 and CTD names as the dictionary preprocesses them, plus
generated variants until there are --names distinct ones: half are one or two character edits
(substitution, deletion, insertion, transposition) of a real name, half recombine the first words
of one real name with the last words of another; a variant carries its first source's IDs.

Dense side: embedding millions of names on 2 cores is not possible, so the rows are random unit
vectors (384 wide, MiniLM's width) with the structure of a trained synonym encoder: the sum of
a random unit vector per concept (the name's first ID), a fixed random Gaussian projection of
the name's char n-gram TF-IDF vector less the real names' mean one, normalised (similar strings
lie near each other; without centring all rows crowd into one narrow cone), and
0.3 × a random unit vector of its own, normalised. I.i.d. random vectors have no neighbours worth
the name (all but a query's twin at the same noise-level similarity), which no ANN index finds.

Queries: the distinct NCBI disease test mentions (preprocessed like the names), their dense
vector made the same way (their gold concept's vector, none when it is not in the vocabulary;
fresh noise). The sparse weight is the packaged MiniLM's.

The build runs in this process; the search runs in a fresh child process, so that its memory
figures are those of loading and searching the saved index (memory-mapped). Latencies are one
query at a time, without the query's dense embedding (a model's cost, not the index's).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from biosyn.data.locate import CORPORA, data_file
from biosyn.data.pubtator import read_pubtator
from biosyn.data.records import Dictionary
from biosyn.data.vocabularies import load_vocabulary
from biosyn.encoders.sparse import SparseEncoder
from biosyn.model.presets import MINILM
from biosyn.preprocess.pipeline import Preprocessor, build_dictionary
from biosyn.search.index import NameIndex

WIDTH, NOISE, K, PART = 384, 0.3, 20, 250_000
REAL_CAP = 200_000  # more than MEDIC + CTD's names: every real name's concept gets a centre
LETTERS = "abcdefghijklmnopqrstuvwxyz "


def names_with_variants(n: int, seed: int = 0) -> tuple[list[str], list[tuple[str, ...]], int]:
    """(names, their IDs, how many are real): MEDIC + CTD names, then generated variants."""
    dictionary = Dictionary()
    for vocabulary in ("medic-2012", "ctd"):
        built = build_dictionary(load_vocabulary(vocabulary), Preprocessor())
        for name, ids in zip(built.names, built.ids):
            dictionary.add(name, ids)
    names, ids = dictionary.names[:n], dictionary.ids[:n]
    real = len(names)
    seen = set(names)
    rng = random.Random(seed)
    while len(names) < n:
        source = rng.randrange(real)
        name = names[source]
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 2) if len(name) > 2 else 0):
                at, op = rng.randrange(len(name)), rng.randrange(4)
                char = rng.choice(LETTERS)
                name = (name[:at] + char + name[at + 1:] if op == 0 else name[:at] + name[at + 1:] if op == 1
                        else name[:at] + char + name[at:] if op == 2 else name[:at] + name[at + 1:at + 2] + name[at:at + 1] + name[at + 2:])
            name = " ".join(name.split())
        else:
            head, tail = name.split(), names[rng.randrange(real)].split()
            name = " ".join(head[: max(1, len(head) // 2)] + tail[len(tail) // 2:])
        if name and name not in seen:
            seen.add(name)
            names.append(name)
            ids.append(ids[source])
    return names, ids, real


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def structured_vectors(tfidf, concepts: np.ndarray, centres: np.ndarray, projection: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """Unit rows: concept centre (row -1: none) + normalised TF-IDF projection + NOISE × random unit."""
    noise = unit(rng.standard_normal((tfidf.shape[0], WIDTH), dtype=np.float32))
    centre = np.where((concepts >= 0)[:, None], centres[np.maximum(concepts, 0)], 0)
    lexical = unit(np.asarray(tfidf @ projection[:-1], dtype=np.float32) - projection[-1])
    return unit(centre + lexical + NOISE * noise).astype(np.float32)


def concept_numbers(ids: list[tuple[str, ...]]) -> dict[str, int]:
    """Every ID (main or alternative) to the number of its name's main (first) ID."""
    mains = {row[0]: None for row in ids}
    number = {main: i for i, main in enumerate(mains)}
    return {i: number[row[0]] for row in ids for i in row} | number


def queries(limit: int) -> tuple[list[str], list[str]]:
    """(texts, first gold ID) of the distinct NCBI test mentions."""
    docs = read_pubtator(data_file(CORPORA["ncbi-disease"].splits["test"]))
    first = dict(reversed([(Preprocessor().name(m.text), (m.ids or ("",))[0]) for d in docs for m in d.mentions]))
    texts = [t for t in first if t][:limit]
    return texts, [first[t] for t in texts]


def vector_tools(names, ids):
    numbers = concept_numbers(ids[:REAL_CAP])
    centres = unit(np.random.default_rng(4).standard_normal((max(numbers.values()) + 1, WIDTH), dtype=np.float32))
    return numbers, centres


def build(args) -> dict:
    started = time.perf_counter()
    names, ids, real = names_with_variants(args.names)
    generated_s = time.perf_counter() - started
    started = time.perf_counter()
    encoder = SparseEncoder().fit(names)
    fit_s = time.perf_counter() - started
    projection = np.random.default_rng(1).standard_normal((len(encoder.vocabulary), WIDTH), dtype=np.float32)
    # The last row: the projected mean TF-IDF row of the real names, taken off every row.
    projection = np.vstack([projection, np.asarray(encoder.transform(names[:real]).mean(axis=0) @ projection, dtype=np.float32)])
    rng = np.random.default_rng(2)
    numbers, centres = vector_tools(names, ids)
    parts, transform_s, vectors_s = [], 0.0, 0.0
    for start in range(0, len(names), PART):
        t0 = time.perf_counter()
        tfidf = encoder.transform(names[start:start + PART])
        t1 = time.perf_counter()
        concepts = np.array([numbers.get(i[0], -1) for i in ids[start:start + PART]])
        dense = structured_vectors(tfidf, concepts, centres, projection, rng).astype(np.float16)
        vectors_s += time.perf_counter() - t1
        transform_s += t1 - t0
        parts.append(NameIndex(names[start:start + PART], ids[start:start + PART], encoder, tfidf, dense))
    started = time.perf_counter()
    index = NameIndex.merge(parts, manifest={"benchmark": "index_scale"})
    del parts
    merge_s = time.perf_counter() - started
    started = time.perf_counter()
    index.add_faiss("ivfpq")
    faiss_s = time.perf_counter() - started
    started = time.perf_counter()
    index.add_postings()
    postings_s = time.perf_counter() - started
    started = time.perf_counter()
    index.save(args.folder)
    save_s = time.perf_counter() - started
    np.save(Path(args.folder).with_suffix(".projection.npy"), projection)
    files = {p.name: p.stat().st_size for p in Path(args.folder).rglob("*") if p.is_file()}
    return {
        "names": len(names), "real_names": real, "generated_names": len(names) - real, "ngrams": len(encoder.vocabulary),
        "sparse_nonzeros": int(index.sparse_matrix.nnz), "faiss": index.manifest["faiss"], "postings": index.manifest["postings"],
        "seconds": {"generate_names": round(generated_s, 1), "sparse_fit": round(fit_s, 1), "sparse_transform": round(transform_s, 1),
                    "random_vectors (not part of a real build)": round(vectors_s, 1), "merge_parts": round(merge_s, 1),
                    "faiss_ivfpq_train_add": round(faiss_s, 1), "postings": round(postings_s, 1), "save_with_checksums": round(save_s, 1)},
        "index_build_s (sparse fit + transform + merge + faiss + postings + save)": round(fit_s + transform_s + merge_s + faiss_s + postings_s + save_s, 1),
        "disk_bytes_per_name": {name: round(size / len(names), 1) for name, size in sorted(files.items())},
        "disk_bytes_per_name_total": round(sum(files.values()) / len(names), 1),
        "build_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def memory() -> dict:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    gib = lambda key: round(int(fields[key].split()[0]) / 2**20, 2)  # noqa: E731
    return {"rss_gib": gib("VmRSS"), "rss_anon_gib": gib("RssAnon"), "rss_file_gib": gib("RssFile")}


def p50_ms(run, n: int) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - t0)
    return round(1000 * float(np.median(times)), 2)


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return round(float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)])), 4)


def search(args) -> dict:
    started = time.perf_counter()
    index = NameIndex.load(args.folder)
    load_s = time.perf_counter() - started
    if args.nprobe:
        index.manifest["faiss"]["nprobe"] = faiss.extract_index_ivf(index._faiss).nprobe = args.nprobe
    if args.candidates:
        index.manifest["faiss"]["candidates"] = args.candidates
    after_load = memory()
    projection = np.load(Path(args.folder).with_suffix(".projection.npy"))
    texts, gold = queries(args.queries)
    numbers, centres = vector_tools(index.names, index.ids)
    sparse_q = index.sparse_encoder.transform(texts)
    concepts = np.array([numbers.get(g, -1) for g in gold])
    dense_q = structured_vectors(sparse_q, concepts, centres, projection, np.random.default_rng(3))
    weight = MINILM["sparse_weight"]
    one = lambda mode, approximate: lambda i: index.search(  # noqa: E731
        K, mode=mode, dense_queries=dense_q[i:i + 1], sparse_queries=index.sparse_encoder.transform(texts[i:i + 1]),
        sparse_weight=weight, approximate=approximate)
    p50 = {}
    for mode in ("dense", "hybrid", "sparse"):
        one(mode, True)(0)  # warm
        p50[f"{mode}_approximate"] = p50_ms(one(mode, True), min(200, len(texts)))
    after_queries = memory()
    p50["sparse_exact"] = p50_ms(one("sparse", False), 10)
    p50["dense_exact"] = p50_ms(one("dense", False), 3)
    search = lambda mode, approximate: index.search(K, mode=mode, dense_queries=dense_q, sparse_queries=sparse_q,  # noqa: E731
                                                    sparse_weight=weight, approximate=approximate)
    approx = {mode: search(mode, True) for mode in ("dense", "hybrid", "sparse")}
    _, raw = index._faiss.search(dense_q, K)  # IVF-PQ alone, without the exact re-scoring
    started = time.perf_counter()
    exact = {mode: search(mode, False) for mode in ("dense", "hybrid", "sparse")}
    exact_s = time.perf_counter() - started
    sweep = []
    ivf, settings = faiss.extract_index_ivf(index._faiss), index.manifest["faiss"]
    for nprobe, candidates in ((16, 400), (32, 400), (64, 400), (128, 400), (128, 1000), (256, 1000)):
        ivf.nprobe = nprobe
        dense = lambda i, c=candidates: index.search(K, mode="dense", dense_queries=dense_q[i:i + 1], approximate=True, candidates=c)  # noqa: E731
        sweep.append({"nprobe": nprobe, "nlist": settings["nlist"], "candidates": candidates,
                      f"dense_recall@{K}": recall(index.search(K, mode="dense", dense_queries=dense_q, approximate=True,
                                                               candidates=candidates).indices, exact["dense"].indices),
                      "p50_ms": p50_ms(dense, min(100, len(texts)))})
    ivf.nprobe = settings["nprobe"]
    return {
        "queries": len(texts), "load_s_with_checksums": round(load_s, 1), "memory_after_load": after_load,
        "memory_after_approximate_queries (index RAM)": after_queries,
        "p50_ms_one_query": p50, "exact_over_approximate_p50": {
            "sparse": round(p50["sparse_exact"] / p50["sparse_approximate"], 1), "dense": round(p50["dense_exact"] / p50["dense_approximate"], 1)},
        f"recall@{K}": {"dense_ivfpq_rescored": recall(approx["dense"].indices, exact["dense"].indices),
                        "dense_ivfpq_alone": recall(raw, exact["dense"].indices),
                        "sparse_postings_prefilter": recall(approx["sparse"].indices, exact["sparse"].indices),
                        "hybrid": recall(approx["hybrid"].indices, exact["hybrid"].indices)},
        "hybrid_top1_agreement": round(float(np.mean(approx["hybrid"].indices[:, 0] == exact["hybrid"].indices[:, 0])), 4),
        "sparse_top1_agreement": round(float(np.mean(approx["sparse"].indices[:, 0] == exact["sparse"].indices[:, 0])), 4),
        "exact_reference_s (dense + hybrid + sparse, all queries)": round(exact_s, 1),
        "ivfpq_nprobe_sweep": sweep,
        "search_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--folder", required=True, help="where the index is written (e.g. runs/scale-1m)")
    parser.add_argument("--queries", type=int, default=500, help="at most this many distinct NCBI test mentions")
    parser.add_argument("--phase", choices=("all", "build", "search"), default="all")
    parser.add_argument("--output", help="write the figures here (JSON)")
    parser.add_argument("--nprobe", type=int, help="search: IVF lists probed (default: the index's)")
    parser.add_argument("--candidates", type=int, help="search: names over-fetched and re-scored (default: the index's)")
    args = parser.parse_args()
    report: dict = {"cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2)}
    if args.phase in ("all", "build"):
        report["build"] = build(args)
        print(json.dumps(report["build"]), flush=True)
    if args.phase == "search":
        report = search(args)
    elif args.phase == "all":
        options = [f"--{o}={getattr(args, o)}" for o in ("nprobe", "candidates") if getattr(args, o)]
        child = subprocess.run([sys.executable, __file__, "--phase", "search", "--folder", args.folder, "--queries", str(args.queries), *options],
                               capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"the search phase failed:\n{child.stderr}")
        report["search"] = json.loads(child.stdout.splitlines()[-1])
    print(json.dumps(report), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
