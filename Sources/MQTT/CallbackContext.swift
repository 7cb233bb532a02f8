internal import CMosquitto
import Logging
import Synchronization

/// A subscription the client renews after every reconnect.
struct SubscriptionRecord: Sendable, Equatable {
    var filter: String
    var qos: MQTTQoS
    var options: MQTTSubscribeOptions
}

/// Everything libmosquitto's callbacks touch, reached through the `obj` pointer.
///
/// Callbacks run on libmosquitto's network thread while it holds its callback mutex, so they only
/// copy data out, take this object's short mutex, and hand results over through continuations and
/// `AsyncStream.Continuation.yield` (which never block). They never call `mosquitto_loop*` and
/// never wait for Swift code.
///
/// `Sendable` without `@unchecked`: every stored property is a `let` of a Sendable type.
final class CallbackContext: Sendable {
    /// Where the first CONNACK after `connect()` stands.
    enum ConnackWait {
        case idle
        case awaiting(CheckedContinuation<Bool, any Error>?)
        case arrived(Result<Bool, MQTTError>)
    }

    struct State {
        var connected = false
        var closed = false
        var subscriptions: [SubscriptionRecord] = []
        var acks = AckTable()
        var connack = ConnackWait.idle
        /// SUBSCRIBEs renewing the recorded subscriptions after the latest (re)connect, by id.
        var renewals: [Int32: String] = [:]
        var renewalCount = 0
        var renewalRefused: [String] = []
    }

    let logger: Logger
    let state = Mutex(State())
    let messagesContinuation: AsyncStream<MQTTMessage>.Continuation
    let eventsContinuation: AsyncStream<MQTTConnectionEvent>.Continuation
    /// With flow control (``MQTTClient/Settings/flowControlLimit``): where inbound messages go
    /// instead of `messagesContinuation`.
    let inbound: InboundQueue?
    /// Inbound messages dropped because the `messages` buffer was full.
    let droppedMessages = Atomic<Int>(0)
    /// Connections established (first connect and every reconnect).
    let connectCount = Atomic<Int>(0)

    init(
        logger: Logger,
        messagesContinuation: AsyncStream<MQTTMessage>.Continuation,
        eventsContinuation: AsyncStream<MQTTConnectionEvent>.Continuation,
        inbound: InboundQueue? = nil
    ) {
        self.logger = logger
        self.messagesContinuation = messagesContinuation
        self.eventsContinuation = eventsContinuation
        self.inbound = inbound
    }

    static func from(_ obj: UnsafeMutableRawPointer?) -> CallbackContext? {
        guard let obj else { return nil }
        return Unmanaged<CallbackContext>.fromOpaque(obj).takeUnretainedValue()
    }

