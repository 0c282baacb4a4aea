#!/usr/bin/env bash
# All-user evaluation time through Flower, this checkout (A) against a git revision (B, checked
# out as a temporary worktree), alternating A B A B: PFedRec, ML-100K, ROUNDS rounds with the
# evaluation of all 943 users every round; prints each run's median evaluation and training
# round seconds (final.json).
#   REV=98e80e0 PAIRS=3 bash bench/eval_ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd); REV=${REV:?git revision for side B}; PAIRS=${PAIRS:-3}; ROUNDS=${ROUNDS:-6}
OUT=${OUT:-outputs/eval-ab}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
WT=$(mktemp -d); git worktree add -q --detach "$WT" "$REV"
trap 'git worktree remove --force "$WT"' EXIT
for i in $(seq 1 "$PAIRS"); do
  for side in A B; do
    if [ "$side" = A ]; then D=$ROOT; else D=$WT; fi
    pkill -f "flower-superlink.*--simulation" || true; sleep 1
    (cd "$D" && "$ROOT/.venv/bin/python" run.py -c "num-server-rounds=$ROUNDS eval-every=1 centralised-epochs=0 run-name='ab$side$i'" \
       --out "$OUT/$side" > "$OUT/$side$i.log" 2>&1)
    echo "$side$i $(jq -c '{eval_s: .median_eval_seconds, train_s: .median_train_round_seconds}' "$OUT"/$side/ab$side$i*/final.json)"
  done
done
