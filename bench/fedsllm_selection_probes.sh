#!/usr/bin/env bash
# FedSLLM selection-rule probes (issue 14 follow-up, docs/results.md section 3.0.2): PFedRec,
# ML-100K, S = 10 %, seed 0, 200 rounds (validation every 20; the rounds-100 column is read from
# the same runs), in-process engine, one run at a time. The prototype LLM writes the prototypes
# once (fedsllm-proto-update-every=1000): the packaged SmolLM2 returns the same list at every
# revision anyway (section 3.6), and this keeps a probe at the cost of a Cluster run.
#   OUT=/work/main/outputs/t16/fedsllm-probe bash bench/fedsllm_selection_probes.sh [NAME ...]
set -euo pipefail
OUT=${OUT:-outputs/t16/fedsllm-probe}
PY=${PY:-.venv/bin/python}
P="eval-every=20 fedsllm-proto-update-every=1000"
probe() {
  local name=$1; shift
  nice -n 5 $PY run.py --engine inprocess --out "$OUT" --seeds 0 "$@" > "$OUT-$name-s0.log" 2>&1
}
declare -A CMD=(
  [all-prob]="--config conf/fedsllm-pfedrec.toml -c \"$P fedsllm-pool='all' fedsllm-score='probability' run-name='all-prob'\""
  [unseen-prob]="--config conf/fedsllm-pfedrec.toml -c \"$P fedsllm-pool='unseen' fedsllm-score='probability' run-name='unseen-prob'\""
  [all-hard]="--config conf/fedsllm-pfedrec.toml -c \"$P fedsllm-pool='all' fedsllm-score='hardness' run-name='all-hard'\""
  [all-sim]="--config conf/fedsllm-pfedrec.toml -c \"$P fedsllm-pool='all' fedsllm-score='similarity' run-name='all-sim'\""
  [unseen-hard]="--config conf/fedsllm-pfedrec.toml -c \"$P fedsllm-pool='unseen' fedsllm-score='hardness' run-name='unseen-hard'\""
)
mkdir -p "$(dirname "$OUT")"
for name in "${@:-unseen-prob all-prob all-hard all-sim}"; do
  for n in $name; do
    echo "$(date -u +%T) probe $n: run.py --engine inprocess --out $OUT --seeds 0 ${CMD[$n]}"
    eval probe "$n" ${CMD[$n]}
  done
done
