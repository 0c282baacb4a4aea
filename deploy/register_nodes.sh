#!/usr/bin/env bash
# Register SuperNode public keys at a SuperLink that runs with --enable-supernode-auth.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
usage="usage: deploy/register_nodes.sh DEPLOY_DIR SUPERLINK_ADDRESS [FIRST_USER LAST_USER]
  Registers DEPLOY_DIR/keys/node-<u>.pub for u = FIRST_USER..LAST_USER (default: every key there)
  at SUPERLINK_ADDRESS (host:port of deploy/start_superlink.sh), through the connection
  [superlink.$CONNECTION] it writes into DEPLOY_DIR/flwr-home/config.toml (address and
  root-certificates = DEPLOY_DIR/certs/ca.crt). A key registered already is skipped."
[[ ($# -eq 2 || $# -eq 4) && "$1" != -* ]] || { echo "$usage" >&2; exit 2; }
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
n=0
for u in $users; do
    pub="$DEPLOY/keys/node-$u.pub"
    [[ -f "$pub" ]] || die "$pub not found"
    out=$(flwr supernode register "$pub" "$CONNECTION" --name "node-$u" --format json 2>&1) || true
    if [[ "$out" == *'"success": true'* ]]; then
        n=$((n + 1))
    elif [[ "$out" == *"already in use"* ]]; then
        echo "node-$u: registered already"
    else
        echo "error: registering $pub at $2 failed:" >&2
        echo "$out" >&2
        exit 1
    fi
done
echo "registered $n SuperNode key(s) at $2 (connection '$CONNECTION' in $FLWR_HOME/config.toml)"
