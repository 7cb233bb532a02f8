#!/usr/bin/env bash
# The dashboard in a real headless Chromium against a real demo cluster.
#
#   bash scripts/dashboard-check.sh            3 nodes, 200 devices (about 1–2 minutes once built)
#   bash scripts/dashboard-check.sh --full     the default demo: 3 nodes, 1,000 devices; saves the
#                                              screenshot to docs/dashboard.png
#   options: --release (build and run release binaries), --screenshot PATH, --keep-logs
#
# Steps: installs what is missing (scripts/install-deps.sh --with-browser: mosquitto…, chromium),
# builds swarm-gateway and swarm-devices (debug unless --release), starts `swarm-gateway demo` on
# free loopback ports, waits until every node is ready and every device is registered, then loads
# the dashboard of gw-1 in `chromium --headless` twice: `--dump-dom` after a virtual time budget
# (the page polls meanwhile), and `--screenshot --window-size=1400,1000`. The numbers the page
# shows (data-testid / data-value in the dumped DOM) are compared with the API's answers fetched
# with curl right after: connected node, node count, nodes up, each node's state, reachability
# and devices, total devices, the members of `all`, a device's twin, a group query, and a non-zero
# message rate. Then a device provisioned offline through the API (tags, two desired patches with
# If-Match and a stale one answered 412, two commands queued with ?ttl=): the device view must show
# its desired and reported versions, its tags and its pending commands as the API has them, and
# the live-events view (watched while the backend keeps patching) only that device's desired
# events, newest first, each carrying a change the backend made. Then one node with an API token: the page must show the "enter the API token"
# prompt and no cluster numbers. Exits non-zero on any mismatch (after 3 attempts: the cluster is
# live). The demo is stopped cleanly (SIGINT: devices, then each node drains, then the broker) in
# every case.
set -euo pipefail
cd "$(dirname "$0")/.."

full=0
config=debug
screenshot=""
keep_logs=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --full) full=1 ;;
        --release) config=release ;;
        --screenshot) screenshot="$2"; shift ;;
        --keep-logs) keep_logs=1 ;;
        *) echo "dashboard-check: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
nodes=3
if [[ $full -eq 1 ]]; then devices=1000; duration=300; else devices=200; duration=120; fi
if [[ -z "$screenshot" ]]; then
    if [[ $full -eq 1 ]]; then screenshot=docs/dashboard.png; else screenshot=""; fi
fi

started=$(date +%s)
bash scripts/install-deps.sh --with-browser
for tool in curl python3 chromium; do
    command -v "$tool" >/dev/null || { echo "dashboard-check: $tool is required" >&2; exit 1; }
done

echo "== build ($config): swarm-devices, swarm-gateway"
swift build -c "$config" --product swarm-devices
swift build -c "$config" --product swarm-gateway
bin=$(swift build -c "$config" --show-bin-path)

