#!/usr/bin/env bash
# docs/results.md sections 2.0 and 3.0: GFMFR and FedSLLM on the per-group-optimiser backbones
# (issue 14), every run on the in-process engine (fedmm/inprocess.py: the same ServerApp and
# ClientApp code as `flwr run`, same metrics, no Ray; tests/test_inprocess.py).
#   bash bench/results_issue14.sh gfmfr-main     # PFedRec and FedRAP, alone and + GFMFR, 5 local
#                                                # epochs (the paper's), 200 rounds, seeds 0 1 2
#   bash bench/results_issue14.sh gfmfr-lambda   # PFedRec + GFMFR, seed 0, 100 rounds: base lambda
#                                                # 0.01 / 0.03 (0.1 = the 200-round run cut at 100),
#                                                # KL over all items
#   bash bench/results_issue14.sh gfmfr-sweep    # PFedRec + GFMFR, seed 0, 100 rounds: 3 ablations,
#                                                # LDP delta 1-3, 4 other lambda schedules
#   bash bench/results_issue14.sh fedsllm        # PFedRec, S = 10 %, 2 local epochs, 200 rounds: 7
#                                                # samplers at seed 0; base / random / fedsllm at 1, 2
#   bash bench/results_issue14.sh fedsllm-ml1m   # ML-1M PFedRec, FedSLLM and Random, 100 rounds, seed 0
#   bash bench/results_issue14.sh fedncf         # FedNCF alone and + GFMFR, 5 local epochs, 200 rounds,
#                                                # seeds $SEEDS (default 0 1 2)
# Tables: bench/tables.py --row NAME=RUN_DIR,... (--max-round 100 for the 100-round rows).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/t14}
PART=${1:?part: gfmfr-main | gfmfr-lambda | gfmfr-sweep | fedsllm | fedsllm-ml1m | fedncf}
run() { local out=$1; shift; .venv/bin/python run.py --engine inprocess --out "$OUT/$out" "$@"; }
G="local-epochs=5 eval-every=20"
case $PART in
  gfmfr-main)
    for s in 0 1 2; do
      run gfmfr --seeds $s --config conf/gfmfr-baseline-pfedrec.toml -c "$G run-name='baseline-pfedrec-le5'"
      run gfmfr --seeds $s --config conf/gfmfr-pfedrec.toml -c "$G gfmfr-lambda=0.1 run-name='pfedrec-le5'"
      run gfmfr --seeds $s --config conf/gfmfr-pfedrec.toml -c "$G run-name='pfedrec-le5-l003'"
    done
    for s in 0 1 2; do
      run gfmfr --seeds $s --config conf/gfmfr-baseline-fedrap.toml -c "$G run-name='baseline-fedrap-le5'"
      run gfmfr --seeds $s --config conf/gfmfr-fedrap.toml -c "$G run-name='fedrap-le5'"
    done ;;
  gfmfr-lambda)
    for lam in 0.01 0.03; do
      run gfmfr-sweep --seeds 0 --config conf/gfmfr-pfedrec.toml -c "$G num-server-rounds=100 gfmfr-lambda=$lam run-name='lambda$lam'"
    done
    run gfmfr-sweep --seeds 0 --config conf/gfmfr-pfedrec.toml -c "$G num-server-rounds=100 gfmfr-lambda=0.1 gfmfr-kl-items='all' run-name='kl-all'" ;;
  gfmfr-sweep)
    for x in ablation-random ablation-single ablation-multiple ldp1 ldp2 ldp3 lambda-constant \
             lambda-scale-align lambda-smooth lambda-progressive lambda-smooth-progressive-scale-align; do
      run gfmfr-sweep --seeds 0 --config conf/gfmfr-$x.toml -c "$G num-server-rounds=100 run-name='$x'"
    done ;;
  fedsllm)
    conf() { [ "$1" = fedsllm ] && echo conf/fedsllm-pfedrec.toml || echo "conf/fedsllm-$1.toml"; }
    for smp in base random fedsllm entropy cluster fedselect fale; do
      run fedsllm --seeds 0 --config "$(conf $smp)" -c "eval-every=20 run-name='pfedrec-$smp'"
    done
    for s in 1 2; do for smp in base random fedsllm; do
      run fedsllm --seeds $s --config "$(conf $smp)" -c "eval-every=20 run-name='pfedrec-$smp'"
    done; done ;;
  fedsllm-ml1m)
    run fedsllm-ml1m --seeds 0 --config conf/fedsllm-ml1m.toml -c "num-server-rounds=100 eval-every=20 run-name='fedsllm'"
    run fedsllm-ml1m --seeds 0 --config conf/fedsllm-ml1m.toml -c "num-server-rounds=100 eval-every=20 fedsllm-sampler='random' run-name='random'" ;;
  fedncf)
    for s in ${SEEDS:-0 1 2}; do
      run gfmfr --seeds $s --config conf/gfmfr-baseline-fedncf.toml -c "$G run-name='baseline-fedncf-le5'"
      run gfmfr --seeds $s --config conf/gfmfr-fedncf.toml -c "$G run-name='fedncf-le5'"
    done ;;
  *) echo "unknown part '$PART'" >&2; exit 2 ;;
esac
