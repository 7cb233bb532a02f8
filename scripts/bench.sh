#!/usr/bin/env bash
# One entry point for the benchmarks (docs/benchmarks.md): builds the release products, runs the
# bench programs and writes one JSON report {"figures": [{"id", "median", "unit", ...}]}.
#
#   bash scripts/bench.sh [--quick] [--skip-build] --json FILE
#
# Full: swarm-bench at N = 10,000 (3 runs) and N = 100,000 (1 run); gateway-bench M1 on 1 and 3
# nodes at QoS 0 and QoS 1; M4 (when wrk is installed); the core micro-benchmark.
# --quick: one run of swarm-bench at N = 100,000, M1 on 3 nodes at QoS 0 and 1, M4 and the core
# micro-benchmark: for checking a change.
#
# Every figure has "n" (names, for W figures), "runs" and "values"; a rate has its CPU time per
# operation beside it in "cpuPerOp" (µs, user + system of the processes doing the work divided by
# the operations), a figure that does not depend on what else ran on the machine.
# Ids: as printed by the programs (W1.par.rate, W3.cast.rate, M1.ratio, M1.shed, M1.cpu.per.msg,
# M4.rate, M4.cpu.per.req, core.applied.rate, …); M1 variants other than 3 nodes at QoS 0 carry
# their setup in the id: M1.n1.q0.ratio, M1.n3.q1.shed, …
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
build=1
json=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --skip-build) build=0 ;;
        --json) json="$2"; shift ;;
        *) echo "usage: bash scripts/bench.sh [--quick] [--skip-build] --json FILE" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$json" ] || { echo "usage: bash scripts/bench.sh [--quick] [--skip-build] --json FILE" >&2; exit 2; }

work=$(mktemp -d /tmp/swarm-bench-all-XXXXXX)
trap 'rm -rf "$work"' EXIT
log() { echo "[bench $(date -u +%H:%M:%S)] $*"; }

if [ "$build" = 1 ]; then
    for product in swarm-node swarm-bench swarm-devices gateway-bench gateway-http-bench swarm-sim; do
        log "swift build -c release --product $product"
        swift build -c release --product "$product"
    done
fi
bin=.build/release

log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# W1–W7 (swarm-bench prints its figures and writes JSON with per-run values).
if [ "$quick" = 0 ]; then
    log "swarm-bench --n 10000 --runs 3"
    "$bin/swarm-bench" --n 10000 --runs 3 --json "$work/w-10000.json" || log "swarm-bench N=10000 failed (figures so far kept)"
fi
log "swarm-bench --n 100000 --runs 1"
"$bin/swarm-bench" --n 100000 --runs 1 --json "$work/w-100000.json" || log "swarm-bench N=100000 failed (figures so far kept)"

