"""Dev sweep of the reranker's confidence gate (docs/rerank.md): re-score only where BioSyn's top two are close.

    python scripts/rerank_gate_sweep.py RERANKER_FOLDER [--model minilm] [--gates none 0.02 0.05 0.1]

Prints Acc@1/Acc@5, per type Acc@1, the share of queries re-scored and the ranking time for each gate, on NCBI dev.
"""

import argparse
import json
from dataclasses import replace

from biosyn.evaluation.evaluate import run_evaluation
from biosyn.evaluation.protocol import load_benchmark
from biosyn.interfaces.loading import attach_index, load_model
from biosyn.model.rerank import CrossEncoderReranker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("reranker")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--corpus", default="ncbi-disease")
    parser.add_argument("--gates", nargs="+", default=["none", "0.02", "0.05", "0.1", "0.2"])
    args = parser.parse_args()
    dev = load_benchmark(args.corpus, "dev")
    model = load_model(args.model)
    attach_index(model, dev.dictionary, dev.vocabulary)
    texts = list(dict.fromkeys(p for q in dev.queries for p in q.parts))
    # The reranker's own rule (`CrossEncoderReranker.rerank`): a list of fewer than 2 is always re-scored.
    margins = [c[0].score - c[1].score if len(c) > 1 else float("-inf") for c in model.rank(texts, 2)]
    rows = [{"gate": "off", **_figures(model, dev)}]
    reranker = CrossEncoderReranker.from_pretrained(args.reranker)
    model.use_reranker(reranker)
    for gate in args.gates:
        value = None if gate == "none" else float(gate)
        reranker.options = replace(reranker.options, gate=value)
        rescored = sum(value is None or m < value for m in margins) / len(margins)
        rows.append({"gate": gate, **_figures(model, dev), "rescored": round(100 * rescored, 1)})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows[0]))


def _figures(model, dev) -> dict:
    evaluation = run_evaluation(model, dev, k=5)
    summary = evaluation.result.summary()
    return {"acc@1": summary["acc"]["acc@1"], "acc@5": summary["acc"]["acc@5"],
            "by_type": {t: s["acc@1"] for t, s in summary["by_type"].items()}, "rank_seconds": round(evaluation.seconds["rank"], 1)}


if __name__ == "__main__":
    main()
