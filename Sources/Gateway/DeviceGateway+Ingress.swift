import Logging
import MQTT
import SwarmCore
import SwarmJSON
import SwarmNode
import Synchronization

extension DeviceGateway {
    /// Validates an inbound device message and normalises its payload. Pure: no I/O.
    ///
    /// - status: the plain strings `online` / `offline` (also as JSON strings) become
    ///   `{"status": …}`; otherwise a JSON object whose `status` is `online` or `offline`.
    /// - telemetry, reported: a JSON object. Checked with ``JSONReader/scan(_:)``, which builds
    ///   nothing: the device process parses the payload once, where it applies it.
    /// Payloads over `limit` bytes are refused before parsing. Telemetry and reported payloads
    /// are passed on as they came; status payloads are normalised.
    static func validatePayload(kind: DeviceTopics.Kind, payload: [UInt8], limit: Int) -> Result<[UInt8], GatewayCounters.Reject> {
        guard payload.count <= limit else { return .failure(.oversized) }
        if kind == .status {
            let text = String(decoding: payload, as: UTF8.self).trimmingWhitespace()
            if text == "online" || text == "offline" {
                return .success(JSONValue.object(["status": .string(text)]).serialized())
            }
        }
        if kind != .status {
            guard let top = try? JSONReader.scan(payload) else { return .failure(.malformed) }
            return top == .object ? .success(payload) : .failure(.badShape)
        }
        let value: JSONValue
        do {
            value = try JSONValue.parse(payload, limit: limit)
        } catch {
            return .failure(.malformed)
        }
        switch kind {
        case .status:
            if case .string(let text) = value, text == "online" || text == "offline" {
                return .success(JSONValue.object(["status": .string(text)]).serialized())
            }
            guard let status = value["status"]?.stringValue, status == "online" || status == "offline" else {
                return .failure(.badShape)
            }
            return .success(payload)
        case .telemetry, .reported:
            guard value.objectValue != nil else { return .failure(.badShape) }
            return .success(payload)
        }
    }

    /// Checks one inbound message on the consumer task of broker `index` (never waits on the
    /// cluster: routing happens on the lanes) and returns the lane item for it, or nil when it was
    /// rejected, counted, or was a command reply (handled here).
    func admit(_ message: MQTTMessage, broker: BrokerPool.Entry, index: Int) async -> IngressLane.Item? {
        brokerReceived[index].increment()
        let id: String
        let kind: DeviceTopics.Kind
        switch topics.parse(message.topic) {
        case .success(let parsed):
            (id, kind) = parsed
        case .failure(.badTopic):
            if let reply = topics.parseReply(message.topic) {
                await handleReply(message, device: reply.id, node: reply.node)
                return nil
            }
            counters.count(.badTopic)
            rejectLog.warning("badTopic", "rejected message on unexpected topic '\(message.topic.prefix(200))'")
            return nil
        case .failure(.badID):
            counters.count(.badID)
            rejectLog.warning("badID", "rejected message with an invalid device id on '\(message.topic.prefix(200))'")
            return nil
        }
        counters.count(received: kind)
        if runtime.tombstones.contains(id) {
            // A device deleted a moment ago: its will, or a message that was on its way.
            counters.count(.deleted)
            return nil
        }
        switch Self.validatePayload(kind: kind, payload: message.payload, limit: settings.maxPayloadBytes) {
        case .failure(let reason):
            counters.count(reason)
            rejectLog.warning(reason.rawValue, "rejected \(kind.rawValue) from device '\(id)': \(reason.rawValue) (\(message.payload.count) bytes)")
            return nil
        case .success(let payload):
            let event = DeviceMessage.ingress(
                kind: kind, broker: broker.id, receivedAt: Timestamp.nowMillis(), retained: message.retain, payload: payload)
            return IngressLane.Item(id: id, kind: kind, message: event.encoded(), qos: message.qos)
        }
    }

