#!/usr/bin/env bash
# docs/results.md section 3.2: does FedSLLM keep selecting the same positives? Seed 0, 100 rounds,
# C = S = 10 %, on the code with the coverage bookkeeping (661f2a5 on; the figures in the doc: d047d1c). Serially, one at a time.
#   bash bench/fedsllm_overlap.sh
#   .venv/bin/python bench/selection_overlap.py outputs/results-fedsllm-overlap/*-s0
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/results-fedsllm-overlap}
B="num-server-rounds=100 eval-every=20"
run() { .venv/bin/python run.py --out "$OUT" --seeds 0 "$@"; }
run --config conf/fedsllm-pfedrec.toml --run-config "$B run-name='pfedrec-fedsllm'"
run --config conf/fedsllm-random.toml --run-config "$B run-name='pfedrec-random'"
run --config conf/fedsllm-entropy.toml --run-config "$B run-name='pfedrec-entropy'"
run --config conf/fedsllm-fedncf.toml --run-config "$B run-name='fedncf-fedsllm'"
run --config conf/fedncf.toml --config conf/fedsllm-random.toml --run-config "$B run-name='fedncf-random'"
