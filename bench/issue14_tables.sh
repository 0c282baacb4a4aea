#!/usr/bin/env bash
# The tables of docs/results.md sections 2.0 and 3.0 from the runs of bench/results_issue14.sh
# (test metrics in percent at the best validation round; each row followed by its MostPop and
# centralised rows where run.py wrote them). A run that has not finished is left out of its row.
#   bash bench/issue14_tables.sh                                  # outputs/t14, sweeps cut at 100 rounds
#   OUT=outputs/t20 bash bench/issue14_tables.sh          # the runs of bench/issue14-v2.jobs, -ml1m.jobs, -v3.jobs
#   OUT=docs/data/issue14-v2 bash bench/issue14_tables.sh # the same, from the figures kept in the repo
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/t14}
M="sampled_hr@10 sampled_ndcg@10 full_hr@50 full_ndcg@50"
seeds() { local d=$1 n=$2 s out=""; for s in 0 1 2; do
  [ -s "$OUT/$d/$n-s$s/final.json" ] && out="$out,$OUT/$d/$n-s$s"; done; echo "${out#,}"; }
ROWS=(); PAIRS=(); declare -A NSEEDS=()
row() { local name=$1 d=$2 n=$3 r; r=$(seeds "$d" "$n")
  [ -n "$r" ] && ROWS+=(--row "$name=$r") && NSEEDS[$name]=$(tr , '\n' <<< "$r" | wc -l); }
pair() { # pair A B: per-seed A minus B under the table, where both rows have the same seed count
  [ -n "${NSEEDS[$1]:-}" ] && [ "${NSEEDS[$1]}" = "${NSEEDS[$2]:-}" ] && PAIRS+=(--paired "$1:$2"); }
table() { # table [tables.py options]: the rows collected by row() and pair(), then cleared
  .venv/bin/python bench/tables.py --metrics $M "$@" "${ROWS[@]}" "${PAIRS[@]}"; echo
  ROWS=(); PAIRS=(); NSEEDS=(); }

echo "## GFMFR vs the backbone alone (5 local epochs, 200 rounds)"
row "PFedRec alone" gfmfr baseline-pfedrec-le5; row "PFedRec + GFMFR (lambda 0.03)" gfmfr pfedrec-le5-l003
row "PFedRec + GFMFR (lambda 0.1)" gfmfr pfedrec-le5
row "FedRAP alone" gfmfr baseline-fedrap-le5; row "FedRAP + GFMFR (lambda 0.03)" gfmfr fedrap-le5
row "FedNCF alone" gfmfr baseline-fedncf-le5; row "FedNCF + GFMFR (lambda 0.03)" gfmfr fedncf-le5
row "FedNCF + GFMFR, standardised clustering, groups >= 5" gfmfr fedncf-le5-std-min5
pair "PFedRec + GFMFR (lambda 0.03)" "PFedRec alone"; pair "FedRAP + GFMFR (lambda 0.03)" "FedRAP alone"
pair "FedNCF + GFMFR, standardised clustering, groups >= 5" "FedNCF alone"
table

echo "## GFMFR on PFedRec: lambda, KL items, ablations, LDP (seed 0, first ${SWEEP_ROUNDS:-100} rounds)"
S=$OUT/gfmfr-sweep
ROWS=(--row "PFedRec alone=$OUT/gfmfr/baseline-pfedrec-le5-s0")
[ -s "$OUT/gfmfr/pfedrec-le5-s0/final.json" ] && ROWS+=(--row "lambda 0.1=$OUT/gfmfr/pfedrec-le5-s0")
[ -s "$OUT/gfmfr/pfedrec-le5-l003-s0/final.json" ] && ROWS+=(--row "lambda 0.03 (default)=$OUT/gfmfr/pfedrec-le5-l003-s0")
for x in lambda0.1 lambda0.01 lambda0.03 kl-all ablation-random ablation-single ablation-multiple ldp1 ldp2 ldp3 \
         lambda-constant lambda-scale-align lambda-smooth lambda-progressive lambda-smooth-progressive-scale-align; do
  [ -s "$S/$x-s0/final.json" ] && ROWS+=(--row "$x=$S/$x-s0")
done
table --max-round "${SWEEP_ROUNDS:-100}" --reference first

echo "## FedSLLM and the samplers (PFedRec, S = 10 %, 2 local epochs, 200 rounds)"
for smp in base random random-pass fedsllm entropy cluster fedselect fale; do row "$smp" fedsllm "pfedrec-$smp"; done
for smp in random random-pass base cluster fedselect fale entropy; do pair fedsllm "$smp"; done
table --reference first

echo "## FedSLLM and the samplers (FedNCF, S = 10 %, 2 local epochs, 200 rounds)"
for smp in base random random-pass fedsllm entropy cluster fedselect fale; do row "$smp" fedsllm "fedncf-$smp"; done
for smp in random random-pass base cluster fedselect fale entropy; do pair fedsllm "$smp"; done
table --reference first

echo "## ML-1M, PFedRec, S = 10 %, 100 rounds"
row "Base" fedsllm-ml1m base; row "FedSLLM" fedsllm-ml1m fedsllm; row "Random" fedsllm-ml1m random
table
