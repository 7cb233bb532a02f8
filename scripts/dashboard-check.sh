#!/usr/bin/env bash
# The dashboard in a real headless Chromium against a real demo cluster (issue 6 item 2).
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
# message rate. Then one node with an API token: the page must show the "enter the API token"
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
from html.parser import HTMLParser

work, nodes, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

class Page(HTMLParser):
    """Every element with a data-testid: its attributes and text; node rows by data-node."""
    def __init__(self):
        super().__init__()
        self.found, self.stack, self.rows, self.row, self.body = [], [], {}, None, {}
    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        if attrs.get("data-testid") == "node-row":
            self.row = {}
            self.rows[attrs.get("data-node")] = self.row
        entry = {"tag": tag, "attrs": attrs, "text": "", "row": self.row}
        if "data-testid" in attrs:
            self.found.append(entry)
        if tag not in ("br", "input", "img", "meta", "link"):
            self.stack.append(entry)
    def handle_endtag(self, tag):
        while self.stack:
            entry = self.stack.pop()
            if entry["tag"] == "tr" and entry["attrs"].get("data-testid") == "node-row":
                self.row = None
            if entry["tag"] == tag:
                break
    def handle_data(self, data):
        for entry in self.stack:
            entry["text"] += data

parser = Page()
parser.feed(open(f"{work}/dom.html", encoding="utf-8").read())
for entry in parser.found:
    if entry["row"] is not None:
        entry["row"][entry["attrs"]["data-testid"]] = entry["attrs"].get("data-value", entry["text"].strip())

def first(testid, attribute="data-value", **where):
    for entry in parser.found:
        if entry["attrs"].get("data-testid") == testid and all(entry["attrs"].get(k) == v for k, v in where.items()):
            return entry["text"].strip() if attribute == "text" else entry["attrs"].get(attribute)
    return None

view = json.load(open(f"{work}/cluster.json"))
all_members = json.load(open(f"{work}/all.json"))
meters = json.load(open(f"{work}/meters.json"))
twin = json.load(open(f"{work}/twin.json"))
api_nodes = {n["name"]: n for n in view["nodes"]}
failures, checked = [], 0

def expect(what, page, api):
    global checked
    checked += 1
    mark = "ok " if str(page) == str(api) else "BAD"
    print(f"   {mark} {what:38} page={page!s:14} api={api}")
    if mark == "BAD":
        failures.append(what)

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
print(f"   {checked} checks, {len(failures)} mismatches" + (f": {', '.join(failures)}" if failures else ""))
sys.exit(1 if failures else 0)
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
