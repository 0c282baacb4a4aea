#!/usr/bin/env bash
# Make the TLS certificates of a SuperLink and one SuperNode authentication key pair per user.
set -euo pipefail
usage="usage: deploy/make_certs.sh DEPLOY_DIR NUM_NODES [HOST_OR_IP...]
  DEPLOY_DIR/certs/ca.crt      CA certificate: to every machine (SuperLink, SuperNodes, flwr run)
  DEPLOY_DIR/certs/ca.key      CA key: keep it on the machine that made it, nowhere else
  DEPLOY_DIR/certs/server.pem  SuperLink certificate (SANs: 127.0.0.1, localhost, HOST_OR_IP...)
  DEPLOY_DIR/certs/server.key  its key: SuperLink machine only
  DEPLOY_DIR/keys/node-<u>     SuperNode auth private key of user u: only the machine running user u
  DEPLOY_DIR/keys/node-<u>.pub its public key: registered at the SuperLink (deploy/register_nodes.sh)
HOST_OR_IP: every address the SuperNodes and flwr use to reach the SuperLink (IPs or DNS names)."
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
check_args 2 1000 "$@"
[[ "$2" =~ ^[1-9][0-9]*$ ]] || die "NUM_NODES must be a positive integer, got '$2'"$'\n'"$usage"
need openssl ssh-keygen
dir=$1 num=$2
shift 2
mkdir -p "$dir/certs" "$dir/keys"
certs="$(cd "$dir/certs" && pwd)" keys="$(cd "$dir/keys" && pwd)"
[[ ! -e "$certs/ca.crt" ]] || die "$certs/ca.crt exists already; nothing overwritten (use a new DEPLOY_DIR)"

# SANs: loopback always (the SuperLink reaches its own runtime API on 127.0.0.1), then the hosts.
sans="IP.1 = 127.0.0.1
DNS.1 = localhost"
ni=1 nd=1
for h in "$@"; do
    if [[ "$h" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$h" == *:* ]]; then
        ni=$((ni + 1)); sans+=$'\n'"IP.$ni = $h"
    else
        nd=$((nd + 1)); sans+=$'\n'"DNS.$nd = $h"
    fi
done
cat > "$certs/server.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
O = fedmm
CN = fedmm-superlink
[ext]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = @alt
[alt]
$sans
CNF
umask 077  # private keys readable by their owner only
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 -subj "/O=fedmm/CN=fedmm-ca" \
    -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
openssl req -new -newkey rsa:2048 -nodes -sha256 -config "$certs/server.cnf" \
    -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
    -CAcreateserial -days 365 -sha256 -extfile "$certs/server.cnf" -extensions ext \
    -out "$certs/server.pem" 2>/dev/null
rm -f "$certs/server.csr"
chmod 644 "$certs/ca.crt" "$certs/server.pem"
openssl verify -CAfile "$certs/ca.crt" "$certs/server.pem" >/dev/null

# SuperNode authentication: ECDSA P-384 key pairs (OpenSSH format), as Flower expects.
for ((u = 0; u < num; u++)); do
    [[ -e "$keys/node-$u" ]] || ssh-keygen -q -t ecdsa -b 384 -N "" -C "fedmm-node-$u" -f "$keys/node-$u"
done
echo "made $certs/{ca.crt,ca.key,server.pem,server.key} (SANs: 127.0.0.1 localhost $*)"
echo "made $num SuperNode key pairs $keys/node-{0..$((num - 1))}{,.pub}"
