#!/usr/bin/env bash
# Wall-clock benchmark, side by side: the official PFedRec code (Zhangcx19/IJCAI-23-PFedRec, run
# unmodified from a git mirror) against fedmm's PFedRec through Flower's simulation engine.
# ML-100K, 10 % of the 943 clients per round, $ROUNDS rounds; everything else at each code's defaults.
#   bash bench/vs_official.sh                  # RUNS=2 pairs, ROUNDS=100
#   RUNS=3 NICE=10 OUT=outputs/vs-official-b bash bench/vs_official.sh
# Env: OFFICIAL_MIRROR (bare git dir of the official repo), OFFICIAL_REV (HEAD), OFFICIAL_DEPS
# (pip --target dir for pandas 2.x, see below), PY (python with torch + fedmm's deps), NICE (0).
# Output, in $OUT: farm-bench.txt (the timing report), official.log / fedmm.log (every run's own
# output), fedmm-runs/ (fedmm run dirs), hr.txt / hr.json (HR@10, NDCG@10, per-round seconds).
#
# How the official code is run (train.py, engine.py, data.py untouched; only the launcher differs):
#  * its ML-100K data file (data/ml-100k/ratings.dat) ships with the repo; it is rebuilt from
#    recbole's ml-100k.inter (the same 100,000 ratings) only when absent;
#  * pandas 2.x (pandas 3's copy-on-write silently skips data.py's chained assignment that binarises
#    the ratings, so BCE would train on targets 1..5): pip-installed once into $OFFICIAL_DEPS;
#  * bench/official_launcher.py restores Python <= 3.10's random.sample on sets, stubs tensorboardX
#    and, without CUDA, makes .cuda() a no-op (its docstring says why).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
RUNS=${RUNS:-2}
ROUNDS=${ROUNDS:-100}
NICE=${NICE:-0}
OUT=${OUT:-outputs/vs-official}
OFFICIAL_MIRROR=${OFFICIAL_MIRROR:-/work/.mirror/Zhangcx19+IJCAI-23-PFedRec/repo}
OFFICIAL_REV=${OFFICIAL_REV:-HEAD}
OFFICIAL_DEPS=${OFFICIAL_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/fedmm-bench/official-pydeps}
if [ -z "${PY:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
  else PY="$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir)/../.venv/bin/python"; fi
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
[ -e "$OUT/fedmm-runs" ] && { echo "error: $OUT/fedmm-runs exists; use a fresh OUT" >&2; exit 2; }
WORK=$(mktemp -d)
SRC="$WORK/official"

# Local simulation SuperLinks this script leaves behind (flwr run starts one in this checkout and
# it outlives the command): stop only those that were not running before.
links_here() {
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q "flower-superlink.*--simulation"; then
      [ "$(readlink "$p/cwd" 2>/dev/null)" = "$ROOT" ] && echo "${p#/proc/}"
    fi
  done
  return 0
}
BEFORE=" $(links_here | tr '\n' ' ') "
cleanup() {
  for pid in $(links_here); do case "$BEFORE" in *" $pid "*) ;; *) kill "$pid" 2>/dev/null || true ;; esac; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- preparation (not timed) ----
mkdir -p "$SRC"
# The code and ML-100K only: a mirror may lack the big blobs (other datasets, the figure)
# (git archive stops at the first absent blob), so the top-level files are read one by one.
for f in $(git --git-dir="$OFFICIAL_MIRROR" ls-tree --name-only "$OFFICIAL_REV" | grep -E '\.py$|^(README\.md|LICENSE|requirements\.txt)$'); do
  git --git-dir="$OFFICIAL_MIRROR" show "$OFFICIAL_REV:$f" > "$SRC/$f"
done
mkdir -p "$SRC/data/ml-100k"
if git --git-dir="$OFFICIAL_MIRROR" cat-file -e "$OFFICIAL_REV:data/ml-100k/ratings.dat" 2>/dev/null; then
  git --git-dir="$OFFICIAL_MIRROR" show "$OFFICIAL_REV:data/ml-100k/ratings.dat" > "$SRC/data/ml-100k/ratings.dat"
fi
mkdir -p "$SRC/log" "$SRC/sh_result"          # its README: "mkdir log; mkdir sh_result"
if [ ! -s "$SRC/data/ml-100k/ratings.dat" ]; then  # uid,mid,rating,timestamp (comma, no header)
  "$PY" - "$SRC/data/ml-100k/ratings.dat" <<'EOF'
import importlib.util, pathlib, sys
import pandas as pd
root = pathlib.Path(importlib.util.find_spec("recbole").submodule_search_locations[0])
df = pd.read_csv(root / "dataset_example/ml-100k/ml-100k.inter", sep="\t")
df.columns = ["uid", "mid", "rating", "timestamp"]
assert len(df) == 100000, len(df)
df.to_csv(sys.argv[1], header=False, index=False)
EOF
fi
if ! PYTHONPATH="$OFFICIAL_DEPS" "$PY" -c "import pandas, pytz, sys; sys.exit(pandas.__version__ >= '3')" 2>/dev/null; then
  "$PY" -m pip install -q --target "$OFFICIAL_DEPS" --no-deps "pandas==2.3.3" pytz
fi

OFFICIAL_CMD="nice -n $NICE $PY $ROOT/bench/official_launcher.py $SRC --dataset ml-100k --clients_sample_ratio 0.1 --num_round $ROUNDS"
FEDMM_CMD="nice -n $NICE $PY run.py -c 'num-server-rounds=$ROUNDS eval-every=10 centralised-epochs=0' --out $OUT/fedmm-runs"
rm -f "$OUT/official.log" "$OUT/fedmm.log"
{
  echo "A (fedmm):    $FEDMM_CMD"
  echo "B (official): PYTHONPATH=$OFFICIAL_DEPS $OFFICIAL_CMD   # official rev $(git --git-dir="$OFFICIAL_MIRROR" rev-parse "$OFFICIAL_REV")"
} | tee "$OUT/commands.txt"

# ---- timed: A B A B ... ----
# PYTHONPATH: fedmm from this checkout (A; the worktree's own code), pandas 2.x first (B only needs
# it; fedmm never sees OFFICIAL_DEPS because A's sh resets PYTHONPATH).
set +e
PYTHONUNBUFFERED=1 PYTHONPATH="$OFFICIAL_DEPS" farm-bench -n "$RUNS" --warmup 0 --timeout 3600 \
  --vs "sh -c 'exec $OFFICIAL_CMD >>$OUT/official.log 2>&1'" \
  -- sh -c "PYTHONPATH=$ROOT exec $FEDMM_CMD >>$OUT/fedmm.log 2>&1" | tee "$OUT/farm-bench.txt"
rc=${PIPESTATUS[0]}
set -e
echo "farm-bench exit status: $rc" | tee -a "$OUT/farm-bench.txt"

"$PY" "$ROOT/bench/vs_official_hr.py" --official-log "$OUT/official.log" \
  --fedmm-runs "$OUT/fedmm-runs" --json "$OUT/hr.json" | tee "$OUT/hr.txt"
