"""Speed of the model and index on this machine, against the reference code's way of working.

    .venv/bin/python benchmarks/speed.py                  # packaged MiniLM + a bert-base-sized random encoder
    .venv/bin/python benchmarks/speed.py --encoders minilm   # MiniLM only

Prints, per encoder: dictionary-embedding rate (names/s) with biosyn's batching (length-sorted,
dynamic padding, bf16 autocast) and with the reference code's (every batch padded to 25 tokens,
fp32, input order), the index build time for the NCBI test dictionary, start-up time from a
saved index to the first answer (a fresh process, imports included), throughput normalising the
960 test mentions, the whole test evaluation from the saved index, and peak memory. The
reference code re-embeds the dictionary on every run; its time per run is the dictionary size
over its measured rate. Needs BIOSYN_DATA_DIR (default ../shared/data).

    .venv/bin/python benchmarks/speed.py --backends       # torch against ONNX Runtime (issue 13), MiniLM

`--backends` measures, side by side in one run and in a fresh cache: the export; the embedding rate
of torch (bf16 autocast: the path before ONNX; and fp32), ONNX fp32 and ONNX int8 on the same
names, with ratios to torch bf16; how far the vectors are from torch fp32; the NCBI test index
(73k names) built from the files the way `biosyn normalize` does (dictionary, TF-IDF, ONNX rows);
normalising the 960 test mentions from it and Acc@1/Acc@5 with each backend's queries; start-up
from a fresh process to the first answer (saved model + index, and the plain CLI with its cache);
and a server's resident memory once it answers /health.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from biosyn.encoders.dense import DenseEncoder
from biosyn.evaluation.evaluate import run_evaluation
from biosyn.evaluation.protocol import load_benchmark
from biosyn.model.biosyn import BioSyn
from biosyn.model.presets import MINILM, minilm_path

os.environ.setdefault("BIOSYN_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

STARTUP = """
import time, sys
started = time.perf_counter()
from biosyn.model.biosyn import BioSyn
from biosyn.search.index import NameIndex
model = BioSyn.from_pretrained(sys.argv[1])
model.use_index(NameIndex.load(sys.argv[2]))
model.normalize(["hereditary breast cancer"], k=5)
print(time.perf_counter() - started)
"""


@torch.inference_mode()
def embed_reference_way(encoder: DenseEncoder, names: list[str], batch_size: int = 256) -> np.ndarray:
    """BioSyn's embed_dense: input order, every batch padded to max_length, fp32."""
    encoder.model.eval()
    out = []
    for start in range(0, len(names), batch_size):
        batch = encoder.tokenizer(names[start:start + batch_size], padding="max_length", truncation=True,
                                  max_length=encoder.max_length, return_tensors="pt")
        out.append(encoder.pool(encoder.model(**batch).last_hidden_state, batch["attention_mask"]).numpy())
    return np.concatenate(out)


def rate(fn, names) -> float:
    started = time.perf_counter()
    fn(names)
    return len(names) / (time.perf_counter() - started)


def bert_base_random() -> BioSyn:
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size))  # bert-base: 12 layers, 768 wide
    return BioSyn(DenseEncoder(model.eval(), tokenizer, pooling="cls"))


def measure(name: str, model: BioSyn, benchmark, args, workdir: Path) -> dict:
    names = benchmark.dictionary.names
    rng = np.random.default_rng(0)
    sample = [names[i] for i in rng.choice(len(names), size=min(args.sample, len(names)), replace=False)]
    model.configure_embedding(bf16=True, batch_size=256)
    ours = rate(lambda n: model.encoder.embed(n, bf16=True), sample)
    reference = rate(lambda n: embed_reference_way(model.encoder, n), sample)
    row = {"encoder": name, "sample_names": len(sample), "embed_names_per_s": round(ours, 1),
           "reference_embed_names_per_s": round(reference, 1), "embed_speedup": round(ours / reference, 2),
           "reference_seconds_per_run_73k": round(len(names) / reference, 1)}
    if args.full or name == "minilm":
        started = time.perf_counter()
        model.build_index(benchmark.dictionary, benchmark.vocabulary)
        row["index_build_s"] = round(time.perf_counter() - started, 1)
        row["dictionary_names"] = len(names)
        model_dir, index_dir = workdir / f"{name}-model", workdir / f"{name}-index"
        model.save_pretrained(model_dir)
        model.index.save(index_dir)
        startups = [float(subprocess.run([sys.executable, "-c", STARTUP, str(model_dir), str(index_dir)], check=True,
                                         capture_output=True, text=True).stdout.strip().splitlines()[-1]) for _ in range(3)]
        row["startup_s"] = round(min(startups), 2)
        texts = list(dict.fromkeys(p for q in benchmark.queries for p in q.parts))
        model.rank(texts[:8], k=5)  # warm-up
        started = time.perf_counter()
        model.normalize([q.text for q in benchmark.queries], k=5)
        row["normalize_mentions_per_s"] = round(len(benchmark.queries) / (time.perf_counter() - started), 1)
        started = time.perf_counter()
        evaluation = run_evaluation(model, benchmark, k=5)
        row["evaluate_from_index_s"] = round(time.perf_counter() - started, 2)
        row["acc@1"] = round(100 * evaluation.result.accuracy[1], 2)
        row["reference_vs_ours_per_run"] = round(row["reference_seconds_per_run_73k"] / row["evaluate_from_index_s"], 1)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(row), flush=True)
    return row


