"""Search at scale: a 1M- or 4M-name index (float16 rows, IVF-PQ, sparse postings) against exact search.

    BIOSYN_DATA_DIR=/work/shared/data nice -n 10 .venv/bin/python benchmarks/index_scale.py --names 1000000 \
        --folder runs/scale-1m --output runs/scale-1m.json

Names (the sparse side): the MEDIC 2012 and CTD names as the dictionary preprocesses them, plus
generated variants until there are --names distinct ones: half are one or two character edits
(substitution, deletion, insertion, transposition) of a real name, half recombine the first words
of one real name with the last words of another; a variant carries its first source's IDs.

Dense side: embedding millions of names on 2 cores is not possible, so only the real names get
real vectors: the packaged MiniLM's rows of a saved MEDIC index (--dense-from; names it lacks,
CTD's, are embedded here). A generated name's row is derived from its source's: an edit variant
is unit(source + 0.5 × a random unit vector) (cosine about 0.9 to its source, as a typo moves a
MiniLM vector), a recombination is unit(unit(source A + source B) + 0.5 × a random unit vector).
So the rows are random unit vectors around the real model's geometry. (I.i.d. random vectors have
no neighbours worth the name, and a random projection of the TF-IDF rows, tried first, has a far
higher intrinsic dimension than a real encoder's space: IVF recall@20 stays near 0.8 even with a
quarter of the lists probed; docs/results.md.)

Queries: the distinct NCBI disease test mentions (preprocessed like the names), embedded by
MiniLM. The sparse weight is the packaged MiniLM's.

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

WIDTH, NOISE, K, PART, QUERIES = 384, 0.5, 20, 250_000, 500
# (IVF lists probed, names fetched and re-scored) tried by the search phase's sweep.
SWEEP = ((64, 400), (128, 400), (128, 1000), (256, 400), (256, 1000), (512, 1000))
LETTERS = "abcdefghijklmnopqrstuvwxyz "


def names_with_variants(n: int, seed: int = 0) -> tuple[list[str], list[tuple[str, ...]], int, np.ndarray]:
    """(names, their IDs, how many are real, sources [n, 2]: the real names each comes from, -1 for none)."""
    dictionary = Dictionary()
    for vocabulary in ("medic-2012", "ctd"):
        built = build_dictionary(load_vocabulary(vocabulary), Preprocessor())
        for name, ids in zip(built.names, built.ids):
            dictionary.add(name, ids)
    names, ids = dictionary.names[:n], dictionary.ids[:n]
    real = len(names)
    sources = [(i, -1) for i in range(real)]
    seen = set(names)
    rng = random.Random(seed)
    while len(names) < n:
        source, other = rng.randrange(real), -1
        name = names[source]
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 2) if len(name) > 2 else 0):
                at, op = rng.randrange(len(name)), rng.randrange(4)
                char = rng.choice(LETTERS)
                name = (name[:at] + char + name[at + 1:] if op == 0 else name[:at] + name[at + 1:] if op == 1
                        else name[:at] + char + name[at:] if op == 2 else name[:at] + name[at + 1:at + 2] + name[at:at + 1] + name[at + 2:])
            name = " ".join(name.split())
        else:
            other = rng.randrange(real)
            head, tail = name.split(), names[other].split()
            name = " ".join(head[: max(1, len(head) // 2)] + tail[len(tail) // 2:])
        if name and name not in seen:
            seen.add(name)
            names.append(name)
            ids.append(ids[source])
            sources.append((source, other))
    return names, ids, real, np.array(sources, dtype=np.int64)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def real_vectors(names: list[str], dense_from: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rows of the real names, query rows, query texts), all from the packaged MiniLM."""
    from biosyn.model.specs import load_model

    model = load_model("minilm")
    saved = NameIndex.load(dense_from)
    saved.check_model(model.fingerprint)  # the rows must be this model's
    row = {name: i for i, name in enumerate(saved.names)}
    rows = np.empty((len(names), WIDTH), dtype=np.float32)
    known = [i for i, name in enumerate(names) if name in row]
    rows[known] = np.asarray(saved.dense_matrix[[row[names[i]] for i in known]], dtype=np.float32)
    missing = [i for i, name in enumerate(names) if name not in row]
    if missing:
        rows[missing] = model.embed([names[i] for i in missing])
    texts = queries(QUERIES)
    return rows, model.embed(texts, queries=True), texts


