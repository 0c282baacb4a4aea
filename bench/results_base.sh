#!/usr/bin/env bash
# docs/results.md, backbones alone: ML-100K, 200 rounds, 10% clients, 2 local epochs, dim 32, 3 seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/results-base}
# Each backbone with its default optimisers; run.py adds the MostPop and centralised rows.
for b in pfedrec fedmf fedncf fedrap fedpergnn; do
  .venv/bin/python run.py --out "$OUT" --seeds 0 1 2 --run-config "backbone='$b' eval-every=20 run-name='$b'"
done
