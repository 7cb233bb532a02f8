import Foundation
import Gateway
import GatewayStore
import Prometheus
import SwarmCore
import Synchronization

/// The Prometheus side of the API: HTTP request counts and latencies (kept in a
/// `PrometheusCollectorRegistry` owned by this server, never the process-global metrics system,
/// so several servers can live in one process), and the gateway's and node's figures, read at
/// scrape time from ``DeviceGateway/stats()`` and the tracker dump.
final class HTTPMetrics: Sendable {
    struct RequestKey: Hashable, Sendable {
        var method: String
        var route: String
        var status: Int
    }

    struct RouteKey: Hashable, Sendable {
        var method: String
        var route: String
    }

    let registry = PrometheusCollectorRegistry()
    /// Open `GET /v1/events` streams.
    let eventStreams = Atomic<Int>(0)
    private let requests = Mutex<[RequestKey: Prometheus.Counter]>([:])
    private let durations = Mutex<[RouteKey: DurationHistogram]>([:])

    static let buckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]
    static var requestsName: MetricNameDescriptor {
        MetricNameDescriptor(
        namespace: "swarm_gateway", subsystem: "http", metricName: "requests", unitName: "total",
            helpText: "HTTP requests answered, by method, route and status.")
    }
    static var durationName: MetricNameDescriptor {
        MetricNameDescriptor(
        namespace: "swarm_gateway", subsystem: "http", metricName: "request_duration", unitName: "seconds",
            helpText: "HTTP request latency (handler and middleware), by method and route.")
    }

    /// Records one answered request. `route` is the route template (`/v1/devices/{id}`), never
    /// the raw path, so the label set stays bounded.
    func record(method: String, route: String, status: Int, duration: Duration) {
        let key = RequestKey(method: method, route: route, status: status)
        let counter = requests.withLock { table in
            if let counter = table[key] { return counter }
            let counter = registry.makeCounter(
                descriptor: Self.requestsName, labels: [("method", method), ("route", route), ("status", String(status))])
            table[key] = counter
            return counter
        }
        counter.increment()
        let routeKey = RouteKey(method: method, route: route)
        let histogram = durations.withLock { table in
            if let histogram = table[routeKey] { return histogram }
            let histogram = registry.makeDurationHistogram(
                descriptor: Self.durationName, labels: [("method", method), ("route", route)], buckets: Self.buckets)
            table[routeKey] = histogram
            return histogram
        }
        histogram.record(duration)
    }

    /// The whole exposition (text format 0.0.4): gateway counters, node figures, HTTP metrics.
    func exposition(
        stats: GatewayStats, view: ClusterView?, dump: TrackerDump?, ready: Bool, store: StoreStats? = nil,
        recovery: (complete: Bool, duration: Duration?)? = nil
    ) -> [UInt8] {
        var text = PrometheusText()
        text.family("swarm_gateway_received_total", "counter", "Inbound device messages by kind, before validation.")
        for (kind, value) in stats.received.sorted(by: { $0.key < $1.key }) {
            text.sample("swarm_gateway_received_total", ["kind": kind], value)
        }
        text.family("swarm_gateway_ingress_accepted_total", "counter", "Inbound device messages routed to their device process.")
        text.sample("swarm_gateway_ingress_accepted_total", [:], stats.routed)
        text.family("swarm_gateway_ingress_rejected_total", "counter", "Inbound device messages rejected, by reason.")
        for (reason, value) in stats.rejected.sorted(by: { $0.key < $1.key }) {
            text.sample("swarm_gateway_ingress_rejected_total", ["reason": reason], value)
        }
        text.family("swarm_gateway_ingress_shed_total", "counter", "Inbound device messages shed under overload (a full ingress lane), by kind; only telemetry is ever shed.")
        for (kind, value) in stats.shed.sorted(by: { $0.key < $1.key }) {
            text.sample("swarm_gateway_ingress_shed_total", ["kind": kind], value)
        }
        text.family("swarm_gateway_ingress_queued", "gauge", "Accepted inbound messages queued in the ingress lanes, not routed yet.")
        text.sample("swarm_gateway_ingress_queued", [:], stats.ingressQueued)
        let simple: [(String, String, Int)] = [
            ("swarm_gateway_ingress_waits_total", "Times a status or reported message waited for room in a full ingress lane (backpressure to the broker).", stats.ingressWaits),
            ("swarm_gateway_commands_sent_total", "Commands published to devices by this node.", stats.commandsSent),
            ("swarm_gateway_commands_answered_total", "Commands answered by their device.", stats.commandsAnswered),
            ("swarm_gateway_commands_timed_out_total", "Commands not answered in time.", stats.commandsTimedOut),
            ("swarm_gateway_replies_unmatched_total", "Command replies that matched no pending command.", stats.repliesUnmatched),
            ("swarm_gateway_desired_published_total", "Desired-state messages published by device processes on this node.", stats.desiredPublished),
            ("swarm_gateway_downlinks_published_total", "Group downlinks published by device processes on this node.", stats.downlinksPublished),
            ("swarm_gateway_publish_failures_total", "Publishes that failed (broker down or not connected).", stats.publishFailures),
            ("swarm_gateway_checkpoints_total", "State checkpoints written by device processes on this node.", stats.checkpoints),
            ("swarm_gateway_processes_started_total", "Device processes started on this node.", stats.processesStarted),
        ]
        for (name, help, value) in simple {
            text.family(name, "counter", help)
            text.sample(name, [:], value)
        }
        text.family("swarm_gateway_local_devices", "gauge", "Device processes hosted by this node.")
        text.sample("swarm_gateway_local_devices", [:], stats.localDevices)
        text.family("swarm_gateway_broker_connected", "gauge", "1 while the connection to the broker is up.")
        for broker in stats.brokers { text.sample("swarm_gateway_broker_connected", ["broker": broker.id], broker.connected ? 1 : 0) }
        text.family("swarm_gateway_broker_connections_total", "counter", "Connections made to the broker (first plus reconnects).")
        for broker in stats.brokers { text.sample("swarm_gateway_broker_connections_total", ["broker": broker.id], broker.connections) }
        text.family("swarm_gateway_broker_received_total", "counter", "Inbound messages received from the broker.")
        for broker in stats.brokers { text.sample("swarm_gateway_broker_received_total", ["broker": broker.id], broker.received) }
        text.family("swarm_gateway_ready", "gauge", "1 when the node is ready (what /readyz answers).")
        text.sample("swarm_gateway_ready", [:], ready ? 1 : 0)

        if let view {
            text.family("swarm_cluster_devices", "gauge", "Devices known in the cluster (members of group all).")
            text.sample("swarm_cluster_devices", [:], view.devices)
            text.family("swarm_cluster_node_devices", "gauge", "Devices hosted per node, as this node sees it.")
            for node in view.nodes { text.sample("swarm_cluster_node_devices", ["node": node.name], node.devices) }
            text.family("swarm_cluster_node_ring_share", "gauge", "Share of the ring's key space per node (0..1).")
            for node in view.nodes { text.sample("swarm_cluster_node_ring_share", ["node": node.name], node.ringShare) }
            text.family("swarm_cluster_node_up", "gauge", "1 per node and membership state, as this node sees it.")
            for node in view.nodes { text.sample("swarm_cluster_node_up", ["node": node.name, "state": node.state], node.reachable ? 1 : 0) }
        }
        if let dump {
            let gauges: [(String, String, Int)] = [
                ("swarm_registry_size", "Names in this node's registry replica.", dump.registrySize),
                ("swarm_registry_local_names", "Names whose process runs on this node.", dump.localNames),
                ("swarm_registry_contested_names", "Names registered on more than one node (to be resolved).", dump.contestedNames),
                ("swarm_tracker_pending_starts", "Factory starts in progress on this node.", dump.pendingStarts),
                ("swarm_tracker_outstanding_requests", "Tracker requests waiting for an answer.", dump.outstandingRequests),
                ("swarm_tracker_handoffs", "Handoffs in progress.", dump.handoffs.count),
                ("swarm_tracker_orphans", "Names without a live host awaiting restart.", dump.orphans),
                ("swarm_tracker_standby_states", "Replicated states held for processes of other nodes.", dump.standbyStates),
                ("swarm_ring_nodes", "Nodes in the hash ring.", dump.ringNodes.count),
                ("swarm_node_draining", "1 while this node drains.", dump.draining ? 1 : 0),
            ]
            for (name, help, value) in gauges {
                text.family(name, "gauge", help)
                text.sample(name, [:], value)
            }
            text.family("swarm_ring_epoch", "counter", "Ring changes seen by this node.")
            text.sample("swarm_ring_epoch", [:], Int(clamping: dump.ringEpoch))
        }
        if let store { text.store(store) }
        if let recovery, store != nil {
            text.family("swarm_store_recovery_complete", "gauge", "1 once recovery from the store at start is complete (API writes wait until then).")
            text.sample("swarm_store_recovery_complete", [:], recovery.complete ? 1 : 0)
            if let duration = recovery.duration {
                text.family("swarm_store_recovery_seconds", "gauge", "How long recovery from the store took at start.")
                text.sample("swarm_store_recovery_seconds", [:], Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
            }
        }
        // The scrape's own wall-clock time: a client computing rates from two scrapes (the
        // dashboard) divides by the server's interval, free of network and client-clock jitter.
        text.family("swarm_gateway_scrape_time_seconds", "gauge", "Unix time of this scrape (for rates from two scrapes).")
        text.sample("swarm_gateway_scrape_time_seconds", [:], (Date().timeIntervalSince1970 * 1000).rounded() / 1000)
        var bytes = text.bytes
        registry.emit(into: &bytes)
        return bytes
    }
}