def variant_vectors(real: np.ndarray, sources: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of generated names, from their sources' rows (see the module's docstring)."""
    base = real[sources[:, 0]]
    other = sources[:, 1] >= 0
    base[other] = unit(base[other] + real[sources[other, 1]])
    return unit(base + NOISE * unit(rng.standard_normal(base.shape, dtype=np.float32)))


def queries(limit: int) -> list[str]:
    docs = read_pubtator(data_file(CORPORA["ncbi-disease"].splits["test"]))
    return [t for t in dict.fromkeys(Preprocessor().name(m.text) for d in docs for m in d.mentions) if t][:limit]


def build(args) -> dict:
    started = time.perf_counter()
    names, ids, real, sources = names_with_variants(args.names)
    generated_s = time.perf_counter() - started
    started = time.perf_counter()
    real_rows, query_rows, texts = real_vectors(names[:real], args.dense_from)
    embed_s = time.perf_counter() - started
    started = time.perf_counter()
    encoder = SparseEncoder().fit(names)
    fit_s = time.perf_counter() - started
    rng = np.random.default_rng(2)
    parts, transform_s, vectors_s = [], 0.0, 0.0
    for start in range(0, len(names), PART):
        t0 = time.perf_counter()
        tfidf = encoder.transform(names[start:start + PART])
        t1 = time.perf_counter()
        dense = variant_vectors(real_rows, sources[start:start + PART], rng)
        is_real = np.arange(start, start + len(dense)) < real  # real names come first and keep their own rows
        dense[is_real] = real_rows[start:min(start + PART, real)]
        dense = dense.astype(np.float16)
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
    np.save(Path(args.folder).with_suffix(".queries.npy"), query_rows)
    Path(args.folder).with_suffix(".queries.json").write_text(json.dumps(texts))
    files = {p.name: p.stat().st_size for p in Path(args.folder).rglob("*") if p.is_file()}
    return {
        "names": len(names), "real_names": real, "generated_names": len(names) - real, "ngrams": len(encoder.vocabulary),
        "sparse_nonzeros": int(index.sparse_matrix.nnz), "faiss": index.manifest["faiss"], "postings": index.manifest["postings"],
        "seconds": {"generate_names": round(generated_s, 1), "sparse_fit": round(fit_s, 1), "sparse_transform": round(transform_s, 1),
                    "real_vectors (MiniLM rows, queries)": round(embed_s, 1), "variant_vectors": round(vectors_s, 1), "merge_parts": round(merge_s, 1),
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


def p50_ms(run, n: int) -> dict:
    """Median wall and CPU milliseconds of run(0..n-1). On a shared CPU the wall time includes
    waiting for the cores; the CPU time (this process's, all threads) is the work itself."""
    wall, cpu = [], []
    for i in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        run(i)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall": round(1000 * float(np.median(wall)), 2), "cpu": round(1000 * float(np.median(cpu)), 2)}


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return round(float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)])), 4)


def agreement(approx: np.ndarray, exact: np.ndarray) -> float:
    """The share of queries whose top-1 is exact search's."""
    return round(float(np.mean(approx[:, 0] == exact[:, 0])), 4)