STARTUP_BACKEND = """
import sys
from biosyn.model.specs import load_model
from biosyn.search.index import NameIndex
model = load_model("minilm", backend=sys.argv[1])
model.use_index(NameIndex.load(sys.argv[2]))
model.normalize(["hereditary breast cancer"], k=5)
"""


def fresh_process_seconds(command: list[str], env: dict, repeat: int = 3) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run of `command`. On a loaded machine the CPU time
    is the steadier figure: the wall time also counts waiting for a core."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def server_rss_mb(backend: str, env: dict, workdir: Path, port: int) -> tuple[float, float]:
    """Resident memory (MB) of `biosyn serve` once /health answers, and the seconds until then."""
    import urllib.request

    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "biosyn", "serve", "--model", "minilm", "--backend", backend,
                               "--port", str(port)], env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"biosyn serve --backend {backend} exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        ready = time.perf_counter() - started
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS"))
        return rss / 1024, ready
    finally:
        server.terminate()
        server.wait()


def compare_backends(benchmark, args, workdir: Path) -> dict:
    from biosyn.encoders.onnx import cache_folder, export
    from biosyn.interfaces.loading import attach_cached_index
    from biosyn.model.specs import load_model

    # A fresh cache, where export and index are made; or --cache, one that already has the index (its build is then not timed).
    os.environ["BIOSYN_CACHE"] = args.cache or str(workdir / "cache")
    # Fresh processes run as an installed package does: with its bytecode compiled once (a shell with
    # PYTHONDONTWRITEBYTECODE=1 would compile every module on every start, about 0.1 s).
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    row: dict = {}
    models = {"torch": load_model("minilm", backend="torch")}
    started = time.perf_counter()
    torch_model = models["torch"]
    export(torch_model.encoder, minilm_path(), fingerprint=torch_model.fingerprint, similarity=torch_model.similarity,
           int8=True, output=cache_folder(minilm_path()))
    row["export_s"] = round(time.perf_counter() - started, 1)
    models["onnx"] = load_model("minilm", backend="onnx")
    models["onnx-int8"] = load_model("minilm", backend="onnx-int8")
    names = benchmark.dictionary.names
    rng = np.random.default_rng(0)
    sample = [names[i] for i in rng.choice(len(names), size=min(args.sample, len(names)), replace=False)]
    vectors, rates = {}, {}
    for label, model, bf16 in [("torch bf16", models["torch"], True), ("torch fp32", models["torch"], False),
                               ("onnx fp32", models["onnx"], False), ("onnx int8", models["onnx-int8"], False)]:
        model.encoder.embed(sample[:64], bf16=bf16)  # warm-up
        started = time.perf_counter()
        vectors[label] = model.encoder.embed(sample, bf16=bf16, batch_size=256)
        rates[label] = len(sample) / (time.perf_counter() - started)
        print(f"# embedding, {label}: {rates[label]:.0f} names/s", flush=True)
    row["embed_names_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    row["embed_ratio_to_torch_bf16"] = {k: round(v / rates["torch bf16"], 2) for k, v in rates.items()}
    cosine = lambda a, b: float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))  # noqa: E731
    row["max_abs_diff_to_torch_fp32"] = {k: float(np.abs(vectors[k] - vectors["torch fp32"]).max()) for k in ("onnx fp32", "onnx int8")}
    row["min_cosine_to_torch_fp32"] = {k: round(cosine(vectors[k], vectors["torch fp32"]), 5) for k in ("torch bf16", "onnx int8")}
    started = time.perf_counter()
    index = attach_cached_index(models["onnx"], "medic-2012", None, None, progress=False)
    row["index_build_onnx_s" if not args.cache else "index_found_in_cache_s"] = round(time.perf_counter() - started, 1)
    row["index_names"] = len(index)
    row["index_build_torch_bf16_estimate_s"] = round(len(index) / rates["torch bf16"], 1)
    print(f"# index of {len(index)} names: {time.perf_counter() - started:.1f} s", flush=True)
    texts = [q.text for q in benchmark.queries]
    row["normalize_mentions_per_s"], row["acc"] = {}, {}
    for label, model in models.items():
        model.use_index(index)
        model.normalize(texts[:8], k=5)  # warm-up
        started = time.perf_counter()
        model.normalize(texts, k=5)
        row["normalize_mentions_per_s"][label] = round(len(texts) / (time.perf_counter() - started), 1)
        accuracy = run_evaluation(model, benchmark, k=5).result.accuracy
        row["acc"][label] = {"acc@1": round(100 * accuracy[1], 2), "acc@5": round(100 * accuracy[5], 2)}
    startup, cpu = {}, {}
    for backend in ("torch", "onnx"):
        saved = [sys.executable, "-c", STARTUP_BACKEND, backend, str(index.path)]
        cli = [sys.executable, "-m", "biosyn", "normalize", "--model", "minilm", "--backend", backend, "-k", "1", "wilson disease"]
        for kind, command in (("saved index", saved), ("plain CLI", cli)):
            fresh_process_seconds(command, env, repeat=1)  # warm-up: bytecode, page cache, the optimised graph
            startup[f"{kind}, {backend}"], cpu[f"{kind}, {backend}"] = fresh_process_seconds(command, env, repeat=args.repeat)
    median = lambda v: round(float(np.median(v)), 2)  # noqa: E731
    row["startup_wall_s"] = {k: {"best": round(min(v), 2), "median": median(v)} for k, v in startup.items()}
    row["startup_cpu_s"] = {k: {"best": round(min(v), 2), "median": median(v)} for k, v in cpu.items()}
    row["startup_ratio_torch_to_onnx"] = {f"{kind} ({what})": round(median(runs[f"{kind}, torch"]) / median(runs[f"{kind}, onnx"]), 2)
                                          for kind in ("saved index", "plain CLI") for what, runs in (("wall", startup), ("cpu", cpu))}
    row["server"] = {}
    for port, backend in enumerate(("torch", "onnx"), start=args.port):
        rss, ready = server_rss_mb(backend, env, workdir, port)
        row["server"][backend] = {"rss_mb": round(rss), "ready_s": round(ready, 2)}
    row["server_rss_ratio_torch_to_onnx"] = round(row["server"]["torch"]["rss_mb"] / row["server"]["onnx"]["rss_mb"], 2)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=3000, help="names for the embedding-rate comparison")
    parser.add_argument("--encoders", default="minilm,bert-base", help="which encoders to measure (comma-separated)")
    parser.add_argument("--full", action="store_true", help="also build the full index with bert-base (slow)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--backends", action="store_true", help="compare torch and ONNX Runtime (MiniLM) instead")
    parser.add_argument("--port", type=int, default=8791, help="with --backends: first of two free ports for the servers")
    parser.add_argument("--repeat", type=int, default=5, help="with --backends: fresh processes per start-up figure (median and best)")
    parser.add_argument("--cache", help="with --backends: a biosyn cache that has the ONNX-built NCBI test index already")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    benchmark = load_benchmark("ncbi-disease", "test")
    with tempfile.TemporaryDirectory() as tmp:
        if args.backends:
            compare_backends(benchmark, args, Path(tmp))
            return
        encoders = args.encoders.split(",")
        if "minilm" in encoders:
            minilm = BioSyn.from_encoder(minilm_path(), pooling=MINILM["pooling"], similarity=MINILM["similarity"],
                                         scale=MINILM["scale"], sparse_weight=MINILM["sparse_weight"])
            measure("minilm", minilm, benchmark, args, Path(tmp))
        if "bert-base" in encoders:
            measure("bert-base-random", bert_base_random(), benchmark, args, Path(tmp))


if __name__ == "__main__":
    main()