    /// Offers `items` (in order) to their lane under the overload policy (``IngressLane``):
    /// queued; QoS 0 telemetry shed when the lane is full (counted in ``GatewayStats/shed``,
    /// logged at most once per ``GatewaySettings/rejectLogInterval``); everything else waited
    /// for (counted in ``GatewayStats/ingressWaits``), never shed. The wait holds up this broker
    /// consumer and, through the MQTT client's flow control, the broker.
    func enqueue(_ items: [IngressLane.Item], on lane: IngressLane) async {
        guard !items.isEmpty else { return }
        inLanes.add(items.count, ordering: .relaxed)
        var start = 0
        while start < items.count {
            let outcome = lane.offer(items, from: start)
            if !outcome.shed.isEmpty {
                inLanes.subtract(outcome.shed.count, ordering: .relaxed)
                var total = 0
                for kind in outcome.shed { total = counters.countShed(kind) }
                rejectLog.warning(
                    "shed",
                    "ingress overloaded: shedding QoS 0 telemetry (a lane holds \(lane.capacity) messages); \(total) shed since start, QoS 1 messages, status and reported are kept")
            }
            if outcome.closed {
                inLanes.subtract(items.count - outcome.next, ordering: .relaxed)
                return
            }
            start = outcome.next
            if outcome.full {
                counters.ingressWaits.add(1, ordering: .relaxed)
                await lane.waitForRoom()
            }
        }
    }

    /// A command reply on `{prefix}/{id}/replies/{node}`: handed to the command waiting here, or
    /// forwarded to node `node`'s ``GatewayNodeProcess`` (one cast). The reply to a queued
    /// command (``QueuedCommand/commandID(correlation:)``) goes to the device process by name,
    /// wherever it runs now. Replies without correlation data, for no waiting command, or for a
    /// node that is gone count as `repliesUnmatched`.
    func handleReply(_ message: MQTTMessage, device: String, node token: String) async {
        guard let key = message.properties.correlationData else {
            counters.repliesUnmatched.add(1, ordering: .relaxed)
            return
        }
        if let commandID = QueuedCommand.commandID(correlation: key) {
            do {
                try await node.send(device, DeviceMessage.commandReply(id: commandID, payload: message.payload).encoded())
            } catch {
                counters.repliesUnmatched.add(1, ordering: .relaxed)
            }
            return
        }
        if token == nodeToken {
            if !replies.deliver(key, message.payload) { counters.repliesUnmatched.add(1, ordering: .relaxed) }
            return
        }
        do {
            try await node.send(GatewaySettings.nodeProcessName(token), NodeMessage.reply(key: key, payload: message.payload).encoded())
        } catch {
            counters.repliesUnmatched.add(1, ordering: .relaxed)
        }
    }

