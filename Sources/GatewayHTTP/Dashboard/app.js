// Swarm Gateway live dashboard. Plain JavaScript, no build step, no dependencies.
//
// Polls the node that served the page every POLL_MS: GET /v1/cluster, GET /metrics (Prometheus
// text, parsed here; rates from the samples of the last 5 s), GET /v1/groups/{g} for every watched group, the
// looked-up device's twin and, while its panel is open, GET /v1/cluster/tracker. /v1 calls carry
// "Authorization: Bearer <token>" when a token was entered (kept in localStorage); a 401 shows
// the "enter the API token" prompt.
//
// Numbers the headless-browser check reads carry data-testid (and the raw number in data-value).
// Optional URL parameters: ?groups=a,b (watch these groups), ?device=ID (look it up),
// ?query=GROUP&fields=a,b (run that group query once), ?tracker=open (open the tracker panel),
// ?events=TYPE (watch the live events of one type, empty for all) with &eventDevice=ID.
"use strict";

(function () {
  const POLL_MS = 1500;
  const HISTORY = 80;
  const RATE_WINDOW = 5;   // seconds
  const TOKEN_KEY = "swarm-gateway.token";
  const GROUPS_KEY = "swarm-gateway.groups";
  const NAME = /^[A-Za-z0-9._:-]{1,128}$/;
  const numberFormat = new Intl.NumberFormat("en-US");

  const $ = (id) => document.getElementById(id);

  const store = {
    get(key) {
      try { return window.localStorage.getItem(key); } catch (_) { return null; }
    },
    set(key, value) {
      try {
        if (value === null || value === "") window.localStorage.removeItem(key);
        else window.localStorage.setItem(key, value);
      } catch (_) { /* storage disabled: keep it for this page only */ }
    },
  };

  const state = {
    token: store.get(TOKEN_KEY) || "",
    groups: loadGroups(),
    device: null,
    nodeName: null,
    samples: [],      // recent metrics samples {time (s), figures}
    history: [],      // received/s per tick
    updates: 0,
    authNeeded: false,
    errors: new Map(),
  };

  // ---------------------------------------------------------------- helpers

  /** An element with attributes (dataset via "data-*", className via "class") and children. */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value) {
    return typeof value === "number" && Number.isFinite(value) ? numberFormat.format(value) : "–";
  }

  function fmtRate(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "–";
    if (value === 0) return "0";
    if (value < 10) return value.toFixed(1);
    return numberFormat.format(Math.round(value));
  }

  function fmtPercent(share) {
    return typeof share === "number" ? (share * 100).toFixed(1) + " %" : "–";
  }

  /** Sets a card's text and its raw value (data-value) for the check. */
  function setValue(id, value, text) {
    const node = $(id);
    node.textContent = text !== undefined ? text : fmt(value);
    node.dataset.value = value === undefined || value === null || Number.isNaN(value) ? "" : String(value);
  }

  function compact(value) {
    if (value === undefined) return "";
    if (typeof value === "string") return value;
    const text = JSON.stringify(value);
    return text.length > 160 ? text.slice(0, 157) + "…" : text;
  }

  function ago(iso) {
    if (!iso) return "never";
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return iso;
    const seconds = Math.max(0, Math.round((Date.now() - then) / 1000));
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  function badge(text, kind) {
    return el("span", { class: "badge " + (kind || String(text)) , text: String(text) });
  }

  function yesNo(value, testid) {
    return el("span", { class: "badge " + (value ? "yes" : "no"), "data-testid": testid, "data-value": String(!!value), text: value ? "yes" : "no" });
  }

  /** Flattens nested objects into dotted keys (arrays and scalars are leaves). */
  function flatten(value, prefix, out) {
    out = out || [];
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      const keys = Object.keys(value).sort();
      if (keys.length === 0 && prefix) out.push([prefix, "{}"]);
      for (const key of keys) flatten(value[key], prefix ? prefix + "." + key : key, out);
    } else if (prefix) {
      out.push([prefix, compact(value)]);
    } else if (value !== null && value !== undefined) {
      out.push(["(value)", compact(value)]);
    }
    return out;
  }

  function kv(value, testid) {
    const rows = flatten(value, "");
    if (rows.length === 0) return el("p", { class: "muted", "data-testid": testid, text: "—" });
    return el("dl", { class: "kv", "data-testid": testid }, rows.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  function loadGroups() {
    let groups = ["all"];
    try {
      const saved = JSON.parse(store.get(GROUPS_KEY) || "[]");
      if (Array.isArray(saved)) groups = groups.concat(saved.filter((g) => typeof g === "string" && NAME.test(g)));
    } catch (_) { /* ignore a broken entry */ }
    return Array.from(new Set(groups));
  }

  function saveGroups() {
    store.set(GROUPS_KEY, JSON.stringify(state.groups.filter((g) => g !== "all")));
  }

  // ---------------------------------------------------------------- HTTP

  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** A call to this node. JSON in and out; non-2xx throws APIError; 401 raises the token prompt. */
  async function call(method, path, body, raw) {
    const headers = {};
    if (state.token && path.startsWith("/v1")) headers["Authorization"] = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    } catch (error) {
      throw new APIError(0, "network", "cannot reach " + location.host + " (" + error.message + ")");
    }
    const text = await response.text();
    if (response.status === 401) {
      setAuthNeeded(true);
      throw new APIError(401, "unauthorized", "enter the API token");
    }
    if (path.startsWith("/v1")) setAuthNeeded(false);
    let json = null;
    if (!raw && text) {
      try { json = JSON.parse(text); } catch (_) { json = null; }
    }
    if (!response.ok) {
      const code = json && json.code ? json.code : String(response.status);
      const message = json && json.error ? json.error : text || response.statusText;
      throw new APIError(response.status, code, message);
    }
    return raw ? text : json;
  }

  function setAuthNeeded(needed) {
    if (state.authNeeded === needed) return;
    state.authNeeded = needed;
    $("auth-prompt").classList.toggle("hidden", !needed);
    if (needed) $("token-input").focus();
  }

  function reportError(source, error) {
    if (error && error.status === 401) state.errors.delete(source);
    else if (error) state.errors.set(source, error.status ? `${source}: HTTP ${error.status} ${error.code}: ${error.message}` : `${source}: ${error.message}`);
    else state.errors.delete(source);
    const banner = $("error-banner");
    const messages = Array.from(state.errors.values());
    banner.textContent = messages.join(" · ");
    banner.classList.toggle("hidden", messages.length === 0);
  }

  // ---------------------------------------------------------------- Prometheus text

  /** Samples of the text exposition format: [{name, labels, value}]. */
  function parseMetrics(text) {
    const samples = [];
    const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const row of text.split("\n")) {
      if (!row || row.startsWith("#")) continue;
      const match = line.exec(row);
      if (!match) continue;
      const labels = {};
      if (match[2]) {
        label.lastIndex = 0;
        let pair;
        while ((pair = label.exec(match[2])) !== null) {
          labels[pair[1]] = pair[2].replace(/\\n/g, "\n").replace(/\\"/g, "\"").replace(/\\\\/g, "\\");
        }
      }
      samples.push({ name: match[1], labels, value: Number(match[3]) });
    }
    return samples;
  }

  function total(samples, name) {
    let sum = 0;
    let seen = false;
    for (const sample of samples) {
      if (sample.name === name && Number.isFinite(sample.value)) {
        sum += sample.value;
        seen = true;
      }
    }
    return seen ? sum : null;
  }

  const RATE_FIGURES = {
    received: "swarm_gateway_received_total",
    accepted: "swarm_gateway_ingress_accepted_total",
    rejected: "swarm_gateway_ingress_rejected_total",
    commands: "swarm_gateway_commands_sent_total",
    downlinks: "swarm_gateway_downlinks_published_total",
    http: "swarm_gateway_http_requests_total",
  };

  async function refreshMetrics() {
    let text;
    try {
      text = await call("GET", "/metrics", undefined, true);
      reportError("GET /metrics", null);
    } catch (error) {
      reportError("GET /metrics", error);
      throw error;
    }
    const samples = parseMetrics(text);
    // The server's scrape time when it gives one (rates free of network and client-clock jitter,
    // and right in a headless browser's virtual time), else this browser's clock.
    const now = total(samples, "swarm_gateway_scrape_time_seconds") ?? Date.now() / 1000;
    const figures = {};
    for (const [key, name] of Object.entries(RATE_FIGURES)) figures[key] = total(samples, name);
    // Rates over the samples of the last RATE_WINDOW seconds (at least the previous one).
    const restarted = state.samples.some((s) => Object.keys(figures).some((k) => figures[k] !== null && s.figures[k] !== null && figures[k] < s.figures[k]));
    if (restarted) state.samples = [];   // a restarted node's counters start again
    state.samples = state.samples.filter((s) => s.time < now);
    const base = state.samples.find((s) => now - s.time <= RATE_WINDOW) || state.samples[state.samples.length - 1];
    state.samples.push({ time: now, figures });
    while (state.samples.length > 1 && now - state.samples[0].time > 2 * RATE_WINDOW) state.samples.shift();
    for (const key of Object.keys(RATE_FIGURES)) {
      $("total-" + key).textContent = figures[key] === null ? "" : fmt(figures[key]) + " total";
      let rate = null;
      if (base && figures[key] !== null && base.figures[key] !== null) rate = (figures[key] - base.figures[key]) / (now - base.time);
      setValue("rate-" + key, rate === null ? null : Math.round(rate * 10) / 10, fmtRate(rate === null ? NaN : rate));
    }
    const received = $("rate-received").dataset.value;
    if (received !== "") {
      state.history.push(Number(received));
      if (state.history.length > HISTORY) state.history.shift();
      drawSpark();
    }
    renderFacts(samples);
  }

  function renderFacts(samples) {
    const value = (name) => total(samples, name);
    const brokers = samples.filter((s) => s.name === "swarm_gateway_broker_connected");
    const rows = [
      ["devices hosted here", fmt(value("swarm_gateway_local_devices"))],
      ["ready", value("swarm_gateway_ready") === 1 ? "yes" : "no"],
      ["brokers connected", brokers.length ? `${brokers.filter((b) => b.value === 1).length} of ${brokers.length}` : "–"],
      ["registry names (local)", `${fmt(value("swarm_registry_size"))} (${fmt(value("swarm_registry_local_names"))})`],
      ["ring nodes · epoch", `${fmt(value("swarm_ring_nodes"))} · ${fmt(value("swarm_ring_epoch"))}`],
      ["handoffs · orphans", `${fmt(value("swarm_tracker_handoffs"))} · ${fmt(value("swarm_tracker_orphans"))}`],
      ["commands answered · timed out", `${fmt(value("swarm_gateway_commands_answered_total"))} · ${fmt(value("swarm_gateway_commands_timed_out_total"))}`],
      ["publish failures", fmt(value("swarm_gateway_publish_failures_total"))],
    ];
    $("node-facts").replaceChildren(el("dl", {}, rows.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])));
  }

  function drawSpark() {
    const canvas = $("spark");
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(100, canvas.clientWidth) * ratio;
    const height = Math.max(40, canvas.clientHeight) * ratio;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, width, height);
    const points = state.history;
    if (points.length < 2) return;
    const max = Math.max(1, ...points) * 1.15;
    const step = width / (HISTORY - 1);
    const x = (i) => width - (points.length - 1 - i) * step;
    const y = (v) => height - 2 * ratio - (v / max) * (height - 6 * ratio);
    context.beginPath();
    context.moveTo(x(0), height);
    points.forEach((v, i) => context.lineTo(x(i), y(v)));
    context.lineTo(x(points.length - 1), height);
    context.closePath();
    context.fillStyle = "rgba(47, 111, 222, 0.12)";
    context.fill();
    context.beginPath();
    points.forEach((v, i) => (i === 0 ? context.moveTo(x(i), y(v)) : context.lineTo(x(i), y(v))));
    context.strokeStyle = "#2f6fde";
    context.lineWidth = 2 * ratio;
    context.stroke();
    context.fillStyle = "#6b7686";
    context.font = `${11 * ratio}px system-ui, sans-serif`;
    context.fillText("max " + fmtRate(Math.max(...points)) + "/s", 4 * ratio, 12 * ratio);
  }

  // ---------------------------------------------------------------- cluster

  async function refreshCluster() {
    let view;
    try {
      view = await call("GET", "/v1/cluster");
      reportError("GET /v1/cluster", null);
    } catch (error) {
      reportError("GET /v1/cluster", error);
      throw error;
    }
    state.nodeName = view.node;
    $("conn-node").textContent = view.node;
    $("cluster-node").textContent = view.node;
    $("rates-node").textContent = view.node;
    $("cluster-state").textContent = view.state;
    $("cluster-state").dataset.value = view.state;
    const nodes = (view.nodes || []).slice().sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true }));
    const hosted = nodes.reduce((sum, node) => sum + (node.devices || 0), 0);
    setValue("node-count", nodes.length);
    setValue("nodes-up", nodes.filter((node) => node.state === "up").length);
    setValue("cluster-devices", view.devices);
    setValue("devices-hosted", hosted);
    setValue("registry-size", view.registrySize);
    const rows = nodes.map((node) => {
      const share = hosted > 0 ? node.devices / hosted : 0;
      const fill = el("span");
      fill.style.width = (share * 100).toFixed(1) + "%";
      return el("tr", { "data-testid": "node-row", "data-node": node.name, class: node.name === view.node ? "self" : "" },
        el("td", { "data-testid": "node-name", text: node.name }),
        el("td", {}, el("span", { class: "badge " + node.state, "data-testid": "node-state", "data-value": node.state, text: node.state })),
        el("td", {}, yesNo(node.reachable, "node-reachable")),
        el("td", {}, yesNo(node.inRing, "node-in-ring")),
        el("td", { class: "num", "data-testid": "node-ring-share", "data-value": String(node.ringShare), text: fmtPercent(node.ringShare) }),
        el("td", { class: "num", "data-testid": "node-devices", "data-value": String(node.devices), text: fmt(node.devices) }),
        el("td", {}, el("div", { class: "bar", title: fmtPercent(share) + " of the hosted devices" }, fill)));
    });
    $("node-rows").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "muted", text: "no nodes" }))]));
  }

  // ---------------------------------------------------------------- groups

  async function refreshGroups() {
    const results = await Promise.allSettled(state.groups.map((group) => call("GET", "/v1/groups/" + encodeURIComponent(group))));
    const blocks = state.groups.map((group, index) => {
      const result = results[index];
      const head = el("div", { class: "group-head" }, el("span", { class: "name", text: group }));
      const block = el("div", { class: "group", "data-testid": "group", "data-group": group }, head);
      if (group !== "all") {
        head.append(el("button", { class: "link", type: "button", title: "stop watching", text: "remove", onclick: () => removeGroup(group) }));
      }
      if (result.status === "rejected") {
        head.append(el("span", { class: "count muted", "data-testid": "group-count", "data-group": group, "data-value": "", text: "–" }));
        block.append(el("p", { class: "muted", text: result.reason.status === 401 ? "enter the API token" : result.reason.message }));
        return block;
      }
      const members = result.value.members || [];
      head.append(el("span", { class: "count", "data-testid": "group-count", "data-group": group, "data-value": String(result.value.count), text: fmt(result.value.count) }));
      const shown = members.slice(0, 24);
      const chips = el("div", { class: "chips" }, shown.map((id) => el("button", { type: "button", class: "chip", text: id, onclick: () => lookUp(id) })));
      if (members.length > shown.length) chips.append(el("span", { class: "muted", text: `+ ${fmt(members.length - shown.length)} more` }));
      if (members.length === 0) chips.append(el("span", { class: "muted", text: "no members" }));
      block.append(chips);
      return block;
    });
    $("group-list").replaceChildren(...blocks);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  function addGroup(group) {
    if (!NAME.test(group) || state.groups.includes(group)) return;
    state.groups.push(group);
    saveGroups();
  }

  function removeGroup(group) {
    state.groups = state.groups.filter((g) => g !== group);
    saveGroups();
    refreshGroups().catch(() => {});
  }

  // ---------------------------------------------------------------- device twin

  function lookUp(id) {
    $("device-id").value = id;
    state.device = id;
    $("device-out").replaceChildren(el("p", { class: "muted", text: "loading " + id + "…" }));
    refreshDevice().catch(() => {});
  }

  async function refreshDevice() {
    const id = state.device;
    if (!id) return;
    let twin;
    let commands = [];
    try {
      const path = "/v1/devices/" + encodeURIComponent(id);
      const [answer, queued] = await Promise.all([call("GET", path), call("GET", path + "/commands").catch(() => ({ commands: [] }))]);
      twin = answer;
      commands = (queued && queued.commands) || [];
    } catch (error) {
      if (state.device !== id) return;
      const text = error.status === 404 ? `No device ${id} (${error.code}).`
        : error.status === 401 ? "Enter the API token to look devices up." : `${error.code}: ${error.message}`;
      $("device-out").replaceChildren(el("p", { class: error.status === 404 ? "missing" : "muted", "data-testid": "device-error", text }));
      return;
    }
    if (state.device !== id) return;
    const raw = el("details", {}, el("summary", { text: "raw JSON" }), el("pre", { class: "json", text: JSON.stringify(twin, null, 2) }));
    const openRaw = $("device-out").querySelector("details");
    if (openRaw && openRaw.open) raw.open = true;
    $("device-out").replaceChildren(
      el("div", { class: "twin-head" },
        el("span", { class: "id", "data-testid": "twin-id", text: twin.id }),
        el("span", { class: "badge " + (twin.online ? "online" : "offline"), "data-testid": "twin-online", "data-value": String(twin.online), text: twin.online ? "online" : "offline" }),
        el("span", { class: "muted" }, "on ", el("strong", { "data-testid": "twin-node", text: twin.node || "?" })),
        el("span", { class: "muted", text: "broker " + (twin.broker || "–") }),
        el("span", { class: "muted", "data-testid": "twin-version", "data-value": String(twin.version), text: "desired v" + twin.version }),
        el("span", { class: "muted", "data-testid": "twin-reported-version", "data-value": String(twin.reportedVersion ?? 0), text: "reported v" + (twin.reportedVersion ?? 0) })),
      el("dl", { class: "kv" },
        el("dt", { text: "last seen" }), el("dd", { text: ago(twin.lastSeen) + (twin.lastSeen ? " (" + twin.lastSeen + ")" : "") }),
        el("dt", { text: "connected" }), el("dd", { text: twin.connectedAt ? ago(twin.connectedAt) : "–" }),
        el("dt", { text: "groups" }), el("dd", {}, el("span", { class: "chips" }, (twin.groups || []).map((g) => el("span", { class: "chip", text: g }))))),
      el("div", { class: "cols" },
        el("div", {}, el("h3", { text: "Telemetry" }), kv(twin.telemetry, "twin-telemetry")),
        el("div", {}, el("h3", { text: "Metadata" }), kv(twin.metadata, "twin-metadata")),
        el("div", {}, el("h3", { text: "Reported" }), kv(twin.reported, "twin-reported")),
        el("div", {}, el("h3", { text: "Desired" }), kv(twin.desired, "twin-desired")),
        el("div", {}, el("h3", { text: "Delta (desired ≠ reported)" }), kv(twin.delta, "twin-delta")),
        el("div", {}, el("h3", { text: "Tags (backend only)" }), kv(twin.tags, "twin-tags")),
        el("div", {}, el("h3", { text: "Counters" }), kv(twin.counters, "twin-counters"))),
      renderCommands(commands),
      raw);
  }

  /** Queued commands (`?ttl=`): the pending ones first, then the recent finished ones. */
  function renderCommands(commands) {
    const pending = commands.filter((c) => c.status === "queued" || c.status === "sent");
    const finished = commands.filter((c) => !(c.status === "queued" || c.status === "sent")).reverse();
    const head = el("h3", {}, "Queued commands ",
      el("span", { class: "muted", "data-testid": "twin-pending-commands", "data-value": String(pending.length), text: pending.length + " pending" }));
    if (commands.length === 0) return el("div", { class: "commands" }, head, el("p", { class: "muted", text: "none (POST …/commands/{name}?ttl=SECONDS queues one)" }));
    const rows = pending.concat(finished).map((c) => el("tr", { "data-testid": "command-row", "data-status": c.status },
      el("td", { text: c.name }),
      el("td", {}, badge(c.status, c.status === "answered" ? "yes" : c.status === "expired" || c.status === "failed" ? "no" : "draining")),
      el("td", { text: ago(c.createdAt) }),
      el("td", { text: c.status === "queued" ? "expires " + c.expiresAt : ago(c.updatedAt) }),
      el("td", { class: "mono", text: c.reply !== undefined ? compact(c.reply) : (c.error || "") })));
    return el("div", { class: "commands" }, head,
      el("table", { class: "grid", "data-testid": "twin-commands" },
        el("thead", {}, el("tr", {}, ["name", "status", "queued", "since", "reply / error"].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows)));
  }

  // ---------------------------------------------------------------- group query

  async function runQuery() {
    const group = $("query-group").value.trim();
    const timeout = $("query-timeout").value.trim() || "2000";
    const fields = $("query-fields").value.split(",").map((f) => f.trim()).filter((f) => f.length > 0);
    const out = $("query-out");
    if (!NAME.test(group)) {
      out.replaceChildren(el("p", { class: "missing", text: "A group name is [A-Za-z0-9._:-], 1 to 128 characters." }));
      return;
    }
    $("query-run").disabled = true;
    out.replaceChildren(el("p", { class: "muted", text: `asking every member of ${group}…` }));
    const started = Date.now();
    try {
      const answer = await call("POST", `/v1/groups/${encodeURIComponent(group)}/query?timeout=${encodeURIComponent(timeout)}`,
        fields.length ? { fields } : undefined);
      renderQuery(answer, fields, Date.now() - started);
    } catch (error) {
      out.replaceChildren(el("p", { class: "missing", "data-testid": "query-error",
        text: error.status === 401 ? "Enter the API token to run queries." : `${error.code}: ${error.message}` }));
    } finally {
      $("query-run").disabled = false;
    }
  }

  function renderQuery(answer, fields, millis) {
    const ids = Object.keys(answer.replies || {}).sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
    const limit = 500;
    const columns = fields.length ? fields : ["online", "node", "telemetry", "reported"];
    const rows = ids.slice(0, limit).map((id) => {
      const reply = answer.replies[id] || {};
      return el("tr", { "data-device": id },
        el("td", {}, el("button", { type: "button", class: "chip", text: id, onclick: () => lookUp(id) })),
        columns.map((column) => el("td", { class: "mono", text: compact(reply[column]) })));
    });
    const missing = answer.missing || [];
    $("query-out").replaceChildren(
      el("p", {},
        el("strong", { "data-testid": "query-count", "data-value": String(answer.count), text: fmt(answer.count) }), " replies, ",
        el("strong", { class: missing.length ? "missing" : "", "data-testid": "query-missing-count", "data-value": String(missing.length), text: fmt(missing.length) }),
        " missing, from group ", el("code", { text: answer.group }), ` in ${fmt(millis)} ms`,
        ids.length > limit ? el("span", { class: "muted", text: ` (first ${limit} shown)` }) : null),
      missing.length ? el("div", { class: "chips", "data-testid": "query-missing" },
        el("span", { class: "muted", text: "missing:" }), missing.slice(0, 100).map((id) => el("span", { class: "chip missing", text: id }))) : null,
      ids.length ? el("div", { class: "scroll" },
        el("table", { class: "grid" },
          el("thead", {}, el("tr", {}, el("th", { text: "device" }), columns.map((c) => el("th", { text: c })))),
          el("tbody", {}, rows))) : null);
  }

  // ---------------------------------------------------------------- tracker dump

  async function refreshTracker() {
    let dump;
    try {
      dump = await call("GET", "/v1/cluster/tracker");
      reportError("GET /v1/cluster/tracker", null);
    } catch (error) {
      reportError("GET /v1/cluster/tracker", error);
      $("tracker-out").replaceChildren(el("p", { class: "muted", text: error.status === 401 ? "Enter the API token to see the tracker." : error.message }));
      throw error;
    }
    const scalars = {};
    for (const [key, value] of Object.entries(dump)) {
      if (value === null || typeof value !== "object") scalars[key] = value;
    }
    const nodes = (dump.nodes || []).map((node) => el("tr", {},
      el("td", { text: node.name }), el("td", {}, badge(node.state)), el("td", {}, yesNo(node.reachable)), el("td", {}, yesNo(node.connected)),
      el("td", {}, yesNo(node.inRing)), el("td", { class: "num", text: fmtPercent(node.ringShare) }), el("td", { class: "num", text: fmt(node.names) }),
      el("td", { class: "num", text: node.appliedSeq === null || node.appliedSeq === undefined ? "–" : fmt(node.appliedSeq) }),
      el("td", { text: node.synced === null || node.synced === undefined ? "–" : node.synced ? "yes" : "no" }),
      el("td", { class: "mono", text: node.address || "" })));
    const pre = $("tracker-out").querySelector("pre");
    const scroll = pre ? pre.scrollTop : 0;
    const raw = el("details", {}, el("summary", { text: "raw JSON" }), el("pre", { class: "json", text: JSON.stringify(dump, null, 2) }));
    const openRaw = $("tracker-out").querySelector("details");
    if (openRaw && openRaw.open) raw.open = true;
    $("tracker-out").replaceChildren(
      el("div", { class: "cols" },
        el("div", {}, el("h3", { text: "Tracker" }), kv(scalars, "tracker-scalars")),
        el("div", {}, el("h3", { text: "Ring nodes" }), el("p", { class: "mono", text: (dump.ringNodes || []).join(", ") || "–" }),
          el("h3", { text: "Handoffs" }), el("p", { text: (dump.handoffs || []).length ? (dump.handoffs || []).map((h) => `${h.name} ${h.phase}→${h.target || "?"}`).join(", ") : "none" }),
          el("h3", { text: "Stats" }), kv(dump.stats || {}, "tracker-stats"))),
      el("h3", { text: "Nodes" }),
      el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, ["node", "state", "reachable", "connected", "in ring", "ring share", "names", "applied seq", "synced", "address"].map((h) => el("th", { text: h })))),
        el("tbody", {}, nodes)),
      raw);
    const newPre = $("tracker-out").querySelector("pre");
    if (newPre) newPre.scrollTop = scroll;
  }

  // ---------------------------------------------------------------- live events

  // GET /v1/events read with fetch() and a stream reader rather than EventSource, so that the
  // request carries the Authorization header; it reconnects with the last id (Last-Event-ID),
  // as EventSource would.
  const events = { controller: null, lastId: null, rows: [], count: 0 };
  const EVENT_ROWS = 200;

  function stopEvents(status) {
    if (events.controller) events.controller.abort();
    events.controller = null;
    $("events-status").textContent = status || "stopped";
  }

  async function watchEvents() {
    stopEvents("connecting…");
    const controller = new AbortController();
    events.controller = controller;
    const params = new URLSearchParams();
    const type = $("events-types").value;
    const device = $("events-device").value.trim();
    if (type) params.set("types", type);
    if (device) params.set("device", device);
    const url = "/v1/events" + (params.toString() ? "?" + params : "");
    while (events.controller === controller) {
      const headers = { Accept: "text/event-stream" };
      if (state.token) headers["Authorization"] = "Bearer " + state.token;
      if (events.lastId) headers["Last-Event-ID"] = events.lastId;
      try {
        const response = await fetch(url, { headers, signal: controller.signal, cache: "no-store" });
        if (response.status === 401) { setAuthNeeded(true); stopEvents("enter the API token"); return; }
        if (response.status === 410) { events.lastId = null; $("events-status").textContent = "cursor expired, from now on"; continue; }
        if (!response.ok) throw new Error("HTTP " + response.status);
        $("events-status").textContent = "live";
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let text = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          text += decoder.decode(value, { stream: true });
          let end;
          while ((end = text.indexOf("\n\n")) >= 0) {
            const block = text.slice(0, end);
            text = text.slice(end + 2);
            let id = null, data = null;
            for (const line of block.split("\n")) {
              if (line.startsWith("id: ")) id = line.slice(4);
              else if (line.startsWith("data: ")) data = line.slice(6);
            }
            if (id) events.lastId = id;
            if (data) showEvent(data);
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        $("events-status").textContent = "reconnecting (" + error.message + ")";
        await new Promise((resolve) => window.setTimeout(resolve, 1000));
      }
    }
  }

  function showEvent(data) {
    let event;
    try { event = JSON.parse(data); } catch (_) { return; }
    events.count += 1;
    const row = el("tr", { "data-testid": "event-row", "data-type": event.type, "data-device": event.device, "data-seq": String(event.seq), "data-event": JSON.stringify(event.data ?? null) },
      el("td", { class: "mono", text: (event.time || "").replace("T", " ").replace("Z", "") }),
      el("td", { text: event.type }),
      el("td", { class: "mono", text: event.device }),
      el("td", { class: "num", text: String(event.seq) }),
      el("td", { class: "mono", text: JSON.stringify(event.data).slice(0, 160) }));
    const body = $("events-rows");
    if (events.count === 1) body.replaceChildren();
    body.prepend(row);
    while (body.children.length > EVENT_ROWS) body.lastChild.remove();
    $("events-status").textContent = "live, " + numberFormat.format(events.count) + " event(s)";
    $("events-status").dataset.value = String(events.count);
  }

  // ---------------------------------------------------------------- loop

  async function tick() {
    const tasks = [refreshCluster(), refreshMetrics(), refreshGroups()];
    if (state.device) tasks.push(refreshDevice());
    if ($("tracker-details").open) tasks.push(refreshTracker());
    const results = await Promise.allSettled(tasks);
    const failures = results.filter((r) => r.status === "rejected").map((r) => r.reason);
    const dot = $("conn-dot");
    if (failures.some((e) => e && e.status === 0)) dot.dataset.state = "error";
    else if (state.authNeeded) dot.dataset.state = "auth";
    else if (failures.length) dot.dataset.state = "error";
    else dot.dataset.state = "ok";
    if (failures.length === 0 || (state.authNeeded && failures.every((e) => e && e.status === 401))) {
      state.updates += 1;
      document.body.dataset.updates = String(state.updates);
    }
    $("conn-updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    window.setTimeout(tick, POLL_MS);
  }

  async function start() {
    $("conn-origin").textContent = location.origin;
    $("token-input").value = state.token;
    try {
      const health = await call("GET", "/healthz");
      if (health && health.node && !state.nodeName) $("conn-node").textContent = health.node;
    } catch (_) { /* the loop reports it */ }

    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = $("token-input").value.trim();
      store.set(TOKEN_KEY, state.token);
      setAuthNeeded(false);
    });
    $("token-clear").addEventListener("click", () => {
      state.token = "";
      $("token-input").value = "";
      store.set(TOKEN_KEY, null);
    });
    $("group-add").addEventListener("submit", (event) => {
      event.preventDefault();
      addGroup($("group-add-name").value.trim());
      $("group-add-name").value = "";
      refreshGroups().catch(() => {});
    });
    $("device-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("device-id").value.trim();
      if (id) lookUp(id);
    });
    $("query-form").addEventListener("submit", (event) => {
      event.preventDefault();
      runQuery();
    });
    $("events-form").addEventListener("submit", (event) => {
      event.preventDefault();
      events.lastId = null;
      events.count = 0;
      watchEvents();
    });
    $("events-stop").addEventListener("click", () => stopEvents());
    $("tracker-details").addEventListener("toggle", () => {
      if ($("tracker-details").open) refreshTracker().catch(() => {});
    });

    const params = new URLSearchParams(location.search);
    for (const group of (params.get("groups") || "").split(",")) addGroup(group.trim());
    if (params.get("device")) lookUp(params.get("device").trim());
    if (params.get("tracker") === "open") $("tracker-details").open = true;
    if (params.get("events") !== null) {
      $("events-types").value = params.get("events");
      if (params.get("eventDevice")) $("events-device").value = params.get("eventDevice");
      watchEvents();
    }
    if (params.get("query")) {
      $("query-group").value = params.get("query");
      if (params.get("fields")) $("query-fields").value = params.get("fields");
      runQuery();
    }
    tick();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
