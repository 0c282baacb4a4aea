#!/usr/bin/env bash
# All-user evaluation time through Flower, alternating A B A B: PFedRec, ML-100K, ROUNDS rounds
# with the evaluation of all 943 users every round; prints each run's median evaluation and
# training round seconds (final.json). Side A is this checkout with the run-config overrides
# A_CFG and the extra flwr federation config A_FED; side B is the git revision REV (checked out
# as a temporary worktree) or, without REV, this checkout too, with B_CFG and B_FED.
#   REV=98e80e0 PAIRS=3 bash bench/eval_ab.sh
#   A_FED="init-args-num-cpus=3" PAIRS=3 bash bench/eval_ab.sh      # 3 client actors against 2
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd); REV=${REV:-}; PAIRS=${PAIRS:-3}; ROUNDS=${ROUNDS:-6}
A_CFG=${A_CFG:-}; B_CFG=${B_CFG:-}; A_FED=${A_FED:-}; B_FED=${B_FED:-}
if [ -z "$REV" ] && [ "$A_CFG" = "$B_CFG" ] && [ "$A_FED" = "$B_FED" ]; then
  echo "eval_ab.sh: give REV (a git revision for side B), or A_CFG / B_CFG or A_FED / B_FED that differ" >&2
  exit 2
fi
OUT=${OUT:-outputs/eval-ab}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
WT=$ROOT
if [ -n "$REV" ]; then
  WT=$(mktemp -d); git worktree add -q --detach "$WT" "$REV"
  trap 'git worktree remove --force "$WT"' EXIT
fi
for i in $(seq 1 "$PAIRS"); do
  for side in A B; do
    if [ "$side" = A ]; then D=$ROOT; CFG=$A_CFG; FED=$A_FED; else D=$WT; CFG=$B_CFG; FED=$B_FED; fi
    FEDARGS=(); if [ -n "$FED" ]; then FEDARGS=(--federation-config "$FED"); fi
    pkill -f "flower-superlink.*--simulation" || true; sleep 1
    (cd "$D" && "$ROOT/.venv/bin/python" run.py -c "num-server-rounds=$ROUNDS eval-every=1 centralised-epochs=0 run-name='ab$side$i' $CFG" \
       ${FEDARGS[@]+"${FEDARGS[@]}"} --out "$OUT/$side" > "$OUT/$side$i.log" 2>&1)
    echo "$side$i $(jq -c '{eval_s: .median_eval_seconds, train_s: .median_train_round_seconds}' "$OUT"/$side/ab$side$i*/final.json)"
  done
done
