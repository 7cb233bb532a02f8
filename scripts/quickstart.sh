#!/usr/bin/env bash
# Quick start, command 1 of the README: installs what is missing (Debian packages), builds the
# gateway and the device simulator in release mode, and runs the demo on its embedded default —
# a Mosquitto on 127.0.0.1:1883, 3 gateway nodes (HTTP on 8081–8083), 1,000 simulated devices —
# then prints where to look. Ctrl-C stops everything cleanly. Extra arguments go to
# `swarm-gateway demo` (see `--help`), e.g. `bash scripts/quickstart.sh --devices 200`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== build (release): swarm-gateway, swarm-devices — the first build takes several minutes"
swift build -c release --product swarm-devices
swift build -c release --product swarm-gateway

exec .build/release/swarm-gateway demo "$@"
