#!/usr/bin/env bash
# docs/results.md section 3: ML-1M (6,040 clients), PFedRec, FedSLLM (SmolLM2) vs Base (all
# samples), C = 10 %, S = 10 %, 2 local epochs, seed 0. Only 20 rounds (one evaluation, at the
# end): a 200-round ML-1M run does not fit the 2-core machine's budget.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/results-fedsllm-ml1m}
B="num-server-rounds=20 eval-every=20"
run() { .venv/bin/python run.py --out "$OUT" --seeds 0 "$@"; }
run --config conf/fedsllm-ml1m.toml --run-config "$B fedsllm-sampler='base' run-name='base'"
run --config conf/fedsllm-ml1m.toml --run-config "$B run-name='fedsllm'"
