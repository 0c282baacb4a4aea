#!/usr/bin/env bash
# docs/results.md section 2: GFMFR on ML-100K (text + knowledge-graph modalities).
#   bash bench/results_gfmfr.sh main    # 200 rounds x seeds 0 1 2, PFedRec / FedNCF / FedRAP + GFMFR;
#                                       # same protocol as bench/results_base.sh, whose runs are the
#                                       # backbone-alone rows
#   bash bench/results_gfmfr.sh sweep   # one seed, 100 rounds, PFedRec: backbone alone, GFMFR
#                                       # defaults, 3 ablations, 4 other lambda schedules, LDP
#                                       # delta 1-3, one modality at a time
#   bash bench/results_gfmfr.sh lambda  # one seed, 100 rounds: the lambda probes that chose the
#                                       # default base weight (constant 0.1 / 1, smooth-progressive 0.01)
#   bash bench/results_gfmfr.sh fedncf-probe  # seed 0, 100 rounds, FedNCF + GFMFR: defaults and
#                                       # constant lambda 0.1 (docs/results.md section 2.2.1)
# Each run.py call writes <run-name>-s<seed>/ and <run-name>-summary.json under $OUT/<part>.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/results-gfmfr}
PART=${1:-all}
run() { .venv/bin/python run.py --out "$OUT/$1" "${@:2}"; }
if [[ $PART == all || $PART == sweep ]]; then
  B="num-server-rounds=100 eval-every=20"
  run sweep --seeds 0 --config conf/gfmfr-pfedrec.toml --run-config "$B run-name='gfmfr'"
  [[ -d $OUT/sweep/pfedrec-s0 ]] ||   # backbone alone, no GFMFR code involved: kept if present
    run sweep --seeds 0 --config conf/gfmfr-baseline-pfedrec.toml --run-config "$B run-name='pfedrec'"
  for x in ablation-random ablation-single ablation-multiple \
           lambda-constant lambda-scale-align lambda-smooth lambda-progressive ldp1 ldp2 ldp3; do
    run sweep --seeds 0 --config conf/gfmfr-$x.toml --run-config "$B run-name='$x'"
  done
  for m in text kg; do
    run sweep --seeds 0 --config conf/gfmfr-pfedrec.toml --run-config "$B gfmfr-modalities='$m' run-name='only-$m'"
  done
fi
if [[ $PART == all || $PART == lambda ]]; then
  B="num-server-rounds=100 eval-every=20"
  run lambda --seeds 0 --config conf/gfmfr-pfedrec.toml --run-config "$B gfmfr-lambda-schedule='constant' gfmfr-lambda=0.1 run-name='constant-0.1'"
  run lambda --seeds 0 --config conf/gfmfr-pfedrec.toml --run-config "$B gfmfr-lambda-schedule='constant' gfmfr-lambda=1.0 run-name='constant-1'"
  run lambda --seeds 0 --config conf/gfmfr-pfedrec.toml --run-config "$B gfmfr-lambda=0.01 run-name='smooth-progressive-0.01'"
fi
if [[ $PART == all || $PART == fedncf-probe ]]; then
  B="num-server-rounds=100 eval-every=20"
  run fedncf-probe --seeds 0 --config conf/gfmfr-fedncf.toml --run-config "$B run-name='gfmfr-fedncf-sizematch'"
  run fedncf-probe --seeds 0 --config conf/gfmfr-fedncf.toml --run-config "$B gfmfr-lambda-schedule='constant' gfmfr-lambda=0.1 run-name='gfmfr-fedncf-const0.1'"
fi
if [[ $PART == all || $PART == main ]]; then
  for b in pfedrec fedncf fedrap; do
    run main --seeds 0 1 2 --config conf/gfmfr-$b.toml --run-config "eval-every=20 run-name='gfmfr-$b'"
  done
fi
