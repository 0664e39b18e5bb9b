#!/usr/bin/env bash
# One-command reproduction of the NCBI disease result on a CPU (see docs/training.md).
# Synonym pre-training on MEDIC -> BioSyn training on train+dev -> one evaluation on test.
# Needs the data folder ($BIOSYN_DATA_DIR or `biosyn data fetch`) and the packaged MiniLM.
set -euo pipefail
OUT=${1:-runs/ncbi-disease-reproduce}
SEED=${SEED:-0}
if command -v biosyn >/dev/null && biosyn reproduce --help >/dev/null 2>&1; then
  BIOSYN=(biosyn)
else
  BIOSYN=(python -m biosyn.training.cli)
fi
"${BIOSYN[@]}" reproduce ncbi-disease --output "$OUT" --seed "$SEED" "${@:2}"
echo "results: $OUT/results.json  plot: $OUT/training.png  model: $OUT/model"
