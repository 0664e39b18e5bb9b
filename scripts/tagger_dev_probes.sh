#!/usr/bin/env bash
# Dev probes of a trained tagger's reading options (no retraining): windows, propagation, int8.
# Usage: scripts/tagger_dev_probes.sh TAGGER_FOLDER [OUT_DIR]   (BIOSYN_DATA_DIR set, package installed)
# Each line of OUT_DIR/summary.tsv: probe, NER P/R/F1 on NCBI dev, tagger seconds.
set -euo pipefail
tagger=${1:?tagger folder}
out=${2:-runs/tagger-probes}
mkdir -p "$out"
probe() {
  local name=$1; shift
  biosyn tagger evaluate --tagger "$tagger" --corpus ncbi-disease --split dev --ner-only --quiet \
    --output "$out/$name.json" "$@" > "$out/$name.txt"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); n=r['ner']; print('\t'.join(map(str,[sys.argv[2], n['precision'], n['recall'], n['f1'], r['seconds']['tagger']])))" \
    "$out/$name.json" "$name" | tee -a "$out/summary.tsv"
}
: > "$out/summary.tsv"
probe window128 --window 128 --overlap 32 --no-propagate
probe window128-propagate --window 128 --overlap 32 --propagate
probe window256 --window 256 --overlap 64 --no-propagate
probe window512 --window 512 --overlap 128 --no-propagate
probe window128-int8 --window 128 --overlap 32 --no-propagate --int8
probe window256-int8 --window 256 --overlap 64 --no-propagate --int8
probe window128-lexicon50 --window 128 --overlap 32 --no-propagate --lexicon --lexicon-min-ratio 0.5
probe window128-lexicon70 --window 128 --overlap 32 --no-propagate --lexicon --lexicon-min-ratio 0.7
probe window128-lexicon50-propagate --window 128 --overlap 32 --propagate --lexicon --lexicon-min-ratio 0.5