def search(args) -> dict:
    started = time.perf_counter()
    index = NameIndex.load(args.folder)
    load_s = time.perf_counter() - started
    if args.nprobe:
        index.manifest["faiss"]["nprobe"] = faiss.extract_index_ivf(index._faiss).nprobe = args.nprobe
    if args.candidates:
        index.manifest["faiss"]["candidates"] = args.candidates
    if args.hybrid_budget:
        index.manifest["postings"]["hybrid_budget"] = args.hybrid_budget
    after_load = memory()
    texts = json.loads(Path(args.folder).with_suffix(".queries.json").read_text())[: args.queries]
    dense_q = np.load(Path(args.folder).with_suffix(".queries.npy"))[: args.queries]
    sparse_q = index.sparse_encoder.transform(texts)
    weight = MINILM["sparse_weight"]
    one = lambda mode, approximate, candidates=None: lambda i: index.search(  # noqa: E731
        K, mode=mode, dense_queries=dense_q[i:i + 1], sparse_queries=index.sparse_encoder.transform(texts[i:i + 1]),
        sparse_weight=weight, approximate=approximate, candidates=candidates)
    p50 = {}
    faiss.omp_set_num_threads(1)  # one query, one thread: OpenMP threads spin-waiting on a busy CPU only add time
    for mode in ("dense", "hybrid", "sparse"):
        one(mode, True)(0)  # warm
        p50[f"{mode}_approximate"] = p50_ms(one(mode, True), min(200, len(texts)))
    after_queries = memory()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    p50["sparse_exact"] = p50_ms(one("sparse", False), 10)
    p50["dense_exact"] = p50_ms(one("dense", False), 2)
    search = lambda mode, approximate, candidates=None: index.search(  # noqa: E731
        K, mode=mode, dense_queries=dense_q, sparse_queries=sparse_q, sparse_weight=weight, approximate=approximate, candidates=candidates)
    approx = {mode: search(mode, True) for mode in ("dense", "hybrid", "sparse")}
    _, raw = index._faiss.search(dense_q, K)  # IVF-PQ alone, without the exact re-scoring
    started = time.perf_counter()
    exact = {mode: search(mode, False) for mode in ("dense", "hybrid", "sparse")}
    exact_s = time.perf_counter() - started
    ivf, settings = faiss.extract_index_ivf(index._faiss), index.manifest["faiss"]
    sweep = [{"nprobe": nprobe, "nlist": settings["nlist"], "candidates": candidates} for nprobe, candidates in (SWEEP if args.sweep else ())]
    for row in sweep:
        ivf.nprobe = row["nprobe"]
        for mode in ("dense", "hybrid"):
            found = search(mode, True, row["candidates"]).indices
            row[mode] = {f"recall@{K}": recall(found, exact[mode].indices)}
            if mode == "hybrid":
                row[mode]["top1_agreement"] = agreement(found, exact[mode].indices)
    # Timed round-robin, query by query, so that the machine's drift falls on every setting alike.
    faiss.omp_set_num_threads(1)
    timed = [(row, mode) for row in sweep for mode in ("dense", "hybrid")]
    times: dict[int, list[float]] = {j: [] for j in range(len(timed))}
    for i in range(min(100, len(texts))):
        for j, (row, mode) in enumerate(timed):
            ivf.nprobe = row["nprobe"]
            started = time.perf_counter()
            one(mode, True, row["candidates"])(i)
            times[j].append(time.perf_counter() - started)
    for j, (row, mode) in enumerate(timed):
        row[mode]["p50_ms"] = round(1000 * float(np.median(times[j])), 2)
    for row in sweep:
        print(json.dumps(row), file=sys.stderr, flush=True)
    ivf.nprobe = settings["nprobe"]
    return {
        "queries": len(texts), "load_s_with_checksums": round(load_s, 1), "memory_after_load": after_load,
        "memory_after_approximate_queries (index RAM)": after_queries,
        "p50_ms_one_query": p50, "exact_over_approximate_p50_wall": {
            "sparse": round(p50["sparse_exact"]["wall"] / p50["sparse_approximate"]["wall"], 1),
            "dense": round(p50["dense_exact"]["wall"] / p50["dense_approximate"]["wall"], 1)},
        f"recall@{K}": {"dense_ivfpq_rescored": recall(approx["dense"].indices, exact["dense"].indices),
                        "dense_ivfpq_alone": recall(raw, exact["dense"].indices),
                        "sparse_postings_prefilter": recall(approx["sparse"].indices, exact["sparse"].indices),
                        "hybrid": recall(approx["hybrid"].indices, exact["hybrid"].indices)},
        "hybrid_top1_agreement": agreement(approx["hybrid"].indices, exact["hybrid"].indices),
        "sparse_top1_agreement": agreement(approx["sparse"].indices, exact["sparse"].indices),
        "exact_reference_s (dense + hybrid + sparse, all queries)": round(exact_s, 1),
        "ivfpq_nprobe_sweep (dense and hybrid, one query at a time)": sweep,
        "search_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--dense-from", help="build: a saved MEDIC index of the packaged MiniLM "
                        "(biosyn index build DIR --model minilm --vocabulary medic-2012)")
    parser.add_argument("--folder", required=True, help="where the index is written (e.g. runs/scale-1m)")
    parser.add_argument("--queries", type=int, default=QUERIES, help="at most this many distinct NCBI test mentions")
    parser.add_argument("--phase", choices=("all", "build", "search"), default="all")
    parser.add_argument("--output", help="write the figures here (JSON)")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false", help="search: skip the nprobe/candidates sweep")
    parser.add_argument("--nprobe", type=int, help="search: IVF lists probed (default: the index's)")
    parser.add_argument("--candidates", type=int, help="search: names over-fetched and re-scored (default: the index's)")
    parser.add_argument("--hybrid-budget", type=int, help="search: postings the hybrid search's sparse pre-filter reads (default: the index's)")
    args = parser.parse_args()
    report: dict = {"cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2)}
    if args.phase in ("all", "build") and not args.dense_from:
        parser.error("building needs --dense-from")
    if args.phase in ("all", "build"):
        report["build"] = build(args)
        print(json.dumps(report["build"]), flush=True)
    if args.phase == "search":
        report |= search(args)
    elif args.phase == "all":
        options = [f"--{o.replace('_', '-')}={getattr(args, o)}" for o in ("nprobe", "candidates", "hybrid_budget") if getattr(args, o)] + ([] if args.sweep else ["--no-sweep"])
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