# M1: the flood, per nodes × QoS.
if [ "$quick" = 0 ]; then m1="1:0 1:1 3:0 3:1"; else m1="3:0 3:1"; fi
for setup in $m1; do
    nodes=${setup%:*}
    qos=${setup#*:}
    log "gateway-bench --nodes $nodes --qos $qos --devices 1000 --seconds 5 --workloads M1"
    "$bin/gateway-bench" --nodes "$nodes" --qos "$qos" --devices 1000 --seconds 5 --workloads M1 \
        --json "$work/m1-n$nodes-q$qos.json" || log "gateway-bench M1 n$nodes q$qos failed"
done

# M4: GETs by id through the HTTP API (needs wrk).
if command -v wrk > /dev/null; then
    log "scripts/bench-m4.sh 1000 1 32 20s"
    bash scripts/bench-m4.sh 1000 1 32 20s | tee "$work/m4.log" || log "M4 failed"
else
    log "M4 skipped: wrk is not installed"
fi

# Core: applied remote changes and ring lookups (one core).
log "swarm-sim --bench"
"$bin/swarm-sim" --bench | tee "$work/core.log" || log "swarm-sim --bench failed"

log "load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work" "$json" "$quick" <<'EOF'
import json, os, re, statistics, sys
work, out, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
figures = []

def add(entry):
    figures.append(entry)

# swarm-bench: {"figures": [{id, label, setup, unit, median, values, target, met}]}
for n in (10000, 100000):
    path = os.path.join(work, f"w-{n}.json")
    if not os.path.exists(path):
        continue
    data = json.load(open(path))
    byid = {f["id"]: f for f in data["figures"]}
    for f in data["figures"]:
        if f["id"].endswith(".cpu"):
            continue
        entry = {"id": f["id"], "median": f["median"], "unit": f["unit"], "n": n, "runs": data["runs"],
                 "values": f["values"], "label": f["label"], "setup": f["setup"]}
        if f.get("target"):
            entry["target"], entry["met"] = f["target"], f.get("met")
        cpu = byid.get(f["id"] + ".cpu")
        if cpu:
            entry["cpuPerOp"] = cpu["median"]
            entry["cpuPerOpValues"] = cpu["values"]
        add(entry)

# gateway-bench: [{id, label, value, unit, setup, target, met}]
for name in sorted(os.listdir(work)):
    m = re.match(r"m1-n(\d)-q(\d)\.json$", name)
    if not m:
        continue
    nodes, qos = m.group(1), m.group(2)
    data = json.load(open(os.path.join(work, name)))
    byid = {f["id"]: f for f in data}
    prefix = "M1." if (nodes, qos) == ("3", "0") else f"M1.n{nodes}.q{qos}."
    for f in data:
        fid = prefix + f["id"][len("M1."):] if f["id"].startswith("M1.") else f["id"]
        entry = {"id": fid, "median": f["value"], "unit": f["unit"], "runs": 1, "values": [f["value"]],
                 "label": f["label"], "setup": f["setup"], "nodes": int(nodes), "qos": int(qos)}
        if f.get("target"):
            entry["target"], entry["met"] = f["target"], f.get("met")
        if f["id"] in ("M1.gateway", "M1.ratio") and "M1.cpu.per.msg" in byid:
            entry["cpuPerOp"] = byid["M1.cpu.per.msg"]["value"]
        add(entry)

# M4: wrk's Requests/sec and the script's "cpu: bench X us/request, wrk Y us/request".
path = os.path.join(work, "m4.log")
if os.path.exists(path):
    text = open(path).read()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    cpu = re.search(r"cpu: bench ([\d.]+) us/request, wrk ([\d.]+) us/request", text)
    setup = "GET /v1/devices/{random id} on node 1 of 3 in one process, 1000 devices, wrk -t1 -c32 -d20s"
    if rate:
        entry = {"id": "M4.rate", "median": float(rate.group(1)), "unit": "/s", "runs": 1, "values": [float(rate.group(1))],
                 "label": "GETs/s on one node", "setup": setup, "target": "≥ 20k/s", "met": float(rate.group(1)) >= 20000}
        if cpu:
            entry["cpuPerOp"] = float(cpu.group(1))
        add(entry)
    if cpu:
        add({"id": "M4.cpu.per.req", "median": float(cpu.group(1)), "unit": "µs", "runs": 1, "values": [float(cpu.group(1))],
             "label": "bench process CPU per request (serving and owning side)", "setup": setup,
             "target": "≤ 25 µs", "met": float(cpu.group(1)) <= 25})
        add({"id": "M4.cpu.wrk.per.req", "median": float(cpu.group(2)), "unit": "µs", "runs": 1, "values": [float(cpu.group(2))],
             "label": "wrk CPU per request", "setup": setup})

# Core micro-benchmark: one thread, so CPU per operation is 1/rate.
path = os.path.join(work, "core.log")
if os.path.exists(path):
    text = open(path).read()
    def rounds(pattern):
        return [float(v) for v in re.findall(pattern, text)]
    for fid, label, pattern, target in [
        ("core.lookup.rate", "ring lookups/s (3 nodes × 128 points, 100k names)", r"ring lookups.*?: (\d+) lookups/s", None),
        ("core.applied.rate", "applied remote changes/s, tables growing", r"applied remote changes \(batches of 64, 1M new names, group 'all', tables growing\): (\d+)", 2e6),
        ("core.applied.reserved.rate", "applied remote changes/s, capacity reserved", r"capacity reserved\): (\d+)", 2e6),
        ("core.applied.steady.rate", "applied remote changes/s, steady state (100k names)", r"steady state: [^)]*\): (\d+)", 2e6),
    ]:
        values = rounds(pattern)
        if not values:
            continue
        median = statistics.median(values)
        entry = {"id": fid, "median": median, "unit": "/s", "runs": len(values), "values": values, "label": label,
                 "setup": "swarm-sim --bench, one thread", "cpuPerOp": 1e6 / median}
        if target:
            entry["target"], entry["met"] = "≥ 2M/s", median >= target
        add(entry)

report = {"quick": quick, "machine": f"{os.cpu_count()} cores", "figures": figures}
json.dump(report, open(out, "w"), indent=1, ensure_ascii=False)
print(f"wrote {out}: {len(figures)} figures")
for f in figures:
    cpu = f" (cpu {f['cpuPerOp']:.2f} µs/op)" if isinstance(f.get("cpuPerOp"), (int, float)) else ""
    mark = "" if f.get("met") is None else (" ✔" if f["met"] else " ✘")
    n = f" n={f['n']}" if "n" in f else ""
    median = f["median"]
    text = "n/a" if median is None else f"{median:.4g}"
    print(f"  {f['id']}{n}: {text} {f['unit']}{cpu}{mark}")
EOF
