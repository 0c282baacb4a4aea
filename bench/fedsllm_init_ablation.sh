#!/usr/bin/env bash
# docs/results.md section 3: is FedSLLM's lead over Random the selection or the autoencoder
# initialisation of the item table? Random selection with the same initialisation
# (fedsllm-ae-init-baselines = true), PFedRec, ML-100K, seed 0, 100 rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/results-fedsllm}
.venv/bin/python run.py --out "$OUT" --seeds 0 --config conf/fedsllm-random.toml \
  --run-config "num-server-rounds=100 eval-every=20 fedsllm-ae-init-baselines=true run-name='random-ae-init'"
