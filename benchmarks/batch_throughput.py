"""`biosyn batch` throughput on local Ray beside the single-process path, and a paper projection to PubMed.

    BIOSYN_DATA_DIR=../shared/data nice -n 10 .venv/bin/python benchmarks/batch_throughput.py \
        --documents 100000 --shards 8 --workers 2 --sample 3000 --output runs/batch-throughput.json

Builds a corpus of `--documents` abstracts by re-issuing the NCBI disease (train, dev, test)
and BC5CDR (train, dev; disease mentions only; abstracts with none left out) abstracts under new IDs (`PMID.copy`) with their gold
mention spans, dealt round-robin into `--shards` PubTator shards, so that neighbouring documents of a
shard are different abstracts. Gold spans, because the tagger (8.6 abstracts/s end to end on 2 cores,
docs/results.md) would need over three hours for 100,000 documents here; the projection adds its cost.

Then, in one run, on the same machine: the single-process path (`annotate_shard`, the Annotator over
`annotate_sources`, as `biosyn annotate` does, torch on every core) on the first `--sample` documents,
and `biosyn batch` on the whole corpus as a subprocess on a local Ray with `--workers` actors (one CPU
each), timed wall to wall, start-up (Ray, actors, model and index loading) included. Reports both as
documents/s and their ratio; Ray's overhead as actor-time over annotating time (workers × wall / the
shards' own seconds from their manifests; 1.0 would be none); the per-document cost of one actor beside
the single process; and the projection to 36M abstracts from the per-document cost.

No mention cache anywhere: each document is linked as if it were the only copy. BioSyn's `rank` embeds
a text once per call (a batch of documents), as it does for any input; copies of an abstract are never
in one batch here (the shards deal the stream round-robin), so re-issuing flatters neither path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BIOSYN_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

PUBMED_ABSTRACTS = 36_000_000
TAGGER_LINKER_PER_S = 8.6  # abstracts/s end to end on 2 cores, fp32 (docs/results.md, benchmarks/annotate_speed.py)
SOURCES = [("ncbi-disease", f, None) for f in ("NCBItrainset_corpus.txt", "NCBIdevelopset_corpus.txt", "NCBItestset_corpus.txt")] + \
          [("bc5cdr", f, {"Disease"}) for f in ("CDR_TrainingSet.PubTator.txt", "CDR_DevelopmentSet.PubTator.txt")]


def build_corpus(folder: Path, documents: int, shards: int) -> tuple[int, int, int]:
    """Writes the shards of `documents` documents; returns (documents, mentions, distinct source abstracts)."""
    from biosyn.data.pubtator import read_pubtator
    from biosyn.data.records import Document

    data = Path(os.environ["BIOSYN_DATA_DIR"])
    # Abstracts with no (disease) mention are left out: they would go to the tagger.
    source = [d for corpus, name, types in SOURCES for d in read_pubtator(data / corpus / name, types=types) if d.mentions]
    copies = -(-documents // len(source))
    stream = [Document(f"{d.pmid}.{c}", d.title, d.abstract, list(d.mentions)) for c in range(copies) for d in source][:documents]
    from biosyn.data.pubtator import write_pubtator

    for k in range(shards):
        write_pubtator(stream[k::shards], folder / f"corpus{k:03d}.pubtator")
    return len(stream), sum(len(d.mentions) for d in stream), len(source)


def single_process(corpus: Path, sample: int, model: str, batch: int) -> dict:
    """The sample's documents annotated in this process, as one shard."""
    from biosyn.annotation.annotator import Annotator
    from biosyn.data.pubtator import read_pubtator, write_pubtator
    from biosyn.interfaces.loading import load_linker
    from biosyn.scale.shards import Shard, annotate_shard

    docs = [d for p in sorted(corpus.glob("*.pubtator")) for d in read_pubtator(p)]
    picked = docs[::max(1, len(docs) // sample)][:sample]  # every shard's documents, in stream order
    folder = corpus.parent / "sample"
    write_pubtator(picked, folder / "sample.pubtator")
    started = time.perf_counter()
    linker = load_linker(model)
    loaded = time.perf_counter()
    manifest = annotate_shard(Annotator(None, linker), Shard("sample", str(folder / "sample.pubtator")), corpus.parent / "sample-out",
                              {}, job_fingerprint="", batch=batch)
    seconds = time.perf_counter() - loaded
    counts = manifest["counts"]
    return {"documents": counts["documents"], "mentions": counts["mentions"], "bad": counts["bad"],
            "startup_s": round(loaded - started, 2), "seconds": round(seconds, 1),
            "documents_per_s": round(counts["documents"] / seconds, 1), "mentions_per_s": round(counts["mentions"] / seconds, 1),
            "torch_threads": __import__("torch").get_num_threads()}


def ray_batch(corpus: Path, model: str, workers: int, batch: int) -> dict:
    out = corpus.parent / "batch-out"
    command = [sys.executable, "-m", "biosyn", "batch", str(corpus), "--output", str(out), "--model", model,
               "--workers", str(workers), "--batch-size", str(batch)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"biosyn batch failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "batch-summary.json").read_text())
    manifests = [json.loads(p.read_text()) for p in out.glob("*.manifest.json")]
    busy = sum(m["seconds"] for m in manifests)
    counts = summary["counts"]
    return {"command": " ".join(["biosyn", *command[3:]]), "workers": workers, "shards": summary["shards"],
            "missing": summary["missing"], "documents": counts["documents"], "annotated": counts["annotated"],
            "bad": counts["bad"], "mentions": counts["mentions"], "wall_s": round(seconds, 1),
            "documents_per_s": round(counts["documents"] / seconds, 1), "mentions_per_s": round(counts["mentions"] / seconds, 1),
            "actor_busy_s": round(busy, 1), "documents_per_actor_busy_s": round(counts["documents"] / busy, 1),
            "last_line": done.stderr.strip().splitlines()[-1]}


def projection(link_per_actor_s: float, overhead: float, cores: int, machines: list[int]) -> dict:
    """Hours for 36M abstracts on `machines` machines of `cores` cores: per-document core-seconds (one
    actor is one core) times Ray's overhead, spread evenly; a paper figure, linear by assumption."""
    per_doc = {"linking_only": 1 / link_per_actor_s * overhead,
               "tagger_and_linker": 2 / TAGGER_LINKER_PER_S * overhead}  # 2 cores at 8.6 abstracts/s
    return {"per_document_core_s": {k: round(v, 4) for k, v in per_doc.items()}, "cores_per_machine": cores,
            "hours": {k: {str(n): round(PUBMED_ABSTRACTS * v / (n * cores) / 3600, 1) for n in machines} for k, v in per_doc.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Ray actors (default: this machine's CPUs)")
    parser.add_argument("--sample", type=int, default=3000, help="documents for the single-process path")
    parser.add_argument("--model", default="minilm", help="linker (default: the packaged MiniLM, hybrid)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cores-per-machine", type=int, default=16, help="for the projection")
    parser.add_argument("--work-dir", help="keep the corpus and outputs here (default: a temporary folder)")
    parser.add_argument("--output", help="write the figures here (JSON)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        corpus = work / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        documents, mentions, distinct = build_corpus(corpus, args.documents, args.shards)
        built = time.perf_counter() - t0
        load_before = os.getloadavg()
        single = single_process(corpus, args.sample, args.model, args.batch_size)
        ray = ray_batch(corpus, args.model, args.workers, args.batch_size)
        # Actor-time over the time actors spent annotating: start-up (Ray, actors, models), scheduling and the idle tail.
        overhead = ray["workers"] * ray["wall_s"] / ray["actor_busy_s"]
        figures = {
            "corpus": {"documents": documents, "mentions": mentions, "distinct_abstracts": distinct, "shards": args.shards,
                       "build_s": round(built, 1)},
            "single_process": single, "ray": ray,
            "ray_over_single_process_throughput": round(ray["documents_per_s"] / single["documents_per_s"], 2),
            "ray_overhead_ratio": round(overhead, 3),  # workers × wall / actor busy time; 1.0 would be none
            "per_document_cost_ratio": round(single["documents_per_s"] / ray["documents_per_actor_busy_s"], 3),  # one actor vs one process
            "documents_in_equal_out": ray["documents"] == documents and not ray["missing"],
            "projection_36M": projection(ray["documents_per_actor_busy_s"], overhead, args.cores_per_machine, [1, 10, 100]),
            "machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()},
            "model": args.model, "batch_size": args.batch_size,
        }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
