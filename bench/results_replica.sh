#!/usr/bin/env bash
# docs/results.md §1.1, backbones alone in the single-process replica (bench/replica.py):
# ML-100K, 200 rounds, 10% clients, 2 local epochs, dim 32, evaluation every 20 rounds.
# One JSON per backbone and seed under $OUT (validation-selected test metrics); seed 0 of
# every backbone first, then seeds 1 and 2.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/replica200}
SEEDS=${SEEDS:-"0 1 2"}
BACKBONES=${BACKBONES:-"pfedrec fedmf fedncf fedrap fedpergnn"}
mkdir -p "$OUT"
for s in $SEEDS; do
  for b in $BACKBONES; do
    f="$OUT/$b-s$s.json"
    [ -s "$f" ] && continue
    .venv/bin/python bench/replica.py --eval-every 20 \
        -c "backbone='$b' seed=$s num-server-rounds=200" > "$OUT/$b-s$s.log"
    tail -n 1 "$OUT/$b-s$s.log" > "$f"
  done
done
