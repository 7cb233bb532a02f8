import Logging
import MQTT
import SwarmCore
import SwarmNode
import Synchronization

extension DeviceGateway {
    /// Validates an inbound device message and normalises its payload. Pure: no I/O.
    ///
    /// - status: the plain strings `online` / `offline` (also as JSON strings) become
    ///   `{"status": …}`; otherwise a JSON object whose `status` is `online` or `offline`.
    /// - telemetry, reported: a JSON object.
    /// Payloads over `limit` bytes are refused before parsing.
    static func validatePayload(kind: DeviceTopics.Kind, payload: [UInt8], limit: Int) -> Result<[UInt8], GatewayCounters.Reject> {
        guard payload.count <= limit else { return .failure(.oversized) }
        if kind == .status {
            let text = String(decoding: payload, as: UTF8.self).trimmingWhitespace()
            if text == "online" || text == "offline" {
                return .success(JSONValue.object(["status": .string(text)]).serialized())
            }
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

    /// Handles one inbound message on the consumer task of broker `index`: never blocks on the
    /// cluster (routing happens on the lanes).
    func handleInbound(_ message: MQTTMessage, broker: BrokerPool.Entry, index: Int) {
        brokerReceived[index].increment()
        if message.topic == replyTopic {
            handleReply(message)
            return
        }
        let id: String
        let kind: DeviceTopics.Kind
        switch topics.parse(message.topic) {
        case .success(let parsed):
            (id, kind) = parsed
        case .failure(.badTopic):
            counters.count(.badTopic)
            rejectLog.warning("badTopic", "rejected message on unexpected topic '\(message.topic.prefix(200))'")
            return
        case .failure(.badID):
            counters.count(.badID)
            rejectLog.warning("badID", "rejected message with an invalid device id on '\(message.topic.prefix(200))'")
            return
        }
        counters.count(received: kind)
        switch Self.validatePayload(kind: kind, payload: message.payload, limit: settings.maxPayloadBytes) {
        case .failure(let reason):
            counters.count(reason)
            rejectLog.warning(reason.rawValue, "rejected \(kind.rawValue) from device '\(id)': \(reason.rawValue) (\(message.payload.count) bytes)")
        case .success(let payload):
            let event = DeviceMessage.ingress(
                kind: kind, broker: broker.id, receivedAt: Timestamp.nowMillis(), retained: message.retain, payload: payload)
            let lane = Int(Self.laneHash(id) % UInt64(laneInputs.count))
            inLanes.add(1, ordering: .relaxed)
            if case .terminated = laneInputs[lane].yield(LaneItem(id: id, message: event.encoded())) {
                inLanes.subtract(1, ordering: .relaxed)
            }
        }
    }

    func handleReply(_ message: MQTTMessage) {
        guard let key = message.properties.correlationData, replies.deliver(key, message.payload) else {
            counters.repliesUnmatched.add(1, ordering: .relaxed)
            return
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
            handleInbound(message, broker: entry, index: index)
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

    /// One ordered lane: route each message to its device process, in arrival order.
    func consumeLane(_ stream: AsyncStream<LaneItem>) async {
        for await item in stream {
            await route(item)
            inLanes.subtract(1, ordering: .relaxed)
        }
    }

    /// `whereisOrRegister` then `send` by name; transient cluster errors (a name being started,
    /// handed off or resolved, a ring change, a vanished name) are retried with backoff up to
    /// 6 times (about 1.5 s in all) before the message is counted as `routeFailed`.
    func route(_ item: LaneItem) async {
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

    /// Writes the coalesced checkpoints every ``GatewaySettings/checkpointInterval``.
    /// Sleeps in steps of at most 100 ms so that ``shutdown()`` ends it promptly.
    func sweep() async {
        let step = min(settings.checkpointInterval, .milliseconds(100))
        var next = ContinuousClock.now + settings.checkpointInterval
        while isRunning {
            try? await Task.sleep(for: step)
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
