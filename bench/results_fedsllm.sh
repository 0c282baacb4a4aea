#!/usr/bin/env bash
# docs/results.md section 3: FedSLLM and the baseline samplers on ML-100K with PFedRec,
# C = 10 %, S = 10 %, 2 local epochs, dim 32, 100 rounds, evaluation every 20 rounds.
#   bash bench/results_fedsllm.sh        # writes $OUT/<run-name>-s<seed>/ and *-summary.json
#   SAMPLER_SEEDS="1 2" ONLY_SAMPLERS=1 bash bench/results_fedsllm.sh   # only the samplers, seeds 1-2
# "Base" (all samples) is the backbone alone: the same 100-round PFedRec runs as
# bench/results_gfmfr.sh sweep (seed 0) plus seeds 1 and 2 here. Entropy, margin and
# least-confidence select the same items for a binary predictor (all rank by |p - 0.5|;
# tests/test_fedsllm_server_tasks.py checks it), so one "entropy" run stands for the three.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/results-fedsllm}
B="num-server-rounds=100 eval-every=20"
run() { .venv/bin/python run.py --out "$OUT" "$@"; }
# SAMPLER_SEEDS: the seeds of the random / entropy / cluster runs. docs/results.md pools seed 0
# (an earlier session) with seeds 1 and 2 (SAMPLER_SEEDS="1 2" ONLY_SAMPLERS=1, commit e398235).
SAMPLER_SEEDS=${SAMPLER_SEEDS:-"0 1 2"}
if [ -z "${ONLY_SAMPLERS:-}" ]; then
  run --seeds 0 1 2 --config conf/fedsllm-pfedrec.toml --run-config "$B run-name='fedsllm'"
  run --seeds 1 2 --config conf/gfmfr-baseline-pfedrec.toml --run-config "$B run-name='base'"
fi
for s in random entropy cluster; do
  run --seeds $SAMPLER_SEEDS --config conf/fedsllm-$s.toml --run-config "$B run-name='$s'"
done