    /// Installs the C callbacks. The closures capture nothing, so they convert to C function
    /// pointers; they find this object through `obj`.
    func install(on mosq: OpaquePointer, debugLogging: Bool) {
        mosquitto_user_data_set(mosq, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_connect_v5_callback_set(mosq) { mosq, obj, rc, flags, _ in
            guard let mosq, let context = CallbackContext.from(obj) else { return }
            context.onConnect(mosq, reasonCode: rc, flags: flags)
        }
        mosquitto_disconnect_v5_callback_set(mosq) { _, obj, rc, _ in
            CallbackContext.from(obj)?.onDisconnect(rc)
        }
        mosquitto_publish_v5_callback_set(mosq) { _, obj, mid, reasonCode, _ in
            CallbackContext.from(obj)?.onAcknowledge(mid, reasonCode: reasonCode)
        }
        mosquitto_subscribe_v5_callback_set(mosq) { _, obj, mid, count, granted, _ in
            // One filter per SUBSCRIBE here, so the first entry is the answer.
            let reason: Int32 = (count > 0 ? granted?[0] : nil) ?? 0x80
            CallbackContext.from(obj)?.onAcknowledge(mid, reasonCode: reason)
        }
        mosquitto_unsubscribe_v5_callback_set(mosq) { _, obj, mid, _ in
            CallbackContext.from(obj)?.onAcknowledge(mid, reasonCode: 0)
        }
        mosquitto_message_v5_callback_set(mosq) { _, obj, message, properties in
            guard let message, let context = CallbackContext.from(obj) else { return }
            context.onMessage(message.pointee, properties)
        }
        // libmosquitto formats a log line for every packet once a log callback is set, so it is
        // installed only when the logger wants debug output.
        if debugLogging {
            mosquitto_log_callback_set(mosq) { _, obj, level, text in
                guard let context = CallbackContext.from(obj), let text else { return }
                context.onLog(level: level, String(cString: text))
            }
        }
    }

    // MARK: Callbacks (network thread)

    private func onConnect(_ mosq: OpaquePointer, reasonCode: Int32, flags: Int32) {
        guard reasonCode == 0 else {
            let description = mqttReasonString(reasonCode)
            let waiter = state.withLock { state -> CheckedContinuation<Bool, any Error>? in
                state.connected = false
                return Self.settleConnack(&state, .failure(.refused(.connectionRefused, reason: reasonCode, "CONNECT")))
            }
            logger.warning("MQTT connection refused", metadata: ["reason": "\(reasonCode) \(description)"])
            eventsContinuation.yield(.connectionRefused(reasonCode: reasonCode, description: description))
            waiter?.resume(throwing: MQTTError.refused(.connectionRefused, reason: reasonCode, "CONNECT"))
            return
        }
        let sessionPresent = flags & 0x01 != 0
        connectCount.add(1, ordering: .relaxed)
        let (subscriptions, waiter) = state.withLock { state in
            state.connected = true
            let waiter = Self.settleConnack(&state, .success(sessionPresent))
            return (state.closed ? [] : state.subscriptions, waiter)
        }
        logger.debug("MQTT connected", metadata: ["sessionPresent": "\(sessionPresent)", "renewing": "\(subscriptions.count)"])
        eventsContinuation.yield(.connected(sessionPresent: sessionPresent))
        // Renew the subscriptions (clean start forgets them). Calling subscribe from a callback is
        // allowed; the SUBACKs are handled later on this same thread, so recording the ids right
        // after each call cannot race with them. The last SUBACK emits `.subscriptionsRenewed`.
        state.withLock { state in
            state.renewals = [:]
            state.renewalCount = 0
            state.renewalRefused = []
        }
        for record in subscriptions {
            var mid: Int32 = 0
            let rc = mosquitto_subscribe_v5(mosq, &mid, record.filter, record.qos.rawValue, record.options.mosquittoOptions, nil)
            if rc == MOSQ_ERR_SUCCESS.rawValue {
                state.withLock { state in
                    state.renewals[mid] = record.filter
                    state.renewalCount += 1
                }
            } else {
                logger.warning("MQTT resubscribe failed", metadata: ["filter": "\(record.filter)", "error": "\(mosquittoErrorString(rc))"])
            }
        }
        waiter?.resume(returning: sessionPresent)
    }

    /// Records the outcome of the first CONNACK; returns the waiter to resume, if one is registered.
    private static func settleConnack(
        _ state: inout State,
        _ outcome: Result<Bool, MQTTError>
    ) -> CheckedContinuation<Bool, any Error>? {
        guard case .awaiting(let waiter) = state.connack else { return nil }
        if let waiter {
            state.connack = .idle
            return waiter
        }
        state.connack = .arrived(outcome)
        return nil
    }

    private func onDisconnect(_ rc: Int32) {
        let waiters = state.withLock { state in
            state.connected = false
            state.renewals = [:]
            return state.acks.connectionLost()
        }
        let description: String
        if rc == 0 {
            description = "disconnected by this client"
        } else if rc >= 0x80 {
            description = mqttReasonString(rc)
        } else {
            description = mosquittoErrorString(rc)
        }
        logger.debug("MQTT disconnected", metadata: ["reason": "\(rc) \(description)"])
        eventsContinuation.yield(.disconnected(reasonCode: rc, description: description))
        for waiter in waiters {
            waiter.resume(throwing: MQTTError(code: .connectionLost, message: "connection lost before the acknowledgement (\(description))"))
        }
    }

    private func onAcknowledge(_ mid: Int32, reasonCode: Int32) {
        enum Outcome {
            case waiter(AckTable.Waiter?)
            case renewal(filter: String, finished: (count: Int, refused: [String])?)
        }
        let outcome = state.withLock { state -> Outcome in
            guard let filter = state.renewals.removeValue(forKey: mid) else {
                return .waiter(state.acks.acknowledge(mid, reasonCode: reasonCode))
            }
            if reasonCode >= 0x80 { state.renewalRefused.append(filter) }
            return .renewal(filter: filter, finished: state.renewals.isEmpty ? (state.renewalCount, state.renewalRefused) : nil)
        }
        switch outcome {
        case .waiter(let waiter):
            waiter?.resume(returning: reasonCode)
        case .renewal(let filter, let finished):
            if reasonCode >= 0x80 {
                logger.warning("MQTT resubscribe refused", metadata: ["filter": "\(filter)", "reason": "\(reasonCode) \(mqttReasonString(reasonCode))"])
            }
            if let finished {
                eventsContinuation.yield(.subscriptionsRenewed(count: finished.count, refused: finished.refused))
            }
        }
    }

    private func onMessage(_ raw: mosquitto_message, _ properties: OpaquePointer?) {
        // libmosquitto frees the message and its properties after the callback: copy everything.
        let topic = raw.topic.map { String(cString: $0) } ?? ""
        let payload: [UInt8]
        if let bytes = raw.payload, raw.payloadlen > 0 {
            payload = Array(UnsafeRawBufferPointer(start: bytes, count: Int(raw.payloadlen)))
        } else {
            payload = []
        }
        let message = MQTTMessage(
            topic: topic,
            payload: payload,
            qos: MQTTQoS(rawValue: raw.qos) ?? .atMostOnce,
            retain: raw.retain,
            properties: PropertyList.read(properties)
        )
        if let inbound {
            // May wait here (the network thread stops reading) until the consumer takes.
            inbound.push(message)
            return
        }
        if case .dropped = messagesContinuation.yield(message) {
            let before = droppedMessages.add(1, ordering: .relaxed).oldValue
            if before == 0 {
                logger.warning("MQTT inbound buffer full: dropping messages", metadata: ["topic": "\(topic)"])
            }
        }
    }

    private func onLog(level: Int32, _ text: String) {
        if level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING) != 0 {
            logger.warning("libmosquitto: \(text)")
        } else {
            logger.debug("libmosquitto: \(text)")
        }
    }

