#!/usr/bin/env bash
# Stop exactly the processes this deployment started: the PIDs in DEPLOY_DIR/pids/*.pid (and the
# helper processes they spawned), never others of the same name.
set -euo pipefail
usage="usage: deploy/stop.sh DEPLOY_DIR [NAME...]
  Stops the processes of DEPLOY_DIR/pids/NAME.pid (default: every *.pid there, SuperNodes first):
  SIGTERM, then SIGKILL after 20 s; their child processes (Flower's SuperExec, ClientApp and
  ServerApp processes) are stopped with them. Removes the PID files of stopped processes."
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
check_args 1 1000 "$@"
dir=$1
shift
[[ -d "$dir/pids" ]] || die "$dir/pids not found: not a deployment directory (nothing stopped)"
if [[ $# -gt 0 ]]; then
    files=()
    for n in "$@"; do files+=("$dir/pids/$n.pid"); done
else  # SuperNodes before the SuperLink, so they do not retry against a stopped one
    shopt -s nullglob
    files=("$dir"/pids/supernode-*.pid "$dir"/pids/superlink.pid)
fi

descendants() {  # descendants PID: every process below PID (by parent id), deepest last
    local c
    for c in $(pid_children "$1"); do
        echo "$c"
        descendants "$c"
    done
}

stopped=0
for f in "${files[@]}"; do
    [[ -f "$f" ]] || { echo "no $f (not started, or stopped already)"; continue; }
    pid=$(cat "$f")
    [[ "$pid" =~ ^[0-9]+$ ]] || die "$f does not hold a PID: '$pid'"
    if ! pid_alive "$pid"; then
        echo "$(basename "$f" .pid): pid $pid not running"
        rm -f "$f"
        continue
    fi
    args=$(pid_args "$pid")
    if [[ "$args" != *flower-super* ]]; then  # the PID was reused by an unrelated process
        echo "$(basename "$f" .pid): pid $pid is not a Flower process now ($args); left alone"
        rm -f "$f"
        continue
    fi
    kids=$(descendants "$pid")
    kill -TERM "$pid"
    for ((t = 0; t < 100 && $(pid_alive "$pid" && echo 1 || echo 0); t++)); do sleep 0.2; done
    if pid_alive "$pid"; then
        echo "$(basename "$f" .pid): pid $pid ignored SIGTERM for 20 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Then Flower's helpers it spawned (SuperExec, ServerApp/ClientApp processes): SIGTERM, and
    # SIGKILL to any left after 10 s.
    for k in $kids; do kill -TERM "$k" 2>/dev/null || true; done
    for k in $kids; do
        for ((t = 0; t < 50 && $(pid_alive "$k" && echo 1 || echo 0); t++)); do sleep 0.2; done
        if pid_alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi
    done
    rm -f "$f"
    stopped=$((stopped + 1))
    echo "$(basename "$f" .pid): stopped pid $pid${kids:+ (and its children $(echo $kids))}"
done
echo "stopped $stopped process(es) of $dir"
