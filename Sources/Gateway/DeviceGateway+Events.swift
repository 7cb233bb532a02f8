import Foundation
import GatewayStore
import Logging
import MQTT
import SwarmCore
import SwarmJSON
import SwarmNode
import Synchronization

/// The event stream and the webhooks on the gateway (docs/gateway.md, “Events”): start-up, the loop that sends
/// this node's events to the others, and the webhook facade the HTTP API builds on.
extension DeviceGateway {
    /// This node's share of the cluster event stream (SSE consumers read it).
    public var events: EventHub { runtime.events }

    // MARK: - Lifecycle

    /// Opens the event store, registers the event hub and webhook process kinds and this node's
    /// hub process (`gateway-events:{node}` in ``GatewaySettings/eventHubGroup``).
    func startEvents() async throws {
        let runtime = self.runtime
        try await runtime.events.load()
        if let store = runtime.events.store {
            for row in try await store.webhooks() { runtime.webhooks.apply(row) }
        }
        await node.register(kind: GatewaySettings.eventHubProcessKind) { _, _ in EventHubProcess(runtime: runtime) }
        await node.register(kind: GatewaySettings.webhookProcessKind) { name, arguments in
            guard var state = WebhookState.decode(arguments) else { throw GatewayError.invalidBody("\(name): undecodable webhook arguments") }
            // The cursor every node keeps (shared by the sink every few seconds) may be newer.
            if let known = runtime.webhooks.record(state.definition.id) {
                guard !known.row.deleted else { throw GatewayError.unknownDevice(name) }
                state.cursor = max(state.cursor, EventKey(known.row.cursor))
            }
            let process = WebhookProcess(runtime: runtime, state: state)
            Task { await process.begin() }
            return process
        }
        let pid = try await node.spawn(kind: GatewaySettings.eventHubProcessKind)
        switch try await node.register(GatewaySettings.eventHubProcessName(nodeToken), existing: pid) {
        case .registered:
            break
        case .alreadyRegistered(let other):
            throw GatewayError.cluster("gateway-events:\(nodeToken) is already registered by \(other): two gateway nodes with one topic-safe name")
        case .failed(let error):
            throw GatewayError.cluster("registering gateway-events:\(nodeToken): \(error)")
        }
        try await node.join(GatewaySettings.eventHubGroup, pid)
        runtime.eventHubPID.withLock { $0 = pid }
    }

    /// Sends what this node's device processes emitted to every other node's hub (every
    /// ``EventSettings/flushInterval`` while events flow, a tick every
    /// ``EventSettings/tickInterval`` when idle), follows the view of the other hubs, opens the
    /// release after ``EventSettings/startHold``, and publishes events on the broker when
    /// ``EventSettings/toBroker`` is set. Until the gateway stops.
    func runEventPump() async {
        let hub = runtime.events
        let settings = self.settings.events
        let started = ContinuousClock.now
        var gateOpen = false
        var lastSent = ContinuousClock.now
        var lastView = ContinuousClock.now - .seconds(1)
        var peers: [ProcessID] = []
        while isRunning {
            try? await Task.sleep(for: settings.flushInterval)
            let now = ContinuousClock.now
            if now - lastView >= .milliseconds(50) {
                let seen = node.members(GatewaySettings.eventHubGroup).filter { $0.node != node.id }
                // A hub seen for the first time first gets what this node emitted before (still in
                // memory), then the live batches: its log misses none of this node's events.
                let known = Set(peers)
                for pid in seen where !known.contains(pid) {
                    let backlog = hub.backlog()
                    await send(backlog.events, from: backlog.from, stable: backlog.stable, to: [pid])
                }
                peers = seen
                hub.updateView(Set(peers.map(\.node)))
                lastView = now
            }
            if !gateOpen && now - started >= settings.startHold {
                hub.openGate()
                gateOpen = true
                Task { await self.reconcileWebhooks(askPeers: true) }
            }
            guard hub.hasOutbound || now - lastSent >= settings.tickInterval else { continue }
            lastSent = now
            await sendEvents(to: peers)
        }
        await sendEvents(to: node.members(GatewaySettings.eventHubGroup).filter { $0.node != node.id })
    }

