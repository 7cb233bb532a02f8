internal import CMosquitto
import Glibc
import Logging
import Synchronization

/// An MQTT 5 client for one broker, built on libmosquitto's threaded interface.
///
/// ## Model
/// - libmosquitto runs its own network thread (`mosquitto_loop_start`). Its callbacks copy data
///   out and hand it over without blocking: inbound messages on ``messages``, connection changes
///   on ``events``, acknowledgements to the `async` calls waiting for them.
/// - ``connect()`` waits for the first CONNACK. After that the network thread reconnects on its
///   own with backoff (`mosquitto_reconnect_delay_set`), and on every reconnect the client renews
///   the subscriptions made through ``subscribe(_:qos:options:)`` (clean start forgets them);
///   ``events`` reports `.connected`, then `.subscriptionsRenewed` once every renewal is acked.
/// - ``close(publishWill:)`` sends DISCONNECT, joins the network thread, fails pending waiters
///   and finishes both streams. Dropping the last reference without `close` does the same
///   (blocking the releasing thread for the join).
/// - One client talks to one broker; use one client per broker. Clients share nothing but
///   `mosquitto_lib_init`, which runs once per process.
///
/// ## Delivery caveats (measured on Mosquitto 2.0.11, see the MQTT findings)
/// - libmosquitto sends the PUBACK of an inbound QoS 1 message *before* the message reaches
///   Swift: QoS 1 is not end-to-end at-least-once. A subscriber's in-flight window is its
///   ``Settings/receiveMaximum`` (libmosquitto's default of 20 lost messages in failover tests;
///   this wrapper defaults to 1000).
/// - The broker drops messages (even QoS 0) for a subscriber that falls behind its queue limits.
/// - Request/response latency needs `TCP_NODELAY` on both the broker and the client
///   (``Settings/tcpNoDelay``, on by default).
///
/// ## Streams
/// ``messages`` and ``events`` are single-consumer `AsyncStream`s. Cancelling the task that
/// iterates one of them finishes that stream (an `AsyncStream` rule), so keep one long-lived
/// consumer per stream. They finish when the client is closed.
public final class MQTTClient: Sendable {
    /// Connection settings. Every property has a documented default.
    public struct Settings: Sendable {
        /// Broker host name or address. Default `"127.0.0.1"`.
        public var host: String = "127.0.0.1"
        /// Broker port. Default 1883.
        public var port: Int = 1883
        /// Client identifier. Default: `"swarm-"` plus 16 random hex digits.
        public var clientID: String = MQTTClient.Settings.randomClientID()
        /// MQTT 5 clean start. Default true (what shared-subscription gateway nodes should use:
        /// a persistent member keeps receiving its round-robin share while it is away).
        /// Note: libmosquitto 2.0 sends no Session Expiry Interval on its automatic reconnects,
        /// so a non-clean session here lasts only as long as the broker's default allows.
        public var cleanStart: Bool = true
        /// Keep-alive interval; at least 5 s (libmosquitto's minimum). Default 30 s. A dead
        /// connection is noticed after about 1.5 × this value.
        public var keepAlive: Duration = .seconds(30)
        /// User name for the broker's password file. Default nil (anonymous).
        public var username: String? = nil
        /// Password. Default nil.
        public var password: String? = nil
        /// TLS settings; nil (the default) means plain TCP.
        public var tls: TLS? = nil
        /// Last will: published by the broker when the connection is lost without DISCONNECT,
        /// or when the client disconnects with ``close(publishWill:)`` `true`. Default nil.
        public var will: MQTTMessage? = nil
        /// Disable Nagle on the client socket (`MOSQ_OPT_TCP_NODELAY`). Default true: with Nagle
        /// on either side a request/response round trip costs 40–80 ms instead of about 1 ms.
        public var tcpNoDelay: Bool = true
        /// MQTT 5 Receive Maximum sent in CONNECT: how many inbound QoS 1/2 messages the broker
        /// may have in flight to this client. Default 1000 (libmosquitto's own default is 20,
        /// which lost in-flight messages when a shared-subscription member died).
        public var receiveMaximum: UInt16 = 1000
        /// How many outbound QoS 1/2 messages this client keeps in flight (capped by the
        /// broker's Receive Maximum). Default 100.
        public var sendMaximum: UInt16 = 100
        /// First reconnect delay; whole seconds, at least 1 s. Default 1 s.
        public var reconnectDelay: Duration = .seconds(1)
        /// Longest reconnect delay; whole seconds. Default 30 s.
        public var maxReconnectDelay: Duration = .seconds(30)
        /// Grow the reconnect delay between attempts (libmosquitto's backoff). Default true.
        public var exponentialBackoff: Bool = true
        /// How long ``connect()`` waits for the first successful CONNACK, retrying the TCP
        /// connection with the reconnect delay meanwhile. Default 10 s.
        public var connectTimeout: Duration = .seconds(10)
        /// How long `publish`, `subscribe` and `unsubscribe` wait for their acknowledgement.
        /// Default 10 s.
        public var operationTimeout: Duration = .seconds(10)
        /// At most this many undelivered inbound messages are buffered in ``messages``; newer
        /// ones are dropped and counted in ``droppedMessages``. nil (the default) = unbounded.
        public var inboundBufferLimit: Int? = nil
        /// Flow control instead of loss: when set, inbound messages are not put on ``messages``
        /// but queued for ``nextBatch()``, and when this many wait, libmosquitto's network thread
        /// waits until the consumer takes them. It stops reading the socket meanwhile, so TCP
        /// holds the broker back and the broker queues for this client (its own limits, such as
        /// `max_queued_messages`, then decide; it counts what it drops). Nothing that reached
        /// this client is dropped. While the thread waits it sends nothing either (publishes
        /// and keep-alive pings queue), so the consumer must keep taking: a wait longer than
        /// 1.5 × ``keepAlive`` lets the broker close the connection. nil (the default): the
        /// ``messages`` stream, bounded by ``inboundBufferLimit``.
        public var flowControlLimit: Int? = nil

