#!/usr/bin/env bash
# M4 (docs/benchmarks.md): GET /v1/devices/{random id} on one node of 3 (2/3 of the ids owned by the
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
# CPU spent by the bench process (all 3 nodes, broker excluded) and by wrk during the run: the
# figure that does not depend on what else runs on the machine.
tick=$(getconf CLK_TCK)
read -r u0 s0 < <(awk '{print $14, $15}' /proc/"$pid"/stat)
wrkout=$(mktemp /tmp/gateway-m4-wrk-XXXXXX.log)
/usr/bin/time -f "%U %S" -o "$wrkout.time" wrk -t"$threads" -c"$connections" -d"$duration" --latency -s "$script" "$url" | tee "$wrkout"
read -r u1 s1 < <(awk '{print $14, $15}' /proc/"$pid"/stat)
requests=$(awk '/requests in/ {print $1}' "$wrkout")
read -r wu ws < "$wrkout.time"
awk -v u0="$u0" -v s0="$s0" -v u1="$u1" -v s1="$s1" -v tick="$tick" -v n="$requests" -v wu="$wu" -v ws="$ws" 'BEGIN {
    bench = ((u1 - u0) + (s1 - s0)) / tick; wrk = wu + ws
    printf "cpu: bench %.1f us/request, wrk %.1f us/request; load of 2 dedicated cores at this cost: %.0f requests/s\n", bench / n * 1e6, wrk / n * 1e6, 2 / ((bench + wrk) / n)
}'
rm -f "$wrkout" "$wrkout.time"
uptime
touch "$stop"
wait "$pid" 2>/dev/null || true
tail -n +2 "$out" | grep -v '^READY' || true
