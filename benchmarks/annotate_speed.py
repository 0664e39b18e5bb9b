"""Annotation throughput: raw abstracts to mentions with concept IDs, from a saved tagger, model and index.

    .venv/bin/python benchmarks/annotate_speed.py --tagger runs/ncbi-disease/tagger [--model sparse] [--repeat 3]
        [--backend torch|onnx|onnx-int8] [--linker-backend ...] [--overlap N]

Reads the NCBI disease test abstracts (100, title + abstract) as raw text, builds or reuses the cached
index of the linker first (not timed), then times, on the same abstracts: the tagger alone, the linker
alone on the tagger's spans, and the whole `Annotator` (end to end), each as abstracts/s. Start-up
(loading the tagger and linker, with the index from the cache) is timed separately. Needs
BIOSYN_DATA_DIR (default ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from biosyn.encoders.onnx import BACKENDS

os.environ.setdefault("BIOSYN_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tagger", help="tagger folder (default: $BIOSYN_TAGGER, else runs/ncbi-disease/tagger)")
    parser.add_argument("--model", help="linker (default: the trained model, else minilm)")
    parser.add_argument("--int8", action="store_true", help="the tagger with torch's dynamic int8 quantisation")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="what runs the tagger (onnx and onnx-int8 need `biosyn export [--int8] TAGGER`); default torch")
    parser.add_argument("--linker-backend", choices=BACKENDS, default="torch", help="what runs the linker's encoder; default torch")
    parser.add_argument("--overlap", type=int, help="tokens shared by neighbouring tagger windows (default: as the tagger was saved)")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the 100 abstracts; the best pass counts")
    parser.add_argument("--output", help="write the figures here (JSON)")
    args = parser.parse_args()

    from biosyn.annotation.annotator import Annotator
    from biosyn.evaluation.protocol import load_benchmark
    from biosyn.interfaces.loading import attach_index, load_model, load_tagger
    from biosyn.interfaces.tagger_cli import read_split

    docs = read_split("ncbi-disease", "test")
    texts = [d.text for d in docs]
    benchmark = load_benchmark("ncbi-disease", "test")
    started = time.perf_counter()
    linker = load_model(args.model, backend=args.linker_backend)
    attach_index(linker, benchmark.dictionary, benchmark.vocabulary, progress=False)  # cached after the first run
    linker_ready = time.perf_counter()
    options = {"int8": True} if args.int8 else {}
    if args.overlap is not None:
        options["overlap"] = args.overlap
    tagger = load_tagger(args.tagger, options or None, backend=args.backend)
    tagger_ready = time.perf_counter()
    annotator = Annotator(tagger, linker)
    annotator.annotate(texts[:2])  # warm-up

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    tag_s = best(lambda: tagger.tag(texts))
    spans = tagger.tag(texts)
    link_s = best(lambda: annotator.link(texts, spans))
    end_to_end_s = best(lambda: annotator.annotate(texts))
    n = len(texts)
    figures = {
        "abstracts": n, "characters": sum(map(len, texts)), "mentions_found": sum(map(len, spans)),
        "tagger_abstracts_per_s": round(n / tag_s, 1), "linker_abstracts_per_s": round(n / link_s, 1),
        "linker_mentions_per_s": round(sum(map(len, spans)) / link_s, 1),
        "end_to_end_abstracts_per_s": round(n / end_to_end_s, 1),
        "startup_s": {"linker_with_cached_index": round(linker_ready - started, 2), "tagger": round(tagger_ready - linker_ready, 2)},
        "linker": linker.spec, "tagger_options": vars(tagger.options),
        "backends": {"tagger": args.backend, "linker": args.linker_backend},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    print(json.dumps(figures, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