    /// One round of sending: the batch to every peer hub, then into this node's own log.
    private func sendEvents(to peers: [ProcessID]) async {
        let (events, from, stable) = runtime.events.takeOutbound()
        await send(events, from: from, stable: stable, to: peers)
        runtime.events.releaseLocal(events, stable: stable)
        if settings.events.toBroker {
            let prefix = settings.events.brokerTopicPrefix
            for event in events {
                let message = MQTTMessage(topic: "\(prefix)/\(event.type.rawValue)/\(event.device)", payload: event.json, qos: .atLeastOnce)
                if !runtime.brokers.publishWithoutWaiting(message, broker: nil) { counters.publishFailures.add(1, ordering: .relaxed) }
            }
        }
    }

    /// Sends `events` (in chunks of at most 2,000) with their stable time to `peers`.
    private func send(_ events: [DeviceEvent], from: Int64, stable: Int64, to peers: [ProcessID]) async {
        if !peers.isEmpty {
            var previous = from
            var start = 0
            repeat {
                let end = min(start + 2_000, events.count)
                let chunk = Array(events[start..<end])
                let chunkStable = end == events.count ? stable : chunk.last!.key.time
                let bytes = EventHubMessage.batch(origin: node.id, from: previous, stable: chunkStable, events: chunk).encoded()
                for pid in peers {
                    do { try await node.send(pid, bytes) } catch { counters.eventSendFailures.add(1, ordering: .relaxed) }
                }
                previous = chunkStable
                start = end
            } while start < events.count
        }
    }

    /// Writes events to the store behind the log until the gateway stops.
    func runEventStore() async {
        await runtime.events.runStoreWriter { self.isRunning }
    }

    /// Every 10 s (and once the stream opened, after asking the other nodes what they know):
    /// every sink that is not deleted has its process somewhere (registered on its owner if not).
    func runWebhookKeeper() async {
        var next = ContinuousClock.now + .seconds(10)
        while isRunning {
            try? await Task.sleep(for: .milliseconds(200))
            guard ContinuousClock.now >= next else { continue }
            next = ContinuousClock.now + .seconds(10)
            await reconcileWebhooks(askPeers: false)
        }
    }

    /// Last writes at shutdown: the events not sent yet, the store, its connection.
    func stopEvents() async {
        runtime.events.close()
        await sendEvents(to: node.members(GatewaySettings.eventHubGroup).filter { $0.node != node.id })
        if let store = runtime.events.store {
            await runtime.events.writeOnce(store, purge: false)
            await store.close()
        }
        await settings.events.webhookTransport?.shutdown()
    }

    // MARK: - Webhooks