        /// TLS for the broker connection (`mosquitto_tls_set`).
        public struct TLS: Sendable {
            /// PEM file of trusted CA certificates. Either this or `caPath` must be set.
            public var caFile: String?
            /// Directory of trusted CA certificates (hashed names).
            public var caPath: String?
            /// Client certificate (PEM) for mutual TLS. Default nil.
            public var certFile: String?
            /// Client private key (PEM) for mutual TLS. Default nil.
            public var keyFile: String?
            /// Skip the server host name check (`mosquitto_tls_insecure_set`). Default false;
            /// for tests with self-signed certificates only.
            public var insecureSkipHostnameCheck: Bool

            public init(
                caFile: String? = nil,
                caPath: String? = nil,
                certFile: String? = nil,
                keyFile: String? = nil,
                insecureSkipHostnameCheck: Bool = false
            ) {
                self.caFile = caFile
                self.caPath = caPath
                self.certFile = certFile
                self.keyFile = keyFile
                self.insecureSkipHostnameCheck = insecureSkipHostnameCheck
            }
        }

        public init(host: String = "127.0.0.1", port: Int = 1883) {
            self.host = host
            self.port = port
        }

        /// `"swarm-"` plus 16 random hex digits.
        public static func randomClientID() -> String {
            let value = UInt64.random(in: .min ... .max)
            let hex = String(value, radix: 16)
            return "swarm-" + String(repeating: "0", count: 16 - hex.count) + hex
        }
    }

    /// Where the client is in its life. Guarded by `lifecycle`.
    private enum Phase {
        case idle
        case connecting
        case running
        case closed
    }

    private struct Lifecycle {
        var phase = Phase.idle
        /// The network thread is running and nobody has taken over stopping it.
        var loopStarted = false
    }

    /// The settings this client was created with.
    public let settings: Settings
    /// Inbound messages of every subscription, in arrival order. Single consumer.
    public let messages: AsyncStream<MQTTMessage>
    /// Connection events (connected / refused / disconnected). Single consumer; keeps the newest
    /// 256 events if nobody reads them.
    public let events: AsyncStream<MQTTConnectionEvent>

    private let handle: MosquittoHandle
    private let lifecycle = Mutex(Lifecycle())
    private let logger: Logger