    /// FNV-1a 64 of the id: a stable lane per device on this node.
    static func laneHash(_ id: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in id.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// The consumer of broker `index`: takes every message the client queued at once (its flow
    /// control holds the broker while this waits), admits each and hands the batch to the lanes,
    /// one offer per lane.
    func consumeMessages(_ entry: BrokerPool.Entry, index: Int) async {
        var byLane: [[IngressLane.Item]] = Array(repeating: [], count: lanes.count)
        while let batch = await entry.client.nextBatch() {
            for message in batch {
                guard let item = await admit(message, broker: entry, index: index) else { continue }
                byLane[Int(Self.laneHash(item.id) % UInt64(lanes.count))].append(item)
            }
            for laneIndex in byLane.indices where !byLane[laneIndex].isEmpty {
                await enqueue(byLane[laneIndex], on: lanes[laneIndex])
                byLane[laneIndex].removeAll(keepingCapacity: true)
            }
            // While the broker keeps the client's queue full, `nextBatch()` never suspends:
            // without a yield this loop would keep a thread of the (2-thread) cooperative pool
            // to itself and starve the lanes and the device processes it feeds.
            await Task.yield()
        }
    }

    func consumeEvents(_ entry: BrokerPool.Entry) async {
        for await event in entry.client.events {
            switch event {
            case .connected:
                logger.info("broker \(entry.id): connected")
            case .disconnected(let code, let description):
                if isRunning { logger.warning("broker \(entry.id): disconnected (\(code) \(description)); reconnecting") }
            case .connectionRefused(let code, let description):
                logger.error("broker \(entry.id): connection refused (\(code) \(description))")
            case .subscriptionsRenewed(let count, let refused):
                if !refused.isEmpty { logger.error("broker \(entry.id): subscriptions refused after reconnect: \(refused)") }
                logger.info("broker \(entry.id): \(count) subscription(s) renewed")
            }
        }
    }

    /// One ordered lane: takes everything queued at each wake-up and routes it in arrival order.
    func consumeLane(_ lane: IngressLane, slowPath: IngressSlowPath) async {
        while let batch = await lane.take() {
            await route(batch: batch, slowPath: slowPath)
        }
    }

    /// Routes a batch in order without waiting on anything but the node: runs of devices the
    /// local replica knows go to the node as one ``SwarmNode/send(batch:)`` (one hop for the run);
    /// a device seen for the first time, a cast the node refused (its name in transition, say)
    /// and every later message of such a device go to the lane's ``IngressSlowPath``, whose own
    /// tasks register, retry with backoff and keep each device's order. So neither a slow first
    /// registration nor a retry's backoff holds up the other devices of the lane. The node
    /// handles a batch without suspending, so a refusal covers every message of that device in
    /// the run, and the parked ones keep their relative order.
    func route(batch: [IngressLane.Item], slowPath: IngressSlowPath) async {
        var run: [IngressLane.Item] = []
        for item in batch {
            if slowPath.parkIfHeld(item) { continue }
            if node.whereis(item.id) != nil {
                run.append(item)
                continue
            }
            await send(run: run, slowPath: slowPath)
            run.removeAll(keepingCapacity: true)
            slowPath.park([item])
        }
        await send(run: run, slowPath: slowPath)
    }

    private func send(run: [IngressLane.Item], slowPath: IngressSlowPath) async {
        guard !run.isEmpty else { return }
        let failures: [(index: Int, error: SwarmError)]
        do {
            failures = try await node.send(batch: run.map { (name: $0.id, message: $0.message) })
        } catch {
            slowPath.park(run)  // the node is not running: counted there
            return
        }
        counters.routed.add(run.count - failures.count, ordering: .relaxed)
        inLanes.subtract(run.count - failures.count, ordering: .relaxed)
        if !failures.isEmpty { slowPath.park(failures.map { run[$0.index] }) }
    }

    /// The slow path of one device's parked messages (``IngressSlowPath``), on its own task:
    /// `whereisOrRegister` when the replica does not know the device, then the messages as one
    /// batch; transient cluster errors (a name being started, handed off or resolved, a ring
    /// change, a vanished name) are retried with backoff up to 6 times (about 1.5 s in all)
    /// before what is left is counted as `routeFailed`. Returns after every message was routed or
    /// counted.
    func routeParked(_ id: String, _ parked: [IngressLane.Item]) async {
        var items = parked
        var lastError: any Error = SwarmError.timeout
        for attempt in 0..<6 {
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(25 << attempt)) }
            do {
                // The local replica answers without a hop for every device seen before; only a
                // first contact goes through the (atomic) whereis-or-register on its owner.
                if node.whereis(id) == nil {
                    _ = try await node.whereisOrRegister(
                        id, kind: settings.processKind, groups: [runtime.swarmGroup("all")])
                }
                let failures = try await node.send(batch: items.map { (name: id, message: $0.message) })
                counters.routed.add(items.count - failures.count, ordering: .relaxed)
                inLanes.subtract(items.count - failures.count, ordering: .relaxed)
                guard let first = failures.first else { return }
                items = failures.map { items[$0.index] }
                throw first.error
            } catch let error as SwarmError {
                lastError = error
                switch error {
                case .unknownName, .nameInTransition, .timeout, .tooManyAttempts, .noNodeAvailable, .startFailed:
                    continue
                default:
                    break
                }
            } catch {
                lastError = error  // the node is not running
            }
            break
        }
        inLanes.subtract(items.count, ordering: .relaxed)
        for _ in items { counters.count(.routeFailed) }
        rejectLog.warning("routeFailed", "could not route \(items.count) message(s) of device '\(id)': \(lastError)")
    }

    /// Writes the coalesced checkpoints every ``GatewaySettings/checkpointInterval``, and hands
    /// queued commands whose TTL or reply deadline passed to their processes (every step).
    /// Sleeps in steps of at most 100 ms so that ``shutdown()`` ends it promptly.
    func sweep() async {
        let step = min(settings.checkpointInterval, .milliseconds(100))
        var next = ContinuousClock.now + settings.checkpointInterval
        while isRunning {
            try? await Task.sleep(for: step)
            for process in runtime.commandTimers.takeDue(Timestamp.nowMillis()) { await process.commandDeadlinePassed() }
            guard ContinuousClock.now >= next else { continue }
            next = ContinuousClock.now + settings.checkpointInterval
            for process in runtime.takeDirty() { await process.flush() }
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text = text.dropFirst() }
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }
}