    /// Registers a sink (`POST /v1/webhooks`): stored on this node (durable before the answer:
    /// ``GatewayError/notReplicated(_:)`` if the store fails) and on every other node, then its
    /// process is started on its owner. It delivers what follows the stream's head now.
    public func createWebhook(url: String, types: [String]? = nil, group: String? = nil, where query: String? = nil, secret: String) async throws -> WebhookStatus {
        guard isRunning else { throw GatewayError.notRunning }
        guard settings.events.webhookTransport != nil else { throw GatewayError.notRunning }
        try WebhookDefinition.validate(url: url, types: types, group: group, where: query, secret: secret)
        let id = "wh-" + (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let definition = WebhookDefinition(
            id: id, url: url, types: types.map { Array(Set($0)).sorted() }, group: group, where: query, secret: secret, createdAt: Timestamp.nowMillis())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let start = runtime.events.head
        let row = StoredWebhook(id: id, revision: 1, deleted: false, definition: Array(try encoder.encode(definition)), cursor: start.stored)
        try await putWebhookEverywhere(row)
        let arguments = WebhookState(definition: definition, cursor: start).encoded()
        switch try await node.register(webhookProcessName(id), kind: GatewaySettings.webhookProcessKind, arguments: arguments) {
        case .registered, .alreadyRegistered:
            break
        case .failed(let error):
            logger.warning("webhook \(id) stored, but its process did not start yet (\(error)); the keeper retries")
        }
        return try await webhook(id) ?? idleStatus(runtime.webhooks.record(id)!)
    }

    /// Every sink that is not deleted, with its delivery state (asked of each sink's process;
    /// one that does not answer shows `node` and `lag` null).
    public func webhooks() async -> [WebhookStatus] {
        var result: [WebhookStatus] = []
        for record in runtime.webhooks.live() {
            if let status = try? await webhook(record.row.id) { result.append(status) }
        }
        return result
    }

    /// One sink's state, nil when there is none (or it is deleted).
    public func webhook(_ id: String) async throws -> WebhookStatus? {
        guard let record = runtime.webhooks.record(id), !record.row.deleted, record.definition != nil else { return nil }
        do {
            let bytes = try await node.call(webhookProcessName(id), WebhookCall.status.encoded(), timeout: .seconds(2))
            return try JSONDecoder().decode(WebhookStatus.self, from: Data(bytes))
        } catch {
            return idleStatus(record)
        }
    }

    /// Deletes a sink: its process stops, every node records the deletion (a higher revision,
    /// so a node that missed it does not bring it back). Throws `unknownWebhook` (as
    /// ``GatewayError/unknownDevice(_:)``).
    public func deleteWebhook(_ id: String) async throws -> Bool {
        guard let record = runtime.webhooks.record(id), !record.row.deleted else { return false }
        var row = record.row
        row.revision += 1
        row.deleted = true
        try await putWebhookEverywhere(row)
        do {
            try await node.unregister(webhookProcessName(id))
        } catch SwarmError.unknownName {
            // Not running anywhere at the moment.
        }
        return true
    }

    private func idleStatus(_ record: WebhookRegistry.Record) -> WebhookStatus {
        let definition = record.definition!
        return WebhookStatus(
            id: definition.id, url: definition.url, types: definition.types, group: definition.group, where: definition.where, node: nil,
            cursor: EventKey(record.row.cursor).description, lag: nil, failures: 0, consecutiveFailures: 0, lastError: nil, dropped: 0,
            delivered: 0, createdAt: Timestamp.iso(definition.createdAt))
    }

    /// Applies `row` here (committed to this node's store: throws when that fails) and on every
    /// other node (each commits it to its own store; one that does not answer gets it from the
    /// keeper's next round).
    private func putWebhookEverywhere(_ row: StoredWebhook) async throws {
        runtime.webhooks.apply(row)
        do {
            try await runtime.events.commit(webhooks: [row])
        } catch {
            throw GatewayError.notReplicated("webhook \(row.id) could not be stored: \(error)")
        }
        let peers = node.members(GatewaySettings.eventHubGroup).filter { $0.node != node.id }
        let message = EventHubMessage.putWebhook(row).encoded()
        await withTaskGroup(of: Void.self) { group in
            for pid in peers {
                group.addTask {
                    do { _ = try await self.node.call(pid, message, timeout: self.settings.queryTimeout) } catch {
                        self.logger.warning("webhook \(row.id): node \(pid.node.name) did not store revision \(row.revision): \(error)")
                    }
                }
            }
        }
    }

    /// Brings every node's sinks together (with `askPeers`: this node's rows merged with what
    /// the others know, so one that missed a creation or a deletion while down catches up) and
    /// makes sure each live sink runs somewhere.
    func reconcileWebhooks(askPeers: Bool) async {
        if askPeers {
            let result = await node.multiCall(GatewaySettings.eventHubGroup, EventHubMessage.webhooks.encoded(), timeout: settings.queryTimeout)
            var changed: [StoredWebhook] = []
            for (_, bytes) in result.replies {
                for row in (try? EventHubMessage.decodeRows(bytes)) ?? [] where runtime.webhooks.apply(row) {
                    changed.append(runtime.webhooks.record(row.id)!.row)
                }
            }
            if !changed.isEmpty { try? await runtime.events.commit(webhooks: changed) }
        }
        for record in runtime.webhooks.live() where node.whereis(webhookProcessName(record.row.id)) == nil {
            guard let definition = record.definition else { continue }
            let arguments = WebhookState(definition: definition, cursor: EventKey(record.row.cursor)).encoded()
            _ = try? await node.whereisOrRegister(webhookProcessName(record.row.id), kind: GatewaySettings.webhookProcessKind, arguments: arguments)
        }
        // A sink deleted while this node still ran it (the deletion reached this node later).
        for record in runtime.webhooks.all() where record.row.deleted {
            if let pid = node.whereis(webhookProcessName(record.row.id)), pid.node == node.id {
                try? await node.unregister(webhookProcessName(record.row.id))
            }
        }
    }
}