    // MARK: Waiting (Swift tasks)

    /// Arms the wait for the first CONNACK; call before `mosquitto_connect_async`.
    func armConnackWait() {
        state.withLock { $0.connack = .awaiting(nil) }
    }

    /// Disarms it after `connect()` gave up.
    func disarmConnackWait() {
        state.withLock { $0.connack = .idle }
    }

    /// Waits for the first CONNACK armed by `armConnackWait`; returns the session-present flag.
    func waitForConnack() async throws -> Bool {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Bool, any Error>) in
                let ready: Result<Bool, any Error>? = state.withLock { state in
                    if state.closed { return .failure(MQTTError.closed("connect")) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    switch state.connack {
                    case .arrived(let outcome):
                        state.connack = .idle
                        return outcome.mapError { $0 }
                    case .awaiting, .idle:
                        state.connack = .awaiting(continuation)
                        return nil
                    }
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Bool, any Error>? in
                guard case .awaiting(let waiter?) = state.connack else { return nil }
                state.connack = .awaiting(nil)
                return waiter
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Waits for the acknowledgement of `mid` and returns its reason code.
    func waitForAck(_ mid: Int32, survivesReconnect: Bool, operation: String) async throws -> Int32 {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
                let ready: Result<Int32, any Error>? = state.withLock { state in
                    if state.closed { return .failure(MQTTError.closed(operation)) }
                    if Task.isCancelled {
                        state.acks.ignore(mid, survivesReconnect: survivesReconnect)
                        return .failure(CancellationError())
                    }
                    if let reason = state.acks.register(mid, waiter: continuation, survivesReconnect: survivesReconnect) {
                        return .success(reason)
                    }
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.acks.abandon(mid) }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Declares that nobody will wait for `mid`.
    func ignoreAck(_ mid: Int32, survivesReconnect: Bool) {
        state.withLock { $0.acks.ignore(mid, survivesReconnect: survivesReconnect) }
    }

    /// Marks the context closed, fails every waiter and finishes both streams. Called after the
    /// network thread has stopped.
    func finish() {
        let (acks, connack) = state.withLock { state -> ([AckTable.Waiter], CheckedContinuation<Bool, any Error>?) in
            state.closed = true
            state.connected = false
            var connackWaiter: CheckedContinuation<Bool, any Error>? = nil
            if case .awaiting(let waiter) = state.connack { connackWaiter = waiter }
            state.connack = .idle
            return (state.acks.removeAll(), connackWaiter)
        }
        for waiter in acks { waiter.resume(throwing: MQTTError.closed("waiting for an acknowledgement")) }
        connack?.resume(throwing: MQTTError.closed("connect"))
        inbound?.close()
        messagesContinuation.finish()
        eventsContinuation.finish()
    }
}
