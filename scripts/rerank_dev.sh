#!/usr/bin/env bash
# Dev probes for the cross-encoder reranker (docs/rerank.md), one after another: each trains on NCBI train
# and prints dev Acc@1/Acc@5 with and without the reranker. About 15-25 min each on an idle 2-core CPU.
set -euo pipefail
MODEL=${MODEL:-minilm}
OUT=${OUT:-runs/rerank-dev}
mkdir -p "$OUT"
probe() { name=$1; shift; biosyn rerank train --model "$MODEL" --output "$OUT/$name" "$@" 2>&1 | tee "$OUT/$name.log" | grep -E "^dev|queries"; }
probe default
probe preferred --candidate-text name+preferred
probe depth10 --depth 10
probe with-bc5cdr --add-corpus bc5cdr-disease
