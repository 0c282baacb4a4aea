#!/usr/bin/env bash
# docs/results.md section 3.2: FedSLLM and the baseline samplers on ML-100K with FedNCF
# (lr 0.01, conf/fedncf.toml), C = 10 %, S = 10 %, 2 local epochs, dim 32, 100 rounds,
# evaluation every 20 rounds. One run per invocation and seed, serially (two simulations at
# once on the 2-core machine run ~2.7x slower each).
#   bash bench/results_fedsllm_fedncf.sh           # seeds 0 1 2 (default)
#   SEEDS="0" bash bench/results_fedsllm_fedncf.sh # one seed
# Writes $OUT/<run-name>-s<seed>/. Pool seeds with bench/tables.py --row NAME=DIR,DIR,...
# Entropy stands for margin and least-confidence (same selection for a binary predictor;
# tests/test_fedsllm_server_tasks.py checks it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/results-fedsllm-fedncf}
SEEDS=${SEEDS:-"0 1 2"}
B="num-server-rounds=100 eval-every=20"
run() { .venv/bin/python run.py --out "$OUT" "$@"; }
for s in $SEEDS; do
  run --seeds "$s" --config conf/fedsllm-fedncf.toml --run-config "$B run-name='fedsllm'"
  run --seeds "$s" --config conf/gfmfr-baseline-fedncf.toml --run-config "$B run-name='base'"
  for x in random entropy cluster; do
    run --seeds "$s" --config conf/fedncf.toml --config conf/fedsllm-$x.toml --run-config "$B run-name='$x'"
  done
done
