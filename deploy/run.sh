#!/usr/bin/env bash
# Start a fedmm run on a deployed SuperLink and judge it by its final.json.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
usage="usage: deploy/run.sh DEPLOY_DIR SUPERLINK_ADDRESS [run.py OPTIONS...]
  Writes the connection [superlink.$CONNECTION] (address = SUPERLINK_ADDRESS, root-certificates =
  DEPLOY_DIR/certs/ca.crt) into DEPLOY_DIR/flwr-home/config.toml, then runs
  run.py --superlink $CONNECTION --out DEPLOY_DIR/outputs OPTIONS, i.e.
  flwr run <repo> $CONNECTION --run-config ... --stream. Success is judged by the run's
  final.json (flwr run --stream exits 0 even when the run fails): exit 0 only with it, 1 when a
  run failed (failed.json says why), 2 on a bad config, 130 on Ctrl-C. --timeout SECONDS and
  Ctrl-C stop the Flower run itself (flwr stop). Run it where the ServerApp's files are visible
  (the SuperLink machine): OPTIONS --out must be an absolute path there.
  OPTIONS: --run-config \"KEY=VALUE ...\", --config FILE.toml, --seeds S..., --out DIR, --timeout S,
  or --resume RUN_DIR (continue an interrupted run from its checkpoint; no --out is added)
  (python run.py --help)."
check_args 2 1000 "$@"
need flwr
deploy_env "$1"
link=$2
shift 2
write_connection "$link" "$DEPLOY/certs/ca.crt"
args=("$@")
has_out=0
# --resume RUN_DIR takes its out-dir from RUN_DIR/config.json (and refuses --out).
for a in "$@"; do [[ "$a" == --out || "$a" == --out=* || "$a" == --resume || "$a" == --resume=* ]] && has_out=1; done
(( has_out )) || args=(--out "$DEPLOY/outputs" "${args[@]}")
py="$(dirname "$(command -v flwr)")/python"
[[ -x "$py" ]] || py=python3
exec "$py" "$FEDMM_DIR/run.py" --superlink "$CONNECTION" "${args[@]}"
