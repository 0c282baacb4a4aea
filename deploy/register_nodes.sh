#!/usr/bin/env bash
# Register SuperNode public keys at a SuperLink that runs with --enable-supernode-auth.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
usage="usage: deploy/register_nodes.sh DEPLOY_DIR SUPERLINK_ADDRESS [FIRST_USER LAST_USER]
  Registers DEPLOY_DIR/keys/node-<u>.pub for u = FIRST_USER..LAST_USER (default: every key there)
  at SUPERLINK_ADDRESS (host:port of deploy/start_superlink.sh), through the connection
  [superlink.$CONNECTION] it writes into DEPLOY_DIR/flwr-home/config.toml (address and
  root-certificates = DEPLOY_DIR/certs/ca.crt). A key registered already is skipped."
check_args 2 4 "$@"
[[ $# -ne 3 ]] || { echo "$usage" >&2; exit 2; }
need flwr
deploy_env "$1"
write_connection "$2" "$DEPLOY/certs/ca.crt"
if [[ $# -eq 4 ]]; then
    [[ "$3" =~ ^[0-9]+$ && "$4" =~ ^[0-9]+$ && $3 -le $4 ]] || die "FIRST_USER..LAST_USER must be integers, FIRST <= LAST"
    users=$(seq "$3" "$4")
else
    users=$(ls "$DEPLOY/keys" 2>/dev/null | sed -n 's/^node-\([0-9][0-9]*\)\.pub$/\1/p' | sort -n)
    [[ -n "$users" ]] || die "no public keys DEPLOY_DIR/keys/node-<u>.pub in $DEPLOY/keys (deploy/make_certs.sh makes them)"
fi
# One `flwr supernode register` per key (~2 s each, mostly CLI start-up): FEDMM_REGISTER_JOBS at once.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
register() {  # register U: writes $tmp/U.out and $tmp/U.rc
    local rc=0
    flwr supernode register "$DEPLOY/keys/node-$1.pub" "$CONNECTION" --name "node-$1" \
        --format json > "$tmp/$1.out" 2>&1 || rc=$?
    echo "$rc" > "$tmp/$1.rc"
}
running=0
for u in $users; do
    [[ -f "$DEPLOY/keys/node-$u.pub" ]] || die "$DEPLOY/keys/node-$u.pub not found"
done
for u in $users; do
    register "$u" &
    running=$((running + 1))
    if (( running >= ${FEDMM_REGISTER_JOBS:-8} )); then wait -n || true; running=$((running - 1)); fi
done
wait
n=0 bad=0
for u in $users; do
    out=$(cat "$tmp/$u.out")
    if [[ "$out" == *'"success": true'* ]]; then
        n=$((n + 1))
    elif [[ "$out" == *"already in use"* ]]; then
        echo "node-$u: registered already"
    else
        echo "error: registering $DEPLOY/keys/node-$u.pub at $2 failed (exit $(cat "$tmp/$u.rc")):" >&2
        echo "$out" >&2
        bad=$((bad + 1))
    fi
done
(( bad == 0 )) || { echo "error: $bad key(s) not registered; the others: $n registered now" >&2; exit 1; }
echo "registered $n SuperNode key(s) at $2 (connection '$CONNECTION' in $FLWR_HOME/config.toml)"
