#!/usr/bin/env bash
# Start one Flower SuperLink with TLS and SuperNode authentication, in the background.
set -euo pipefail
usage="usage: deploy/start_superlink.sh DEPLOY_DIR [HOST] [PORT]
  Serves Flower's Fleet, Control and runtime APIs on HOST:PORT (default 0.0.0.0:8000; open only
  PORT to the lab). Needs DEPLOY_DIR/certs/{ca.crt,server.pem,server.key} (deploy/make_certs.sh).
  Writes DEPLOY_DIR/superlink/state.db, DEPLOY_DIR/logs/superlink.{log,out} and
  DEPLOY_DIR/pids/superlink.pid; its working directory is DEPLOY_DIR/superlink (a relative
  out-dir of a run lands there). Stop it with deploy/stop.sh DEPLOY_DIR."
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
check_args 1 3 "$@"
need flower-superlink
deploy_env "$1"
host=${2:-0.0.0.0} port=${3:-8000}
[[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
c="$DEPLOY/certs"
for f in ca.crt server.pem server.key; do
    [[ -f "$c/$f" ]] || die "$c/$f not found; run deploy/make_certs.sh $1 NUM_NODES [HOST...] first"
done
pidf="$DEPLOY/pids/superlink.pid"
if [[ -f "$pidf" ]] && pid_alive "$(cat "$pidf")"; then
    die "a SuperLink of this deployment runs already (pid $(cat "$pidf")); deploy/stop.sh $1 stops it"
fi
probe=$host
[[ "$host" != 0.0.0.0 ]] || probe=127.0.0.1
port_open "$probe" "$port" && die "$probe:$port is in use already; pick another PORT"
mkdir -p "$DEPLOY/superlink"
cd "$DEPLOY/superlink"
nohup flower-superlink \
    --ssl-ca-certfile "$c/ca.crt" --ssl-certfile "$c/server.pem" --ssl-keyfile "$c/server.key" \
    --enable-supernode-auth --disable-runtime-dependency-installation \
    --host "$host" --port "$port" \
    --database "$DEPLOY/superlink/state.db" --log-file "$DEPLOY/logs/superlink.log" \
    > "$DEPLOY/logs/superlink.out" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$pidf"
wait_port "$probe" "$port" "$pid" 60 "$DEPLOY/logs/superlink.out"
echo "SuperLink pid $pid serving on $host:$port (TLS, SuperNode auth on); log $DEPLOY/logs/superlink.log"
echo "stop exactly it: deploy/stop.sh $DEPLOY   (or: kill $pid)"
