#!/usr/bin/env bash
# Start one Flower SuperNode per user (partition-id = user index), in the background.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
usage="usage: deploy/start_supernodes.sh DEPLOY_DIR SUPERLINK_ADDRESS NUM_USERS FIRST_USER LAST_USER [BASE_PORT]
  Starts SuperNodes for users FIRST_USER..LAST_USER (0-based, of NUM_USERS in the dataset),
  connecting to SUPERLINK_ADDRESS (host:port) over TLS (DEPLOY_DIR/certs/ca.crt) and
  authenticating with DEPLOY_DIR/keys/node-<u> (register node-<u>.pub first:
  deploy/register_nodes.sh). Each gets --node-config \"partition-id=<u> num-partitions=NUM_USERS\"
  and its own local runtime port BASE_PORT + (u - FIRST_USER) on 127.0.0.1 (default 9094;
  'auto': free ports the OS picks). Writes DEPLOY_DIR/pids/supernode-<u>.pid and
  DEPLOY_DIR/logs/supernode-<u>.log. Stop them with deploy/stop.sh DEPLOY_DIR."
check_args 5 6 "$@"
need flower-supernode
deploy_env "$1"
link=$2 num=$3 first=$4 last=$5 base=${6:-9094}
for v in "$num" "$first" "$last"; do
    [[ "$v" =~ ^[0-9]+$ ]] || die "NUM_USERS, FIRST_USER and LAST_USER must be integers, got '$v'"
done
(( first <= last && last < num )) || die "need FIRST_USER <= LAST_USER < NUM_USERS, got $first..$last of $num"
[[ "$base" == auto || "$base" =~ ^[0-9]+$ ]] || die "BASE_PORT must be a number or 'auto', got '$base'"
ca="$DEPLOY/certs/ca.crt"
[[ -f "$ca" ]] || die "$ca not found (copy certs/ca.crt of deploy/make_certs.sh here)"
for ((u = first; u <= last; u++)); do
    [[ -f "$DEPLOY/keys/node-$u" ]] || die "$DEPLOY/keys/node-$u not found (the private key of user $u)"
    pidf="$DEPLOY/pids/supernode-$u.pid"
    if [[ -f "$pidf" ]] && pid_alive "$(cat "$pidf")"; then
        die "the SuperNode of user $u runs already (pid $(cat "$pidf")); deploy/stop.sh $1 supernode-$u stops it"
    fi
done

py="$(dirname "$(command -v flower-supernode)")/python"
[[ -x "$py" ]] || py=python3
free_port() {  # a port on 127.0.0.1 the OS reports free
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

started=()
for ((u = first; u <= last; u++)); do
    if [[ "$base" == auto ]]; then port=$(free_port); else port=$((base + u - first)); fi
    port_open 127.0.0.1 "$port" && die "port $port on 127.0.0.1 is in use (user $u); pick another BASE_PORT (SuperNodes started before it keep running: deploy/stop.sh $1 stops them)"
    mkdir -p "$DEPLOY/supernodes/node-$u"
    cd "$DEPLOY/supernodes/node-$u"
    nohup flower-supernode --superlink "$link" --root-certificates "$ca" \
        --auth-supernode-private-key "$DEPLOY/keys/node-$u" \
        --node-config "partition-id=$u num-partitions=$num" --port "$port" \
        > "$DEPLOY/logs/supernode-$u.log" 2>&1 < /dev/null &
    echo $! > "$DEPLOY/pids/supernode-$u.pid"
    started+=("$u:$!:$port")
done
cd "$DEPLOY"
# Wait until each SuperNode is activated at the SuperLink ("SuperNode ID:" in its log) or has
# exited (refused: unregistered key, bad certificate), for up to FEDMM_SUPERNODE_WAIT seconds.
failed=0 pending=1
for ((t = 0; pending && t < ${FEDMM_SUPERNODE_WAIT:-90} * 5; t++)); do
    pending=0
    for s in "${started[@]}"; do
        IFS=: read -r u pid port <<< "$s"
        pid_alive "$pid" && ! grep -q "SuperNode ID:" "$DEPLOY/logs/supernode-$u.log" && pending=1
    done
    (( pending )) && sleep 0.2
done
for s in "${started[@]}"; do
    IFS=: read -r u pid port <<< "$s"
    if ! pid_alive "$pid"; then
        echo "error: the SuperNode of user $u (pid $pid) exited; last lines of $DEPLOY/logs/supernode-$u.log:" >&2
        grep -v "^INFO:" "$DEPLOY/logs/supernode-$u.log" | tail -n 6 >&2 || true
        rm -f "$DEPLOY/pids/supernode-$u.pid"
        failed=$((failed + 1))
    elif ! grep -q "SuperNode ID:" "$DEPLOY/logs/supernode-$u.log"; then
        echo "warning: the SuperNode of user $u (pid $pid) is not connected yet (still retrying); see $DEPLOY/logs/supernode-$u.log" >&2
    fi
done
echo "started $((${#started[@]} - failed)) SuperNode(s) for users $first..$last of $num -> $link; PIDs in $DEPLOY/pids/supernode-<u>.pid"
echo "stop exactly them: deploy/stop.sh $DEPLOY"
(( failed == 0 )) || exit 1