work=$(mktemp -d /tmp/swarm-dashboard-check.XXXXXX)
[[ -n "$screenshot" ]] || screenshot="$work/dashboard.png"
demo_pid=""
token_pid=""
stop_token_node() {
    if [[ -n "$token_pid" ]] && kill -0 "$token_pid" 2>/dev/null; then
        kill -TERM "$token_pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$token_pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$token_pid" 2>/dev/null || true
        wait "$token_pid" 2>/dev/null || true
    fi
}
cleanup() {
    local status=$?
    stop_token_node
    if [[ -n "$demo_pid" ]] && kill -0 "$demo_pid" 2>/dev/null; then
        echo "== stopping the demo (pid $demo_pid)"
        kill -INT "$demo_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$demo_pid" 2>/dev/null; then
            echo "dashboard-check: the demo did not stop in 75 s; killing it" >&2
            kill -KILL "$demo_pid" 2>/dev/null || true
        fi
        wait "$demo_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 || $keep_logs -eq 1 ]]; then
        echo "dashboard-check: logs in $work"
    else
        rm -rf "$work"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Free ports: the broker, cluster base+1…n, HTTP base+1…n.
for _ in $(seq 1 20); do
    base=$(( 20000 + (RANDOM % 120) * 100 ))   # below the ephemeral range (32768+)
    broker_port=$base; cluster_base=$((base + 10)); http_base=$((base + 20))
    ok=1
    for port in $broker_port $(seq $((cluster_base + 1)) $((cluster_base + nodes))) $(seq $((http_base + 1)) $((http_base + nodes))); do
        port_free "$port" || { ok=0; break; }
    done
    [[ $ok -eq 1 ]] && break
done
[[ $ok -eq 1 ]] || { echo "dashboard-check: no free ports found" >&2; exit 1; }
url="http://127.0.0.1:$((http_base + 1))"

echo "== demo: $nodes nodes, $devices devices (broker $broker_port, HTTP $((http_base + 1))–$((http_base + nodes)), logs $work)"
"$bin/swarm-gateway" demo --nodes "$nodes" --devices "$devices" --duration "$duration" \
    --broker-port "$broker_port" --cluster-base "$cluster_base" --http-base "$http_base" --logs "$work/demo" \
    > "$work/demo.out" 2>&1 &
demo_pid=$!

echo "== waiting for readiness and for all $devices devices"
deadline=$(( $(date +%s) + 180 ))
stable=0
while true; do
    if ! kill -0 "$demo_pid" 2>/dev/null; then
        echo "dashboard-check: the demo exited:" >&2; cat "$work/demo.out" >&2; exit 1
    fi
    ready=1
    for i in $(seq 1 "$nodes"); do
        curl -fsS -m 2 "http://127.0.0.1:$((http_base + i))/readyz" >/dev/null 2>&1 || { ready=0; break; }
    done
    if [[ $ready -eq 1 ]]; then
        counts=$(curl -fsS -m 5 "$url/v1/cluster" 2>/dev/null | python3 -c '
import json, sys
view = json.load(sys.stdin)
print(view["devices"], sum(n["devices"] for n in view["nodes"]), sum(n["state"] == "up" for n in view["nodes"]))' 2>/dev/null || echo "0 0 0")
        if [[ "$counts" == "$devices $devices $nodes" ]]; then stable=$((stable + 1)); else stable=0; fi
        [[ $stable -ge 3 ]] && break
    fi
    if [[ $(date +%s) -gt $deadline ]]; then
        echo "dashboard-check: not ready in 180 s (last: devices, hosted, nodes up = ${counts:-none})" >&2; exit 1
    fi
    sleep 1
done
echo "   ready after $(( $(date +%s) - started )) s"

chrome() {
    # Root needs --no-sandbox; a throwaway profile keeps every run alike (no cached token).
    local profile
    profile=$(mktemp -d "$work/chromium-profile.XXXXXX")
    timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
        --hide-scrollbars --user-data-dir="$profile" --window-size=1400,1000 --virtual-time-budget=20000 "$@" \
        2>>"$work/chromium.log"
}

page="$url/?groups=thermostats,meters,trackers&device=thermo-0001&query=meters&fields=reported,online"
attempt=1
while true; do
    echo "== chromium --dump-dom (attempt $attempt): $page"
    chrome --dump-dom "$page" > "$work/dom.html"
    curl -fsS -m 5 "$url/v1/cluster" > "$work/cluster.json"
    curl -fsS -m 5 "$url/v1/groups/all" > "$work/all.json"
    curl -fsS -m 5 "$url/v1/groups/meters" > "$work/meters.json"
    curl -fsS -m 5 "$url/v1/devices/thermo-0001" > "$work/twin.json"
    if python3 - "$work" "$nodes" "$devices" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from dashboard_dom import Page, Checks

work, nodes, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
parser = Page(f"{work}/dom.html")
first = parser.first
checks = Checks(38)
expect = checks.expect

view = json.load(open(f"{work}/cluster.json"))
all_members = json.load(open(f"{work}/all.json"))
meters = json.load(open(f"{work}/meters.json"))
twin = json.load(open(f"{work}/twin.json"))
api_nodes = {n["name"]: n for n in view["nodes"]}

expect("updates (>= 3 polls)", int(parser.body.get("data-updates", "0")) >= 3, True)
expect("connected node", first("connected-node", "text"), view["node"])
expect("node count", first("node-count"), len(view["nodes"]))
expect("node count is the demo's", len(view["nodes"]), nodes)
expect("nodes up", first("nodes-up"), sum(n["state"] == "up" for n in view["nodes"]))
expect("cluster devices", first("cluster-devices"), view["devices"])
expect("cluster devices are the demo's", view["devices"], devices)
expect("devices hosted (sum over nodes)", first("devices-hosted"), sum(n["devices"] for n in view["nodes"]))
expect("registry size", first("registry-size"), view["registrySize"])
expect("node rows", sorted(parser.rows), sorted(api_nodes))
for name, row in sorted(parser.rows.items()):
    node = api_nodes.get(name, {})
    expect(f"{name} state", row.get("node-state"), node.get("state"))
    expect(f"{name} reachable", row.get("node-reachable"), str(node.get("reachable")).lower())
    expect(f"{name} devices", row.get("node-devices"), node.get("devices"))
expect("group all count", first("group-count", **{"data-group": "all"}), all_members["count"])
expect("group meters count", first("group-count", **{"data-group": "meters"}), meters["count"])
expect("twin id", first("twin-id", "text"), twin["id"])
expect("twin node", first("twin-node", "text"), twin["node"])
expect("twin online", first("twin-online"), str(twin["online"]).lower())
replies, missing = first("query-count"), first("query-missing-count")
expect("query replies + missing = meters", (int(replies or -1) + int(missing or -1)), meters["count"])
received = first("rate-received")
expect("received/s is a positive number", received not in (None, "") and float(received) > 0, True)
sys.exit(checks.summary())
PY
    then
        break
    fi
    if [[ $attempt -ge 3 ]]; then
        echo "dashboard-check: FAILED — the page does not match the API (DOM: $work/dom.html)" >&2
        keep_logs=1
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done

echo "== a device provisioned offline: tags, desired versions (If-Match), a queued command; its live desired events"
dev="dash-offline-$RANDOM"
json() { curl -fsS -m 10 -H 'Content-Type: application/json' "$@"; }
json -X PUT -d '{"tags":{"site":"lab-7","owner":"ops-team"},"groups":["dashcheck"]}' "$url/v1/devices/$dev" > /dev/null
json -X PATCH -H 'If-Match: "0"' -d '{"mode":"eco","setpoint":19}' "$url/v1/devices/$dev/desired" > /dev/null
json -X PATCH -d '{"rack":"r12"}' "$url/v1/devices/$dev/tags" > /dev/null
stale=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -X PATCH -H 'Content-Type: application/json' -H 'If-Match: "0"' \
    -d '{"mode":"boost"}' "$url/v1/devices/$dev/desired")
[[ "$stale" == 412 ]] || { echo "dashboard-check: a stale If-Match answered $stale, not 412" >&2; exit 1; }
json -X POST -d '{"level":"full"}' "$url/v1/devices/$dev/commands/reboot?ttl=600" > "$work/queued.json"
json -X POST -d '{}' "$url/v1/devices/$dev/commands/selftest?ttl=600" > /dev/null
# While the browser watches its desired events, the backend keeps changing its desired state.
(
    for step in $(seq 1 120); do
        json -X PATCH -d "{\"step\":$step}" "$url/v1/devices/$dev/desired" >> "$work/steps.json" 2>/dev/null || true
        echo >> "$work/steps.json"
        sleep 0.25
    done
) &
stepper=$!
page2="$url/?device=$dev&events=desired&eventDevice=$dev"
sleep 1
attempt=1
while true; do
    echo "== chromium --dump-dom (attempt $attempt): $page2"
    chrome --timeout=8000 --dump-dom "$page2" > "$work/dom2.html" || true
    curl -fsS -m 5 "$url/v1/devices/$dev" > "$work/twin2.json"
    curl -fsS -m 5 "$url/v1/devices/$dev/commands" > "$work/commands.json"
    if python3 - "$work" "$dev" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from dashboard_dom import Page, Checks

work, dev = sys.argv[1], sys.argv[2]
parser = Page(f"{work}/dom2.html")
all_of = parser.all_of
def first(testid):
    found = all_of(testid)
    return found[0] if found else None

twin = json.load(open(f"{work}/twin2.json"))
commands = json.load(open(f"{work}/commands.json"))
commands = commands.get("commands", commands) if isinstance(commands, dict) else commands
sent = {}
for line in open(f"{work}/steps.json"):
    line = line.strip()
    if line:
        answer = json.loads(line)
        sent[answer["desired"]["step"]] = answer["version"]
checks = Checks(44)
expect = checks.expect

value = parser.first

def pairs(testid):
    entry = first(testid)
    if entry is None:
        return None
    parts = entry["parts"]
    return dict(zip(parts[0::2], parts[1::2]))

expect("twin id", parser.first("twin-id", "text"), twin["id"])
expect("twin offline (provisioned, never connected)", value("twin-online"), "false")
page_version, api_version = int(value("twin-version") or -1), twin["version"]
# The backend keeps patching: the page saw a version at most the API's now, and past the setup's 1.
expect("desired version: 1 < page <= API", 1 < page_version <= api_version, True)
expect("reported version", value("twin-reported-version"), twin.get("reportedVersion", 0))
expect("tags (backend only) as the API has them", pairs("twin-tags"), {k: str(v) for k, v in sorted(twin["tags"].items())})
expect("tags hold the provisioned and patched ones", sorted(twin["tags"]), ["owner", "rack", "site"])
pending = [c for c in commands if c["status"] in ("queued", "sent")]
expect("pending commands", value("twin-pending-commands"), len(pending))
expect("pending commands are the 2 queued", len(pending), 2)
rows = all_of("command-row")
expect("command rows", len(rows), len(commands))
expect("command statuses", sorted(r["attrs"].get("data-status") for r in rows), sorted(c["status"] for c in commands))
events = all_of("event-row")
expect("live desired events shown (>= 2)", len(events) >= 2, True)
expect("every event row is this device's", sorted({e["attrs"].get("data-device") for e in events}), [dev])
expect("every event row is a desired event", sorted({e["attrs"].get("data-type") for e in events}), ["desired"])
seqs = [int(e["attrs"].get("data-seq", "-1")) for e in events]
expect("newest first (seq strictly decreasing)", all(a > b for a, b in zip(seqs, seqs[1:])), True)
steps = []
for e in events:
    data = json.loads(e["attrs"].get("data-event") or "null") or {}
    change = data.get("desired", data.get("patch", data))
    if isinstance(change, dict) and "step" in change:
        steps.append(change["step"])
expect("each event carries a step the backend sent", bool(steps) and all(s in sent for s in steps), True)
expect("steps newest first", all(a > b for a, b in zip(steps, steps[1:])), True)
expect("the stream counter matches the rows", value("events-status"), str(len(events)))
mismatched = checks.summary()
if mismatched:
    print("   an event row:", events[0]["attrs"] if events else None)
sys.exit(mismatched)
PY
    then
        break
    fi
    if [[ $attempt -ge 3 ]]; then
        kill "$stepper" 2>/dev/null || true
        echo "dashboard-check: FAILED — the device view or the live events do not match the API (DOM: $work/dom2.html)" >&2
        keep_logs=1
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 1
done
kill "$stepper" 2>/dev/null || true
wait "$stepper" 2>/dev/null || true
curl -fsS -m 10 -X DELETE -o /dev/null "$url/v1/devices/$dev"

echo "== chromium --screenshot=$screenshot --window-size=1400,1000"
mkdir -p "$(dirname "$screenshot")"
rm -f "$screenshot"
(cd "$(dirname "$screenshot")" && chrome --screenshot="$(basename "$screenshot")" "$page" >/dev/null)
[[ -s "$screenshot" ]] || { echo "dashboard-check: no screenshot written" >&2; exit 1; }
echo "   $(stat -c %s "$screenshot") bytes"
echo "== with an API token: one node (embedded broker), the page must show the token prompt"
token_http=$((http_base + 9)); token_broker=$((broker_port + 9))
"$bin/swarm-gateway" run --node-name token-check --cluster-listen 127.0.0.1:0 --http-listen "127.0.0.1:$token_http" \
    --embedded-broker-port "$token_broker" --api-token "dashboard-check-$RANDOM$RANDOM" > "$work/token-node.log" 2>&1 &
token_pid=$!
for _ in $(seq 1 120); do curl -fsS -m 1 "http://127.0.0.1:$token_http/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$token_http/v1/cluster")
chrome --dump-dom "http://127.0.0.1:$token_http/" > "$work/token-dom.html" || true
stop_token_node
if [[ "$status" == 401 ]] && python3 - "$work/token-dom.html" <<'PY'
import re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
prompt = re.search(r'<div class="([^"]*)" id="auth-prompt"', dom)
checks = {
    "the token prompt is shown": prompt is not None and "hidden" not in prompt.group(1).split(),
    "the connection dot says auth": 'data-state="auth"' in dom,
    "no cluster numbers without the token": re.search(r'data-testid="node-count"[^>]*>–<', dom) is not None,
    "the node's name (open /healthz)": 'data-testid="connected-node">token-check<' in dom,
}
for what, ok in checks.items():
    print(f"   {'ok ' if ok else 'BAD'} {what}")
sys.exit(0 if all(checks.values()) else 1)
PY
then
    :
else
    echo "dashboard-check: FAILED — no token prompt on a node with an API token (/v1/cluster answered $status; DOM: $work/token-dom.html)" >&2
    keep_logs=1
    exit 1
fi

echo "dashboard-check: OK — the page matches the API; screenshot $screenshot ($(( $(date +%s) - started )) s)"
