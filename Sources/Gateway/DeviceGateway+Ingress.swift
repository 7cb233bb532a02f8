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

    /// Handles one inbound message on the consumer task of broker `index`: never waits on the
    /// cluster (routing happens on the lanes); waits only when a status or reported message
    /// finds its lane full (``IngressLane``: backpressure to the broker).
    func handleInbound(_ message: MQTTMessage, broker: BrokerPool.Entry, index: Int) async {
        brokerReceived[index].increment()
        let id: String
        let kind: DeviceTopics.Kind
        switch topics.parse(message.topic) {
        case .success(let parsed):
            (id, kind) = parsed
        case .failure(.badTopic):
            if let reply = topics.parseReply(message.topic) {
                await handleReply(message, device: reply.id, node: reply.node)
                return
            }
            counters.count(.badTopic)
            rejectLog.warning("badTopic", "rejected message on unexpected topic '\(message.topic.prefix(200))'")
            return
        case .failure(.badID):
            counters.count(.badID)
            rejectLog.warning("badID", "rejected message with an invalid device id on '\(message.topic.prefix(200))'")
            return
        }
        counters.count(received: kind)
        if runtime.tombstones.contains(id) {
            // A device deleted a moment ago: its will, or a message that was on its way.
            counters.count(.deleted)
            return
        }
        switch Self.validatePayload(kind: kind, payload: message.payload, limit: settings.maxPayloadBytes) {
        case .failure(let reason):
            counters.count(reason)
            rejectLog.warning(reason.rawValue, "rejected \(kind.rawValue) from device '\(id)': \(reason.rawValue) (\(message.payload.count) bytes)")
        case .success(let payload):
            let event = DeviceMessage.ingress(
                kind: kind, broker: broker.id, receivedAt: Timestamp.nowMillis(), retained: message.retain, payload: payload)
            let lane = lanes[Int(Self.laneHash(id) % UInt64(lanes.count))]
            await enqueue(IngressLane.Item(id: id, kind: kind, message: event.encoded()), on: lane)
        }
    }

    /// Offers `item` to its lane under the overload policy (``IngressLane``): queued; telemetry
    /// shed (counted in ``GatewayStats/shed``, logged at most once per ``GatewaySettings/rejectLogInterval``);
    /// status and reported waited for (counted in ``GatewayStats/ingressWaits``), never shed.
    func enqueue(_ item: IngressLane.Item, on lane: IngressLane) async {
        inLanes.add(1, ordering: .relaxed)
        while true {
            switch lane.offer(item) {
            case .queued:
                return
            case .shed:
                inLanes.subtract(1, ordering: .relaxed)
                let total = counters.countShed(item.kind)
                rejectLog.warning(
                    "shed",
                    "ingress overloaded: shedding \(item.kind.rawValue) (a lane holds \(lane.capacity) messages); \(total) shed since start, status and reported are kept")
                return
            case .full:
                counters.ingressWaits.add(1, ordering: .relaxed)
                await lane.waitForRoom()
            case .closed:
                inLanes.subtract(1, ordering: .relaxed)
                return
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

    func consumeMessages(_ entry: BrokerPool.Entry, index: Int) async {
        var sinceYield = 0
        for await message in entry.client.messages {
            await handleInbound(message, broker: entry, index: index)
            // While the broker keeps the stream full, `next()` never suspends: without a yield
            // this loop would keep a thread of the (2-thread) cooperative pool to itself and
            // starve the lanes and the device processes it feeds.
            sinceYield += 1
            if sinceYield >= 16 {
                sinceYield = 0
                await Task.yield()
            }
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
    func consumeLane(_ lane: IngressLane) async {
        while let batch = await lane.take() {
            await route(batch: batch)
            inLanes.subtract(batch.count, ordering: .relaxed)
        }
    }

    /// Routes a batch in order: runs of devices the local replica knows go to the node as one
    /// ``SwarmNode/send(batch:)`` (one hop for the run); a device seen for the first time goes
    /// through ``route(_:)`` (whereis-or-register) after the run before it. A cast refused on this
    /// node (its name in transition, say) is retried through ``route(_:)``, in order: the node
    /// handles a batch without suspending, so a refusal covers every message of that device in
    /// the run, and the retries keep their relative order.
    func route(batch: [IngressLane.Item]) async {
        var run: [IngressLane.Item] = []
        for item in batch {
            if node.whereis(item.id) != nil {
                run.append(item)
                continue
            }
            await send(run: run)
            run.removeAll(keepingCapacity: true)
            await route(item)
        }
        await send(run: run)
    }

    private func send(run: [IngressLane.Item]) async {
        guard !run.isEmpty else { return }
        let failures: [(index: Int, error: SwarmError)]
        do {
            failures = try await node.send(batch: run.map { (name: $0.id, message: $0.message) })
        } catch {
            for item in run { await route(item) }  // the node is not running: counted there
            return
        }
        counters.routed.add(run.count - failures.count, ordering: .relaxed)
        for failure in failures { await route(run[failure.index]) }
    }

    /// `whereisOrRegister` then `send` by name; transient cluster errors (a name being started,
    /// handed off or resolved, a ring change, a vanished name) are retried with backoff up to
    /// 6 times (about 1.5 s in all) before the message is counted as `routeFailed`.
    func route(_ item: IngressLane.Item) async {
        var lastError: any Error = SwarmError.timeout
        for attempt in 0..<6 {
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(25 << attempt)) }
            do {
                // The local replica answers without a hop for every device seen before; only a
                // first contact goes through the (atomic) whereis-or-register on its owner.
                if node.whereis(item.id) == nil {
                    _ = try await node.whereisOrRegister(
                        item.id, kind: settings.processKind, groups: [runtime.swarmGroup("all")])
                }
                try await node.send(item.id, item.message)
                counters.routed.add(1, ordering: .relaxed)
                return
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
        counters.count(.routeFailed)
        rejectLog.warning("routeFailed", "could not route a message of device '\(item.id)': \(lastError)")
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
