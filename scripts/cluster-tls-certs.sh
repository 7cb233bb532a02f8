#!/usr/bin/env bash
# Makes a cluster CA and one certificate per node for mutual TLS between gateway nodes
# (clusterTLSCertificate / clusterTLSKey / clusterTLSCA; docs/deployment.md).
#
#   bash scripts/cluster-tls-certs.sh DIR NODE [NODE...]
#
# Writes DIR/ca.pem (give it to every node), DIR/ca.key (keep it offline: it signs new
# members), and DIR/NODE.pem + DIR/NODE.key per node. P-256 keys; the CA is valid 10 years,
# node certificates 1 year (CA_DAYS / NODE_DAYS override). An existing CA in DIR is reused, so
# running it again with a new node name adds a member. Needs the openssl CLI.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 DIR NODE [NODE...]" >&2
    exit 64
fi
dir=$1
shift
mkdir -p "$dir"
umask 077
if [[ ! -f "$dir/ca.pem" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -days "${CA_DAYS:-3650}" \
        -subj "/CN=swarm-gateway cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    echo "made the cluster CA $dir/ca.pem"
fi
for node in "$@"; do
    extensions=$(mktemp)
    trap 'rm -f "$extensions"' EXIT
    # Both server and client use: a node accepts connections and dials them.
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth,clientAuth" > "$extensions"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/$node.key" -out "$dir/$node.csr" -subj "/CN=$node" 2>/dev/null
    openssl x509 -req -in "$dir/$node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -out "$dir/$node.pem" -days "${NODE_DAYS:-365}" -extfile "$extensions" 2>/dev/null
    rm -f "$dir/$node.csr" "$extensions"
    chmod 644 "$dir/$node.pem"
    echo "made $dir/$node.pem and $dir/$node.key"
done
chmod 644 "$dir/ca.pem"
