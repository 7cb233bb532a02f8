#!/usr/bin/env bash
# Installs the Debian packages the gateway's build and tests need:
#   mosquitto          the broker (tests and the gateway's first-run mode start it as a child process)
#   mosquitto-clients  mosquitto_pub / mosquitto_sub / mosquitto_rr (tests, debugging)
#   libmosquitto-dev   headers and libmosquitto.pc for the CMosquitto system-library target
#   pkg-config         so SwiftPM finds libmosquitto
#   curl               the executable's tests and the README's examples talk HTTP with it
#   openssl            the TLS tests and benchmarks make a throwaway cluster CA and node
#                      certificates with it (TestCertificates); scripts/cluster-tls-certs.sh
#   iproute2           `ip` (namespaces, veths, routes) and `tc` (netem) for swarm-chaos
#   postgresql         the server the store's tests and benchmarks run against: scripts/with-postgres.sh
#                      starts a throwaway cluster of it (the package's own cluster and service are
#                      never used); the gateway's default store (SQLite) needs no system package
#
# Optional groups (not installed unless asked; the normal test run never pays for them):
#   --with-browser     chromium, for the dashboard's headless-browser check (scripts/dashboard-check.sh)
#
# Idempotent and quick: when every package is already installed it only runs `dpkg-query`.
# `apt-get update` runs only when something is missing. Runs as root (no sudo).
#
# The package's own service is never started by this script: a temporary policy-rc.d (exit 101)
# blocks service starts during the install when the machine does not already have one. Tests never
# use a system broker; they start their own on a free loopback port.
set -euo pipefail

packages=(mosquitto mosquitto-clients libmosquitto-dev pkg-config curl openssl iproute2 postgresql)

for argument in "$@"; do
    case "$argument" in
        --with-browser) packages+=(chromium) ;;
        *) echo "install-deps: unknown option $argument (known: --with-browser)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all present (${packages[*]})"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing ${missing[*]} and not root; install them with apt-get as root" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"

policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    added_policy=1
fi
cleanup() {
    if [[ $added_policy -eq 1 ]]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

echo "install-deps: done"
