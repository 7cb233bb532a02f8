#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this): installs missing system packages,
# builds, and runs every test target. Works on a fresh Debian machine with the Swift toolchain.
#
#   SWARM_SIM_SEEDS=N   seeds for the cluster simulation test (default 1000)
#
# Not run here: the dashboard's headless-Chromium check (bash scripts/dashboard-check.sh), which
# needs chromium (install-deps.sh --with-browser) and adds about 2.5 minutes; see docs/gateway.md.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== build (debug, with tests)"
swift build --build-tests

echo "== tests (all but the simulation)"
# The simulation keeps both cores busy; running it alone keeps the timing-sensitive socket
# tests of the other targets from being starved.
swift test --skip-build --skip SwarmSimulationTests

echo "== cluster simulation"
# Prints "simulation: <S> seeds, <O> operations, <F> faults, <V> violations".
swift test --skip-build --filter SwarmSimulationTests