extension HTTPMetrics {
    /// The event stream's figures (docs/gateway.md, “Events”).
    func eventExposition(_ stats: EventStats) -> [UInt8] {
        var text = PrometheusText()
        let counters: [(String, String, Int)] = [
            ("swarm_events_emitted_total", "Events emitted by device processes on this node.", stats.emitted),
            ("swarm_events_received_total", "Events received from other nodes.", stats.received),
            ("swarm_events_released_total", "Events released into this node's ordered log.", stats.released),
            ("swarm_events_late_total", "Events dropped because they arrived after the log passed their key (a seq gap for consumers).", stats.late),
            ("swarm_events_duplicates_total", "Events dropped because their device's seq was already in the log.", stats.duplicates),
            ("swarm_events_seq_gaps_total", "Device seq numbers missing from the log (events the cluster lost).", stats.gaps),
            ("swarm_events_evicted_unstored_total", "Events that left memory before they were stored (the store was failing).", stats.evictedUnstored),
            ("swarm_events_store_writes_total", "Event store transactions committed.", stats.storeWrites),
            ("swarm_events_store_failures_total", "Event store transactions that failed.", stats.storeFailures),
        ]
        for (name, help, value) in counters {
            text.family(name, "counter", help)
            text.sample(name, [:], value)
        }
        let gauges: [(String, String, Int)] = [
            ("swarm_events_stored", "Events in the store (this node's count).", stats.stored),
            ("swarm_events_buffered", "Events in memory.", stats.buffered),
            ("swarm_events_unstored", "Released events not written to the store yet.", stats.unstored),
            ("swarm_events_waiting", "Received events waiting for the watermark.", stats.waiting),
            ("swarm_events_origins", "Nodes whose events this node merges (itself included).", stats.origins),
            ("swarm_events_streams", "Open GET /v1/events streams.", eventStreams.load(ordering: .relaxed)),
        ]
        for (name, help, value) in gauges {
            text.family(name, "gauge", help)
            text.sample(name, [:], value)
        }
        return text.bytes
    }
}