    /// Creates the client and applies the settings; nothing is sent until ``connect()``.
    /// Throws `.invalidArgument` or `.library` when libmosquitto rejects a setting (for
    /// example a TLS file that does not exist).
    public init(settings: Settings, logger: Logger = Logger(label: "swarm.mqtt")) throws {
        try MosquittoLibrary.ensureInitialized()
        guard (1...65535).contains(settings.port) else { throw MQTTError.invalid("port \(settings.port) is out of range") }
        guard settings.receiveMaximum > 0, settings.sendMaximum > 0 else {
            throw MQTTError.invalid("receiveMaximum and sendMaximum must be at least 1")
        }
        self.settings = settings
        self.logger = logger

        let (messages, messagesContinuation) = AsyncStream.makeStream(
            of: MQTTMessage.self,
            bufferingPolicy: settings.inboundBufferLimit.map { .bufferingOldest(max(1, $0)) } ?? .unbounded
        )
        let (events, eventsContinuation) = AsyncStream.makeStream(
            of: MQTTConnectionEvent.self,
            bufferingPolicy: .bufferingNewest(256)
        )
        self.messages = messages
        self.events = events
        let context = CallbackContext(
            logger: logger,
            messagesContinuation: messagesContinuation,
            eventsContinuation: eventsContinuation,
            inbound: settings.flowControlLimit.map { InboundQueue(limit: $0) }
        )

        let clientID: String? = settings.clientID.isEmpty ? nil : settings.clientID
        guard let raw = mosquitto_new(clientID, settings.cleanStart, nil) else {
            context.finish()
            throw MQTTError(code: .library, message: "mosquitto_new failed (out of memory, or an empty client id without clean start)")
        }
        handle = MosquittoHandle(raw: raw, context: context)

        func check(_ rc: Int32, _ what: String) throws {
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                context.finish()
                throw MQTTError.mosquitto(rc, what)
            }
        }
        try check(mosquitto_int_option(raw, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5), "protocol version 5")
        try check(mosquitto_int_option(raw, MOSQ_OPT_TCP_NODELAY, settings.tcpNoDelay ? 1 : 0), "TCP_NODELAY")
        try check(mosquitto_int_option(raw, MOSQ_OPT_RECEIVE_MAXIMUM, Int32(settings.receiveMaximum)), "receive maximum")
        try check(mosquitto_int_option(raw, MOSQ_OPT_SEND_MAXIMUM, Int32(settings.sendMaximum)), "send maximum")
        if settings.username != nil || settings.password != nil {
            try check(mosquitto_username_pw_set(raw, settings.username, settings.password), "username/password")
        }
        if let tls = settings.tls {
            try check(mosquitto_tls_set(raw, tls.caFile, tls.caPath, tls.certFile, tls.keyFile, nil), "TLS settings")
            if tls.insecureSkipHostnameCheck {
                try check(mosquitto_tls_insecure_set(raw, true), "TLS insecure")
            }
        }
        if let will = settings.will {
            let properties = try PropertyList.make(will.properties)
            let rc = will.payload.withUnsafeBytes { bytes in
                mosquitto_will_set_v5(raw, will.topic, Int32(bytes.count), bytes.baseAddress, will.qos.rawValue, will.retain, properties)
            }
            // On success libmosquitto owns the property list; on failure it is ours to free.
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                var list = properties
                mosquitto_property_free_all(&list)
            }
            try check(rc, "will message for \(will.topic)")
        }
        let minDelay = settings.reconnectDelay.wholeSeconds(minimum: 1)
        let maxDelay = max(minDelay, settings.maxReconnectDelay.wholeSeconds(minimum: 1))
        try check(
            mosquitto_reconnect_delay_set(raw, UInt32(minDelay), UInt32(maxDelay), settings.exponentialBackoff),
            "reconnect delay"
        )
        context.install(on: raw, debugLogging: logger.logLevel <= .debug)
    }

    deinit {
        // Last reference gone without close(): stop the network thread here (it never holds a
        // reference to this object, so this is never the network thread). The handle is released
        // after this, so mosquitto_destroy follows the join.
        let mustStop = lifecycle.withLock { state -> Bool in
            let running = state.loopStarted
            state.loopStarted = false
            state.phase = .closed
            return running
        }
        // A network thread waiting for room in the inbound queue must go on, or the join hangs.
        handle.context.inbound?.close()
        if mustStop {
            mosquitto_disconnect_v5(handle.raw, 0, nil)
            mosquitto_loop_stop(handle.raw, false)
        }
        handle.context.finish()
    }

    // MARK: Connection

    /// Connects and waits for the broker's first CONNACK.
    ///
    /// While waiting, a refused TCP connection is retried with the reconnect delay until
    /// ``Settings/connectTimeout``. Throws `.connectionRefused` (with the CONNACK reason code, for
    /// example 0x86 bad user name or password) or `.timedOut`, and then leaves the client idle so
    /// `connect()` may be called again; throws `.closed` after ``close(publishWill:)``.
    /// Returns the broker's session-present flag.
    @discardableResult
    public func connect() async throws -> Bool {
        try lifecycle.withLock { state in
            switch state.phase {
            case .idle: state.phase = .connecting
            case .connecting, .running: throw MQTTError.invalid("connect() called while already connecting or connected")
            case .closed: throw MQTTError.closed("connect")
            }
        }
        let context = handle.context
        let raw = handle.raw
        context.armConnackWait()
        let keepAlive = Int32(settings.keepAlive.wholeSeconds(minimum: 5))
        let rc = mosquitto_connect_bind_async(raw, settings.host, Int32(settings.port), keepAlive, nil)
        // MOSQ_ERR_ERRNO (refused, unreachable) is retried by the network thread; anything else
        // (invalid arguments, unknown host) is final.
        if rc != MOSQ_ERR_SUCCESS.rawValue && rc != MOSQ_ERR_ERRNO.rawValue {
            let error = MQTTError.mosquitto(rc, "connecting to \(settings.host):\(settings.port)")
            context.disarmConnackWait()
            lifecycle.withLock { if $0.phase == .connecting { $0.phase = .idle } }
            throw error
        }
        try lifecycle.withLock { state in
            guard state.phase == .connecting else { throw MQTTError.closed("connect") }
            let started = mosquitto_loop_start(raw)
            guard started == MOSQ_ERR_SUCCESS.rawValue else {
                state.phase = .idle
                throw MQTTError.mosquitto(started, "starting the network thread")
            }
            state.loopStarted = true
        }
        do {
            let sessionPresent = try await withTimeout(settings.connectTimeout, operation: "connect to \(settings.host):\(settings.port)") {
                try await context.waitForConnack()
            }
            try lifecycle.withLock { state in
                guard state.phase == .connecting else { throw MQTTError.closed("connect") }
                state.phase = .running
            }
            logger.info("MQTT connected", metadata: ["broker": "\(settings.host):\(settings.port)", "clientID": "\(settings.clientID)"])
            return sessionPresent
        } catch {
            context.disarmConnackWait()
            await stopNetworkThread(reasonCode: 0)
            lifecycle.withLock { if $0.phase == .connecting { $0.phase = .idle } }
            throw error
        }
    }

    /// Disconnects, stops the network thread, fails pending operations with `.closed` and
    /// finishes ``messages`` and ``events``. Idempotent.
    ///
    /// - Parameter publishWill: send DISCONNECT with reason 0x04 so the broker publishes the
    ///   will anyway (a graceful DISCONNECT with reason 0 discards it). Default false.
    public func close(publishWill: Bool = false) async {
        lifecycle.withLock { $0.phase = .closed }
        // A network thread waiting for room in the inbound queue must go on, or the join hangs.
        handle.context.inbound?.close()
        await stopNetworkThread(reasonCode: publishWill ? 0x04 : 0)
        handle.context.finish()
        logger.debug("MQTT client closed", metadata: ["clientID": "\(settings.clientID)"])
    }

    /// Sends DISCONNECT (when connected) and joins the network thread, once.
    private func stopNetworkThread(reasonCode: Int32) async {
        let mustStop = lifecycle.withLock { state -> Bool in
            let running = state.loopStarted
            state.loopStarted = false
            return running
        }
        guard mustStop else { return }
        let handle = self.handle
        mosquitto_disconnect_v5(handle.raw, reasonCode, nil)
        // The join can take as long as the thread needs to notice; keep it off the cooperative pool.
        await runBlocking { _ = mosquitto_loop_stop(handle.raw, false) }
    }

    /// True while a CONNACK-confirmed connection is up.
    public var isConnected: Bool { handle.context.state.withLock { $0.connected } }

    /// Connections made so far (the first one plus every reconnect).
    public var connectionCount: Int { handle.context.connectCount.load(ordering: .relaxed) }

    /// Inbound messages dropped because ``Settings/inboundBufferLimit`` was reached.
    public var droppedMessages: Int { handle.context.droppedMessages.load(ordering: .relaxed) }

    /// With ``Settings/flowControlLimit``: every inbound message queued since the last call, in
    /// arrival order (at least one), waiting while none is; nil once the client is closed and
    /// the queue is empty. Single consumer. Without flow control: nil at once (use
    /// ``messages``).
    public func nextBatch() async -> [MQTTMessage]? {
        guard let inbound = handle.context.inbound else { return nil }
        return await inbound.next()
    }

    /// With ``Settings/flowControlLimit``: inbound messages queued and not taken yet.
    public var inboundQueued: Int { handle.context.inbound?.count ?? 0 }

    /// With ``Settings/flowControlLimit``: how many times the network thread waited for room
    /// (each wait held the broker back instead of dropping).
    public var flowControlWaits: Int { handle.context.inbound?.waits ?? 0 }

    /// The filters renewed on every reconnect.
    public var subscriptions: [String] { handle.context.state.withLock { $0.subscriptions.map(\.filter) } }

    /// The linked libmosquitto version, for example "2.0.11".
    public static var libraryVersion: String { MosquittoLibrary.version }

    // MARK: Publish

    /// Publishes and waits: for QoS 1/2 until the broker acknowledges (PUBACK/PUBCOMP), for QoS 0
    /// until the message has been written to the socket.
    ///
    /// While the connection is down (between reconnects), a QoS 0 publish fails at once with
    /// `.notConnected`. A QoS 1/2 message is kept in libmosquitto's outgoing queue and sent after
    /// the reconnect (libmosquitto 2.0.11 reports `MOSQ_ERR_NO_CONN` for it but queues it anyway
    /// — measured — so this wrapper treats that as "queued"); the call waits for its PUBACK up to
    /// ``Settings/operationTimeout``. A timed-out QoS 1/2 message may still be delivered later.
    /// Throws `.notConnected` before the first ``connect()``, `.publishRejected` when the broker
    /// answers with a failure reason code (for example 0x87 not authorized by the ACL).
    @discardableResult
    public func publish(_ message: MQTTMessage) async throws -> MQTTPublishResult {
        let mid = try send(message)
        let survives = message.qos != .atMostOnce
        let context = handle.context
        let operation = "publish to \(message.topic)"
        let reason = try await withTimeout(settings.operationTimeout, operation: operation) {
            try await context.waitForAck(mid, survivesReconnect: survives, operation: operation)
        }
        if reason >= 0x80 { throw MQTTError.refused(.publishRejected, reason: reason, operation) }
        return MQTTPublishResult(reasonCode: reason, messageID: mid)
    }

    /// Publishes without waiting for any acknowledgement (the fast path for bulk telemetry).
    /// Returns the message id. Throws only if libmosquitto refuses to queue the message.
    @discardableResult
    public func publishWithoutWaiting(_ message: MQTTMessage) throws -> Int32 {
        let mid = try send(message)
        handle.context.ignoreAck(mid, survivesReconnect: message.qos != .atMostOnce)
        return mid
    }

    /// Convenience for ``publish(_:)-swift.method`` with a string payload.
    @discardableResult
    public func publish(
        topic: String,
        string: String,
        qos: MQTTQoS = .atMostOnce,
        retain: Bool = false,
        properties: MQTTProperties = MQTTProperties()
    ) async throws -> MQTTPublishResult {
        try await publish(MQTTMessage(topic: topic, string: string, qos: qos, retain: retain, properties: properties))
    }

    /// Hands a PUBLISH to libmosquitto and returns its message id.
    private func send(_ message: MQTTMessage) throws -> Int32 {
        switch lifecycle.withLock({ $0.phase }) {
        case .closed: throw MQTTError.closed("publish")
        case .idle: throw MQTTError(code: .notConnected, message: "publish to \(message.topic): connect() first")
        case .connecting, .running: break
        }
        var properties = try PropertyList.make(message.properties)
        defer { mosquitto_property_free_all(&properties) }
        var mid: Int32 = 0
        let rc = message.payload.withUnsafeBytes { bytes in
            mosquitto_publish_v5(
                handle.raw, &mid, message.topic, Int32(bytes.count), bytes.baseAddress,
                message.qos.rawValue, message.retain, properties
            )
        }
        // QoS 1/2 without a connection: queued for the reconnect despite the error code.
        let queued = rc == MOSQ_ERR_NO_CONN.rawValue && message.qos != .atMostOnce
        guard rc == MOSQ_ERR_SUCCESS.rawValue || queued else { throw MQTTError.mosquitto(rc, "publish to \(message.topic)") }
        return mid
    }

    // MARK: Subscribe

    /// Subscribes to `filter` (wildcards and shared subscriptions `$share/group/filter` allowed)
    /// and waits for the SUBACK. Returns the granted QoS.
    ///
    /// The subscription is recorded and renewed after every reconnect. If the connection is down
    /// (now, or before the SUBACK arrives) this throws `.notConnected` / `.connectionLost`, but
    /// the subscription stays recorded and is made on the next reconnect; call
    /// ``unsubscribe(_:)`` to drop it. A subscription the broker refuses (SUBACK ≥ 0x80) is
    /// removed again and throws `.subscriptionRefused`.
    @discardableResult
    public func subscribe(
        _ filter: String,
        qos: MQTTQoS = .atLeastOnce,
        options: MQTTSubscribeOptions = MQTTSubscribeOptions()
    ) async throws -> MQTTQoS {
        if lifecycle.withLock({ $0.phase == .closed }) { throw MQTTError.closed("subscribe") }
        let check = mosquitto_sub_topic_check(filter)
        guard check == MOSQ_ERR_SUCCESS.rawValue else {
            throw MQTTError(code: .invalidArgument, message: "invalid subscription filter \"\(filter)\": \(mosquittoErrorString(check))", mosquittoCode: check)
        }
        let context = handle.context
        let record = SubscriptionRecord(filter: filter, qos: qos, options: options)
        context.state.withLock { state in
            if let index = state.subscriptions.firstIndex(where: { $0.filter == filter }) {
                state.subscriptions[index] = record
            } else {
                state.subscriptions.append(record)
            }
        }
        var mid: Int32 = 0
        let rc = mosquitto_subscribe_v5(handle.raw, &mid, filter, qos.rawValue, options.mosquittoOptions, nil)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            if rc != MOSQ_ERR_NO_CONN.rawValue { removeRecord(filter) }
            throw MQTTError.mosquitto(rc, "subscribe to \(filter)")
        }
        let operation = "subscribe to \(filter)"
        let sentID = mid
        let reason = try await withTimeout(settings.operationTimeout, operation: operation) {
            try await context.waitForAck(sentID, survivesReconnect: false, operation: operation)
        }
        if reason >= 0x80 {
            removeRecord(filter)
            throw MQTTError.refused(.subscriptionRefused, reason: reason, operation)
        }
        return MQTTQoS(rawValue: reason) ?? qos
    }

    /// Removes `filter` from the renewed subscriptions and, when connected, unsubscribes and waits
    /// for the UNSUBACK. Does nothing else when disconnected (a clean-start session has already
    /// forgotten it).
    public func unsubscribe(_ filter: String) async throws {
        if lifecycle.withLock({ $0.phase == .closed }) { throw MQTTError.closed("unsubscribe") }
        removeRecord(filter)
        var mid: Int32 = 0
        let rc = mosquitto_unsubscribe_v5(handle.raw, &mid, filter, nil)
        if rc == MOSQ_ERR_NO_CONN.rawValue { return }
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError.mosquitto(rc, "unsubscribe from \(filter)") }
        let context = handle.context
        let operation = "unsubscribe from \(filter)"
        let sentID = mid
        _ = try await withTimeout(settings.operationTimeout, operation: operation) {
            try await context.waitForAck(sentID, survivesReconnect: false, operation: operation)
        }
    }

    private func removeRecord(_ filter: String) {
        handle.context.state.withLock { $0.subscriptions.removeAll { $0.filter == filter } }
    }

    // MARK: Testing hooks

    /// Breaks the TCP connection without DISCONNECT (`shutdown(2)` on the socket), as a network
    /// failure or a killed process would: the broker publishes the will, and the client then
    /// reconnects on its own. For tests of wills and reconnects.
    func simulateConnectionLoss() {
        let fd = mosquitto_socket(handle.raw)
        if fd >= 0 { _ = shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Outstanding acknowledgement bookkeeping entries (tests check that nothing accumulates).
    var pendingAcknowledgementEntries: Int { handle.context.state.withLock { $0.acks.count } }
}
