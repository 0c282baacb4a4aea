#!/usr/bin/env bash
# Same seed, same metrics across a refactor: runs PFedRec and FedRAP for 6 rounds through Flower
# on a tiny dataset with the code of commit $1 (a temporary worktree) and with this checkout,
# and compares every round's train loss and validation metric and the final test metrics.
#   bash bench/same_result.sh 9f9c7bd
set -euo pipefail
OLD=${1:?usage: bench/same_result.sh <old-commit>}
HERE="$(cd "$(dirname "$0")/.." && pwd)"
TMP=$(mktemp -d)
git -C "$HERE" worktree add -q --detach "$TMP/old" "$OLD"
# Stop only the local simulation SuperLinks this script started (their working directory is
# $TMP or this checkout): a SuperLink keeps the code of the checkout that started it.
stop_links() {
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q "flower-superlink.*--simulation"; then
      cwd=$(readlink "$p/cwd" 2>/dev/null || true)
      case "$cwd" in "$TMP"*|"$HERE") kill "${p#/proc/}" 2>/dev/null || true ;; esac
    fi
  done
  sleep 2
}
trap 'stop_links; git -C "$HERE" worktree remove --force "$TMP/old"' EXIT
"$HERE/.venv/bin/python" -c "
import sys; sys.path.insert(0, '$HERE/tests')
from pathlib import Path
from conftest import write_tiny_grouplens
write_tiny_grouplens(Path('$TMP/gl'))"
RC="dataset='grouplens:$TMP/gl' num-server-rounds=6 eval-every=3 fraction-train=0.5 centralised-epochs=2"
for tree in "$TMP/old" "$HERE"; do
  stop_links   # each checkout needs its own local SuperLink
  for b in pfedrec fedrap; do
    (cd "$TMP" && PYTHONPATH="$tree" "$HERE/.venv/bin/python" "$tree/run.py" --out "$TMP/out-$(basename "$tree")" \
        --run-config "$RC backbone='$b' cache-dir='$TMP/cache-$(basename "$tree")' run-name='$b'" > "$TMP/$b.log" 2>&1)
  done
done
"$HERE/.venv/bin/python" - "$TMP/out-old" "$TMP/out-$(basename "$HERE")" <<'PY'
import json, sys
from pathlib import Path
old, new = map(Path, sys.argv[1:])
ok = True
for b in ("pfedrec", "fedrap"):
    ro = [json.loads(l) for l in (old / f"{b}-s0/rounds.jsonl").read_text().splitlines()]
    rn = [json.loads(l) for l in (new / f"{b}-s0/rounds.jsonl").read_text().splitlines()]
    fo, fn = (json.loads((d / f"{b}-s0/final.json").read_text()) for d in (old, new))
    same = ([r["train-loss"] for r in ro] == [r["train-loss"] for r in rn]
            and [r.get("valid_sampled_ndcg@10") for r in ro] == [r.get("valid_sampled_ndcg@10") for r in rn]
            and fo["test"] == fn["test"])
    ok &= same
    print(f"{b}: {'identical' if same else 'DIFFERENT'} (test sampled HR@10 {fo['test']['sampled_hr@10']:.4f} "
          f"vs {fn['test']['sampled_hr@10']:.4f})")
sys.exit(0 if ok else 1)
PY
