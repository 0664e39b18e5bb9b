#!/usr/bin/env bash
# The fourth-round dev sweep (docs/training.md): pre-training variants, then BioSyn training on
# train with dev Acc@1/Acc@5 after every epoch, one JSON line per pre-training and per epoch in
# $OUT/results.jsonl. About 9 min on one H200 with PARALLEL=1 (five lanes at once); on a 2-core
# CPU leave PARALLEL=0, since two jobs at once there run 5-7x slower (about 5 h in all).
#   BIOSYN_DATA_DIR=../shared/data PARALLEL=1 bash scripts/dev_sweep.sh
set -u
OUT=${OUT:-runs/dev-sweep}; PARALLEL=${PARALLEL:-0}; BIOSYN=${BIOSYN:-biosyn}
mkdir -p "$OUT"
[ "$PARALLEL" = 1 ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3} TOKENIZERS_PARALLELISM=false

pre() {  # name steps concepts-per-batch neighbours lr [more pretrain options]
  local name=$1 steps=$2 batch=$3 nb=$4 lr=$5; shift 5
  $BIOSYN pretrain --quiet --steps "$steps" --batch-size "$batch" --neighbours "$nb" --lr "$lr" --output "$OUT/$name" "$@" \
    | grep '^{' | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'pretrain':'$name',**{k:d[k] for k in ('first_loss','last_loss','seconds')}}))" \
    >> "$OUT/results.jsonl"
}
train() {  # name pretrained-name [more train options]
  local name=$1 base=$2; shift 2
  $BIOSYN train --quiet --model "$OUT/$base" --splits train --output "$OUT/$name" "$@" > /dev/null || return 1
  python3 - "$OUT/$name/train_log.jsonl" "$name" "$base $*" >> "$OUT/results.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("event") == "epoch":
        acc = r["dev"]["acc"]
        print(json.dumps({"run": sys.argv[2], "args": sys.argv[3], "epoch": r["epoch"], "acc1": acc["acc@1"],
                          "acc5": acc["acc@5"], "loss": r["loss"], "sparse_weight": r["sparse_weight"], "seconds": r["seconds"]}))
PY
}

lane1() { pre n8 150 64 8 2e-5 && train K n8 --epochs 2
          pre n8s1000 1000 64 8 2e-5 && train K1000 n8s1000 --epochs 2
          pre n8s3000 3000 64 8 2e-5 && train K3000 n8s3000 --epochs 2; }
lane2() { pre b256s300 300 256 8 2e-5 && train B256s300 b256s300 --epochs 2
          pre b256s1000 1000 256 8 2e-5 && train B256s1000 b256s1000 --epochs 2
          pre b512s1000 1000 512 8 2e-5 && train B512s1000 b512s1000 --epochs 2; }
lane3() { pre n8b 150 64 8 2e-5 && train K-s1 n8b --epochs 1 --seed 1
          train K-lr2e5-e3 n8b --epochs 3 --lr 2e-5
          train K-topk40 n8b --epochs 2 --topk 40
          train K-b32-lr1e4 n8b --epochs 2 --batch-size 32 --lr 1e-4
          train K-s2 n8b --epochs 1 --seed 2; }
lane4() { pre lr5s1000 1000 64 8 5e-5 && train L5-1000 lr5s1000 --epochs 2
          pre ment1000 1000 64 8 2e-5 --mentions train && train M1000 ment1000 --epochs 2
          pre rand1000 1000 64 0 2e-5 && train Rand1000 rand1000 --epochs 2; }
lane5() { pre n16s1000 1000 64 16 2e-5 && train N16-1000 n16s1000 --epochs 2
          pre b256s3000 3000 256 8 2e-5 && train B256s3000 b256s3000 --epochs 2; }

for lane in lane1 lane2 lane3 lane4 lane5; do
  if [ "$PARALLEL" = 1 ]; then ( $lane ) > "$OUT/$lane.log" 2>&1 & else ( $lane ) > "$OUT/$lane.log" 2>&1; fi
done
wait
echo "results: $OUT/results.jsonl"
