#!/usr/bin/env bash
# docs/results.md section 2: how strong should the distillation be? PFedRec + GFMFR on ML-100K,
# seed 0, 100 rounds (the protocol of `bench/results_gfmfr.sh sweep`), lambda magnitudes:
#   constant 1, and the smooth-progressive schedule with the former defaults (base 1, cap 10).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/results-gfmfr}/lambda
B="num-server-rounds=100 eval-every=20"
run() { .venv/bin/python run.py --out "$OUT" --seeds 0 "$@"; }
run --config conf/gfmfr-pfedrec.toml --run-config "$B gfmfr-lambda-schedule='constant' gfmfr-lambda=1.0 run-name='constant-1'"
run --config conf/gfmfr-pfedrec.toml --run-config "$B gfmfr-lambda=1.0 gfmfr-lambda-max=10.0 run-name='smooth-progressive-1-max10'"