/// A small writer of the Prometheus text format (0.0.4).
struct PrometheusText {
    var bytes: [UInt8] = []

    /// The durable store's figures (``StoreStats``): health, transactions, rows, queue, latencies.
    mutating func store(_ store: StoreStats) {
        family("swarm_store_healthy", "gauge", "1 while the durable store commits (0 from a failed transaction until the next one succeeds).")
        sample("swarm_store_healthy", ["store": store.location], store.healthy ? 1 : 0)
        family("swarm_store_schema_version", "gauge", "Schema version of the durable store.")
        sample("swarm_store_schema_version", [:], store.schemaVersion)
        let counters: [(String, String, Int)] = [
            ("swarm_store_commits_total", "Transactions committed by the store writer.", store.commits),
            ("swarm_store_rows_written_total", "Rows written (puts and deletes, after coalescing).", store.rowsWritten),
            ("swarm_store_durable_writes_total", "Durable writes asked for (API changes: committed before the API answers).", store.durableWrites),
            ("swarm_store_write_behind_total", "Write-behind changes queued (device-reported state).", store.writeBehindWrites),
            ("swarm_store_coalesced_total", "Write-behind changes replaced by a newer one of the same device before they were written.", store.coalesced),
            ("swarm_store_flush_errors_total", "Failed store transactions.", store.flushErrors),
            ("swarm_store_durable_failures_total", "Durable writes answered with an error (API 503 storeUnavailable).", store.durableFailures),
        ]
        for (name, help, value) in counters {
            family(name, "counter", help)
            sample(name, [:], value)
        }
        family("swarm_store_write_behind_queued", "gauge", "Changes queued and not committed yet (one per device).")
        sample("swarm_store_write_behind_queued", [:], store.queued)
        family("swarm_store_oldest_queued_seconds", "gauge", "Age of the oldest queued change.")
        sample("swarm_store_oldest_queued_seconds", [:], store.oldestQueuedSeconds)
        if let rows = store.rows {
            family("swarm_store_rows", "gauge", "Rows in the store at the last count, by kind.")
            sample("swarm_store_rows", ["kind": "owned"], rows.owned)
            sample("swarm_store_rows", ["kind": "replica"], rows.replicas)
            sample("swarm_store_rows", ["kind": "tombstone"], rows.tombstones)
        }
        histogram("swarm_store_commit_seconds", "Duration of each store transaction.", store.commitSeconds)
        histogram("swarm_store_write_behind_age_seconds", "Age of write-behind changes when their transaction committed (the window actually kept).", store.writeBehindAgeSeconds)
    }

