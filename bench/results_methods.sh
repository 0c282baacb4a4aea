#!/usr/bin/env bash
# docs/results.md, GFMFR and FedSLLM on ML-100K with PFedRec: same protocol, rounds and seeds as
# bench/results_base.sh (200 rounds, 10% clients, 2 local epochs, dim 32, eval every 20 rounds),
# so the backbone-alone rows come from outputs/results-base. Ordered by priority.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/results-methods}
R="eval-every=20"
.venv/bin/python run.py --out "$OUT" --seeds 0 1 2 --config conf/gfmfr-pfedrec.toml --run-config "$R run-name='gfmfr-pfedrec'"
.venv/bin/python run.py --out "$OUT" --seeds ${FEDSLLM_SEEDS:-0 1 2} --config conf/fedsllm-pfedrec.toml --run-config "$R run-name='fedsllm-pfedrec'"
for s in random cluster entropy; do
  .venv/bin/python run.py --out "$OUT" --seeds ${BASELINE_SEEDS:-0 1 2} --config conf/fedsllm-$s.toml --run-config "$R run-name='fedsllm-$s-pfedrec'"
done
