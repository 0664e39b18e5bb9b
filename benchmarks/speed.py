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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=3000, help="names for the embedding-rate comparison")
    parser.add_argument("--encoders", default="minilm,bert-base", help="which encoders to measure (comma-separated)")
    parser.add_argument("--full", action="store_true", help="also build the full index with bert-base (slow)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    benchmark = load_benchmark("ncbi-disease", "test")
    with tempfile.TemporaryDirectory() as tmp:
        encoders = args.encoders.split(",")
        if "minilm" in encoders:
            minilm = BioSyn.from_encoder(minilm_path(), pooling=MINILM["pooling"], similarity=MINILM["similarity"],
                                         scale=MINILM["scale"], sparse_weight=MINILM["sparse_weight"])
            measure("minilm", minilm, benchmark, args, Path(tmp))
        if "bert-base" in encoders:
            measure("bert-base-random", bert_base_random(), benchmark, args, Path(tmp))


if __name__ == "__main__":
    main()