    mutating func histogram(_ name: String, _ help: String, _ buckets: DurationBuckets) {
        family(name, "histogram", help)
        for (bound, count) in zip(buckets.bounds, buckets.cumulative) {
            line(name + "_bucket", ["le": String(bound)], String(count))
        }
        line(name + "_bucket", ["le": "+Inf"], String(buckets.count))
        line(name + "_sum", [:], String(buckets.sum))
        line(name + "_count", [:], String(buckets.count))
    }

    mutating func family(_ name: String, _ type: String, _ help: String) {
        bytes.append(contentsOf: "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n".utf8)
    }

    mutating func sample(_ name: String, _ labels: KeyValuePairs<String, String>, _ value: Int) {
        line(name, labels, String(value))
    }

    mutating func sample(_ name: String, _ labels: KeyValuePairs<String, String>, _ value: Double) {
        line(name, labels, value.isFinite ? String(value) : "NaN")
    }

    mutating func line(_ name: String, _ labels: KeyValuePairs<String, String>, _ value: String) {
        bytes.append(contentsOf: name.utf8)
        if !labels.isEmpty {
            bytes.append(UInt8(ascii: "{"))
            for (index, (key, label)) in labels.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                bytes.append(contentsOf: key.utf8)
                bytes.append(contentsOf: "=\"".utf8)
                bytes.append(contentsOf: Self.escaped(label).utf8)
                bytes.append(UInt8(ascii: "\""))
            }
            bytes.append(UInt8(ascii: "}"))
        }
        bytes.append(UInt8(ascii: " "))
        bytes.append(contentsOf: value.utf8)
        bytes.append(UInt8(ascii: "\n"))
    }

    /// A label value with `\`, `"` and newlines escaped.
    static func escaped(_ value: String) -> String {
        guard value.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return value }
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}
