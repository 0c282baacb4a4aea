#!/usr/bin/env bash
# Run the lines of a job file through run.py's in-process engine, WORKERS at a time (default 2,
# one per core of the 2-core machine).
#   bash bench/run_jobs.sh bench/issue14-v2.jobs outputs/t19 [WORKERS]
# A line is "SUBDIR run.py-arguments..." (run.py gets --engine inprocess --out OUT/SUBDIR and the
# rest); lines starting with # and blank lines are skipped. The queue is a copy of the file
# (OUT/jobs.txt), so lines can be appended to that copy while it runs. Start and end of every
# job go to OUT/queue.log, each worker's output to OUT/wN.log.
set -euo pipefail
cd "$(dirname "$0")/.."
FILE=${1:?job file}; OUT=${2:?output directory}; WORKERS=${3:-2}
mkdir -p "$OUT"
grep -v '^\s*#' "$FILE" | grep -v '^\s*$' > "$OUT/jobs.txt"
worker() {
  local w=$1 job sub rest
  while true; do
    job=$(flock "$OUT/jobs.lock" bash -c "head -n1 '$OUT/jobs.txt'; sed -i '1d' '$OUT/jobs.txt'")
    [ -z "$job" ] && break
    echo "$(date +%T) w$w START $job" >> "$OUT/queue.log"
    sub=${job%% *}; rest=${job#* }
    if eval ".venv/bin/python run.py --engine inprocess --out '$OUT/$sub' $rest" >> "$OUT/w$w.log" 2>&1
    then echo "$(date +%T) w$w END rc=0 $job" >> "$OUT/queue.log"
    else echo "$(date +%T) w$w END rc=$? $job" >> "$OUT/queue.log"; fi
  done
}
for w in $(seq 1 "$WORKERS"); do worker "$w" & done
wait
