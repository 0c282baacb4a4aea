#!/usr/bin/env bash
# Where the time of Flower's simulation process goes during all-user rounds: a short PFedRec run
# through run.py (ROUNDS rounds, all-user evaluation every round), py-spy sampling the
# flwr-simulation process (ServerApp thread, Flower's dispatch threads, the Ray submit path) from
# round 1 on for SECONDS seconds, then bench/pyspy_top.py on the samples.
#   PYSPY=/path/to/py-spy bash bench/profile_flower.sh          # ROUNDS=4 SECONDS=25 OUT=outputs/profile-flower
# py-spy is not a dependency: `pip install --target /tmp/pyspy-t py-spy` and PYSPY=/tmp/pyspy-t/bin/py-spy.
set -euo pipefail
cd "$(dirname "$0")/.."
PYSPY=${PYSPY:-py-spy}; ROUNDS=${ROUNDS:-4}; SECS=${SECONDS_SAMPLED:-25}; OUT=${OUT:-outputs/profile-flower}
command -v "$PYSPY" >/dev/null || { echo "error: py-spy not found (set PYSPY)" >&2; exit 2; }
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
.venv/bin/python run.py -c "num-server-rounds=$ROUNDS eval-every=1 centralised-epochs=0 run-name='profile'" \
  --out "$OUT/runs" > "$OUT/run.log" 2>&1 &
RUN=$!
PID=""
for _ in $(seq 1 240); do PID=$(pgrep -f "flwr-simulation" | head -1 || true); [ -n "$PID" ] && break; sleep 0.5; done
[ -n "$PID" ] || { echo "error: no flwr-simulation process appeared" >&2; wait $RUN; exit 1; }
for _ in $(seq 1 240); do grep -q "ROUND 1/" "$OUT/run.log" && break; sleep 0.5; done
"$PYSPY" record -p "$PID" -r 200 -d "$SECS" --format raw -o "$OUT/simulation.txt" --nonblocking > "$OUT/py-spy.log" 2>&1 || true
wait $RUN
grep "^round " "$OUT/run.log"
.venv/bin/python bench/pyspy_top.py "$OUT/simulation.txt" --top 20 | tee "$OUT/top.md"
