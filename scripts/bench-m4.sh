#!/usr/bin/env bash
# M4 (BENCHMARKS.md): GET /v1/devices/{random id} on one node of 3 (2/3 of the ids owned by the
# other two), with wrk. Needs a release build of gateway-http-bench and Debian's wrk.
#
#   swift build -c release --product gateway-http-bench
#   scripts/bench-m4.sh [devices] [wrk threads] [connections] [duration]
set -euo pipefail
devices=${1:-1000}
threads=${2:-1}
connections=${3:-32}
duration=${4:-20s}
port=${M4_PORT:-18080}
script=$(mktemp /tmp/gateway-m4-XXXXXX.lua)
out=$(mktemp /tmp/gateway-m4-XXXXXX.log)
stop=$(mktemp -u /tmp/gateway-m4-stop-XXXXXX)
bench=.build/release/gateway-http-bench
seconds=$(( ${duration%s} + 40 ))

"$bench" --devices "$devices" --seconds "$seconds" --port "$port" --script "$script" --stop-file "$stop" > "$out" 2>&1 &
pid=$!
# The bench stops its broker itself (stop file, or --seconds at the latest).
trap 'touch "$stop"; wait "$pid" 2>/dev/null || true; rm -f "$script" "$stop"' EXIT
for _ in $(seq 1 600); do
    grep -q '^READY' "$out" && break
    kill -0 "$pid" 2>/dev/null || { cat "$out"; exit 1; }
    sleep 0.1
done
grep -q '^READY' "$out" || { echo "bench did not get ready"; cat "$out"; exit 1; }
cat "$out"
url=$(awk '/^READY/ {print $2}' "$out")
# Warm-up, then the measured run.
wrk -t"$threads" -c"$connections" -d3s -s "$script" "$url" > /dev/null
echo "+ wrk -t$threads -c$connections -d$duration --latency -s $script $url"
wrk -t"$threads" -c"$connections" -d"$duration" --latency -s "$script" "$url"
touch "$stop"
wait "$pid" 2>/dev/null || true
tail -n +2 "$out" | grep -v '^READY' || true
