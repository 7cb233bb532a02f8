internal import CMosquitto
import Glibc

/// One simulated device's libmosquitto client, driven by its ``DeviceLoop`` (non-threaded mode:
/// every call, and every callback, happens on the loop thread).
///
/// libmosquitto's `obj` pointer is an unretained pointer to this object; the loop owns the
/// object and destroys the mosquitto handle (``destroy()``) before releasing it, so no callback
/// can see a dangling pointer.
final class DeviceConnection {
    enum Phase: Equatable {
        /// Not connected yet, or waiting for a reconnect.
        case idle
        /// TCP connected and CONNECT sent; waiting for CONNACK.
        case connecting
        case connected
        /// Clean exit in progress: offline published, DISCONNECT queued.
        case leaving
        case stopped
    }

    let localIndex: Int
    let globalIndex: Int
    private(set) var behavior: DeviceBehavior
    private unowned let loop: DeviceLoop
    private var mosq: OpaquePointer?
    private(set) var phase = Phase.idle
    private var registered: (fd: Int32, events: UInt32) = (-1, 0)
    private var everConnected = false
    /// This device is counted in `counters.connected`.
    private var countedConnected = false
    private var reconnectAttempt = 0
    private var telemetryArmed = false
    private var reportedArmed = false
    private let telemetryInterval: UInt64
    private let telemetryQoS: Int32
    private var pendingReplies: [UInt32: PendingReply] = [:]
    /// Message id of the clean-exit offline publish; DISCONNECT follows its PUBACK.
    private var leavingMessageID: Int32?
    private let host: String
    private let port: Int32

    struct PendingReply {
        var topic: String
        var correlation: [UInt8]?
        var payload: [UInt8]
    }

    init(localIndex: Int, globalIndex: Int, spec: DeviceSpec, loop: DeviceLoop) throws {
        self.localIndex = localIndex
        self.globalIndex = globalIndex
        self.loop = loop
        let settings = loop.settings
        behavior = DeviceBehavior(spec: spec, prefix: settings.topicPrefix)
        let rate = settings.telemetryRate ?? (spec.profile.telemetry.interval > 0 ? 1 / spec.profile.telemetry.interval : 0)
        telemetryInterval = rate > 0 ? UInt64(1e9 / rate) : 0
        telemetryQoS = Int32(settings.qos ?? spec.profile.telemetry.qos)
        host = settings.broker.host
        port = Int32(settings.broker.port)
        if let bytes = settings.payloadBytes { behavior.overridePayloadBytes(bytes) }

        guard let raw = mosquitto_new(spec.id, true, nil) else {
            throw SimulatorConfigError("mosquitto_new failed for \(spec.id) (out of memory?)")
        }
        mosq = raw
        func check(_ rc: Int32, _ what: String) throws {
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                throw SimulatorConfigError("\(spec.id): \(what): \(String(cString: mosquitto_strerror(rc)))")
            }
        }
        try check(mosquitto_int_option(raw, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5), "protocol version")
        try check(mosquitto_int_option(raw, MOSQ_OPT_TCP_NODELAY, 1), "TCP_NODELAY")
        if let username = settings.broker.username(for: spec.id) {
            try check(mosquitto_username_pw_set(raw, username, settings.broker.password(for: spec.id)), "username/password")
        }
        if settings.broker.tls {
            try check(mosquitto_tls_set(raw, settings.tlsCAFile, settings.tlsCAFile == nil ? "/etc/ssl/certs" : nil, nil, nil, nil), "TLS")
        }
        let offline = DeviceBehavior.offlinePayload
        try check(
            offline.withUnsafeBytes { mosquitto_will_set_v5(raw, behavior.topics.status, Int32($0.count), $0.baseAddress, 1, true, nil) },
            "will")
        mosquitto_user_data_set(raw, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_connect_v5_callback_set(raw) { _, obj, rc, _, _ in
            DeviceConnection.from(obj)?.onConnect(rc)
        }
        mosquitto_disconnect_v5_callback_set(raw) { _, obj, rc, _ in
            DeviceConnection.from(obj)?.onDisconnect(rc)
        }
        mosquitto_publish_v5_callback_set(raw) { _, obj, mid, reason, _ in
            DeviceConnection.from(obj)?.onPublished(mid, reason)
        }
        mosquitto_message_v5_callback_set(raw) { _, obj, message, properties in
            guard let message else { return }
            DeviceConnection.from(obj)?.onMessage(message.pointee, properties)
        }
        loop.counters.add(loop.counters.devices)
    }

    static func from(_ obj: UnsafeMutableRawPointer?) -> DeviceConnection? {
        guard let obj else { return nil }
        return Unmanaged<DeviceConnection>.fromOpaque(obj).takeUnretainedValue()
    }

    func destroy() {
        guard let raw = mosq else { return }
        mosq = nil
        uncountConnected()
        if phase == .connecting { loop.connectEnded() }
        phase = .stopped
        mosquitto_destroy(raw)
    }

    private func uncountConnected() {
        if countedConnected {
            countedConnected = false
            loop.counters.add(loop.counters.connected, -1)
        }
    }

    private var trace: (@Sendable (String) -> Void)? { loop.settings.trace }

    // MARK: Connection

    func connect() {
        guard let raw = mosq, phase == .idle else { return }
        let keepAlive = Int32(behavior.profile.keepAliveSeconds)
        // Non-blocking TCP connect: when the broker's accept backlog is full and a SYN is
        // dropped, a blocking connect would stall every device of this loop for the 1 s SYN
        // retransmission. The CONNECT packet waits in libmosquitto until the socket is writable
        // (EPOLLOUT, see syncRegistration).
        let rc = everConnected || reconnectAttempt > 0
            ? mosquitto_reconnect_async(raw)
            : mosquitto_connect_bind_async(raw, host, port, keepAlive, nil)
        registered = (-1, 0)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            loop.counters.add(loop.counters.connectFailures)
            trace?("\(behavior.id) connect failed: \(String(cString: mosquitto_strerror(rc)))")
            scheduleReconnect()
            return
        }
        phase = .connecting
        loop.connectStarted()
        syncRegistration()
    }

    private func scheduleReconnect() {
        phase = .idle
        reconnectAttempt += 1
        guard !loop.isStopping else {
            phase = .stopped
            return
        }
        let base = loop.settings.reconnectDelay
        let seconds = min(30.0, Double(base.components.seconds) + Double(base.components.attoseconds) / 1e18) * Double(min(8, 1 << min(3, reconnectAttempt - 1)))
        let jitter = Double.random(in: 0.8...1.2)
        loop.schedule(device: localIndex, kind: .reconnect, at: monotonicNanos() + UInt64(max(0.05, min(30, seconds * jitter)) * 1e9))
    }

    private func onConnect(_ rc: Int32) {
        guard phase == .connecting else { return }
        loop.connectEnded()
        guard rc == 0, let raw = mosq else {
            loop.counters.add(loop.counters.connectFailures)
            trace?("\(behavior.id) connection refused: \(String(cString: mosquitto_reason_string(rc)))")
            // The broker closes the connection; on_disconnect follows and schedules the retry.
            phase = .idle
            return
        }
        phase = .connected
        reconnectAttempt = 0
        countedConnected = true
        loop.counters.add(loop.counters.connected)
        loop.counters.add(loop.counters.connects)
        if !everConnected {
            everConnected = true
            loop.firstConnect()
        }
        trace?("\(behavior.id) connected")
        // One SUBSCRIBE for the three device topics, before the birth, so a gateway reacting to
        // the birth cannot beat the subscription.
        let filters = [behavior.topics.desired, behavior.topics.commands, behavior.topics.down]
        var cStrings = filters.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let subscribeRC = cStrings.withUnsafeMutableBufferPointer { buffer -> Int32 in
            buffer.baseAddress!.withMemoryRebound(to: UnsafeMutablePointer<CChar>?.self, capacity: buffer.count) { pointer in
                mosquitto_subscribe_multiple(raw, nil, Int32(filters.count), pointer, 1, 0, nil)
            }
        }
        if subscribeRC != MOSQ_ERR_SUCCESS.rawValue { loop.counters.add(loop.counters.errors) }
        publish(behavior.topics.status, behavior.birthPayload, qos: 1, retain: true)
        publish(behavior.topics.reported, behavior.fullReported, qos: 1)
        loop.counters.add(loop.counters.reportedSent)
        let now = monotonicNanos()
        if telemetryInterval > 0 && !telemetryArmed {
            telemetryArmed = true
            loop.schedule(device: localIndex, kind: .telemetry, at: now + UInt64.random(in: 0..<telemetryInterval))
        }
        let reportedInterval = behavior.profile.reported.interval
        if reportedInterval > 0 && !behavior.profile.reported.fields.isEmpty && !reportedArmed {
            reportedArmed = true
            let nanos = UInt64(reportedInterval * 1e9)
            loop.schedule(device: localIndex, kind: .reported, at: now + UInt64.random(in: 0..<max(1, nanos)))
        }
    }

    private func onDisconnect(_ rc: Int32) {
        let wasConnected = phase == .connected || phase == .leaving
        uncountConnected()
        if phase == .connecting { loop.connectEnded() }
        registered = (-1, 0)  // libmosquitto closed the socket; the kernel dropped the registration.
        switch phase {
        case .leaving:
            phase = .stopped
            loop.counters.add(loop.counters.cleanExits)
            trace?("\(behavior.id) disconnected cleanly")
        case .stopped:
            break
        default:
            if loop.isStopping {
                phase = .stopped
                return
            }
            if wasConnected { loop.counters.add(loop.counters.unexpectedDisconnects) }
            trace?("\(behavior.id) connection lost (\(rc)); reconnecting")
            scheduleReconnect()
        }
    }

    private func onPublished(_ mid: Int32, _ reason: Int32) {
        if phase == .leaving, mid == leavingMessageID, let raw = mosq {
            // The offline status is stored: now DISCONNECT (reason 0, so no will). Waiting for the
            // PUBACK matters: closing a socket with unread input (that PUBACK) makes the kernel
            // send RST, and a broker that sees RST drops the DISCONNECT and publishes the will.
            leavingMessageID = nil
            _ = mosquitto_disconnect_v5(raw, 0, nil)
        }
        loop.counters.add(loop.counters.acked)
        if reason >= 0x80 {
            loop.counters.add(loop.counters.rejected)
            trace?("\(behavior.id) publish rejected: \(String(cString: mosquitto_reason_string(reason)))")
        }
    }

    // MARK: Inbound

    private func onMessage(_ message: mosquitto_message, _ properties: OpaquePointer?) {
        guard let topicPointer = message.topic else { return }
        let topic = String(cString: topicPointer)
        let payload: [UInt8] =
            message.payloadlen > 0 && message.payload != nil
            ? Array(UnsafeRawBufferPointer(start: message.payload, count: Int(message.payloadlen))) : []
        let topics = behavior.topics
        if topic == topics.desired {
            switch behavior.onDesired(payload) {
            case .applied(let version, let patch):
                loop.counters.add(loop.counters.desiredApplied)
                trace?("\(behavior.id) desired v\(version) applied; reporting \(String(decoding: patch, as: UTF8.self))")
                publish(topics.reported, patch, qos: 1)
                loop.counters.add(loop.counters.reportedSent)
            case .stale(let version):
                loop.counters.add(loop.counters.desiredStale)
                trace?("\(behavior.id) desired v\(version) ignored (already applied v\(behavior.desiredVersion))")
            case .invalid(let why):
                loop.counters.add(loop.counters.desiredInvalid)
                trace?("\(behavior.id) invalid desired state: \(why)")
            }
        } else if topic.hasPrefix(topics.commandPrefix) {
            let name = String(topic.dropFirst(topics.commandPrefix.count))
            loop.counters.add(loop.counters.commandsReceived)
            let (responseTopic, correlation) = Self.requestProperties(properties)
            trace?("\(behavior.id) command \(name) \(String(decoding: payload, as: UTF8.self)) reply-to \(responseTopic ?? "none")")
            guard let responseTopic else {
                loop.counters.add(loop.counters.commandsUnanswered)
                return
            }
            switch behavior.onCommand(name: name, body: payload) {
            case .noReply:
                loop.counters.add(loop.counters.commandsUnanswered)
            case .reply(let reply, let delay):
                if delay == 0 {
                    sendReply(PendingReply(topic: responseTopic, correlation: correlation, payload: reply))
                } else {
                    let token = loop.newToken()
                    pendingReplies[token] = PendingReply(topic: responseTopic, correlation: correlation, payload: reply)
                    loop.schedule(device: localIndex, kind: .reply, at: monotonicNanos() + UInt64(delay) * 1_000_000, token: token)
                }
            }
        } else if topic == topics.down {
            behavior.onBroadcast()
            loop.counters.add(loop.counters.broadcastsReceived)
            trace?("\(behavior.id) broadcast \(String(decoding: payload, as: UTF8.self))")
        }
    }

    /// The response topic and correlation data of a request.
    static func requestProperties(_ properties: OpaquePointer?) -> (String?, [UInt8]?) {
        guard let properties else { return (nil, nil) }
        var topic: String?
        var correlation: [UInt8]?
        var text: UnsafeMutablePointer<CChar>?
        if mosquitto_property_read_string(properties, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), &text, false) != nil, let text {
            topic = String(cString: text)
            free(text)
        }
        var bytes: UnsafeMutableRawPointer?
        var length: UInt16 = 0
        if mosquitto_property_read_binary(properties, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), &bytes, &length, false) != nil {
            correlation = bytes.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(length))) } ?? []
            free(bytes)
        }
        return (topic, correlation)
    }

    private func sendReply(_ reply: PendingReply) {
        guard phase == .connected, let raw = mosq else {
            loop.counters.add(loop.counters.commandsUnanswered)
            return
        }
        var properties: OpaquePointer?
        if let correlation = reply.correlation {
            _ = correlation.withUnsafeBytes {
                mosquitto_property_add_binary(&properties, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), $0.baseAddress, UInt16($0.count))
            }
        }
        _ = mosquitto_property_add_string(&properties, Int32(MQTT_PROP_CONTENT_TYPE.rawValue), "application/json")
        let rc = reply.payload.withUnsafeBytes {
            mosquitto_publish_v5(raw, nil, reply.topic, Int32($0.count), $0.baseAddress, 1, false, properties)
        }
        mosquitto_property_free_all(&properties)
        if rc == MOSQ_ERR_SUCCESS.rawValue {
            loop.counters.add(loop.counters.published)
            loop.counters.add(loop.counters.commandsAnswered)
            trace?("\(behavior.id) replied on \(reply.topic): \(String(decoding: reply.payload, as: UTF8.self))")
        } else {
            loop.counters.add(loop.counters.errors)
            loop.counters.add(loop.counters.commandsUnanswered)
        }
    }

    // MARK: Outbound

    /// Publishes; returns the message id, or nil when libmosquitto refused (counted as an error).
    @discardableResult
    private func publish(_ topic: String, _ payload: [UInt8], qos: Int32, retain: Bool = false) -> Int32? {
        guard let raw = mosq else { return nil }
        var mid: Int32 = 0
        let rc = payload.withUnsafeBytes {
            mosquitto_publish_v5(raw, &mid, topic, Int32($0.count), $0.baseAddress, qos, retain, nil)
        }
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            loop.counters.add(loop.counters.errors)
            return nil
        }
        loop.counters.add(loop.counters.published)
        trace?("\(behavior.id) -> \(topic)\(retain ? " (retained)" : "") \(String(decoding: payload, as: UTF8.self))")
        return mid
    }

    func onTimer(_ timer: Timer, now: UInt64) {
        switch timer.kind {
        case .telemetry:
            guard telemetryInterval > 0, phase != .stopped, phase != .leaving else {
                telemetryArmed = false
                return
            }
            if phase == .connected, let raw = mosq {
                if mosquitto_want_write(raw) {
                    // The socket still holds unsent data: skip this tick instead of queueing
                    // without bound inside libmosquitto.
                    loop.counters.add(loop.counters.telemetrySkipped)
                } else {
                    let payload = behavior.nextTelemetry(unixMilliseconds: unixMillis())
                    if publish(behavior.topics.telemetry, payload, qos: telemetryQoS) != nil {
                        loop.counters.add(loop.counters.telemetrySent)
                    }
                    syncRegistration()
                }
            }
            var next = timer.due + telemetryInterval
            if next + 1_000_000_000 < now { next = now }  // far behind: drop the backlog
            loop.schedule(device: localIndex, kind: .telemetry, at: next)
        case .reported:
            guard phase != .stopped, phase != .leaving else {
                reportedArmed = false
                return
            }
            if phase == .connected, let patch = behavior.nextReportedPatch() {
                if publish(behavior.topics.reported, patch, qos: 1) != nil { loop.counters.add(loop.counters.reportedSent) }
                syncRegistration()
            }
            loop.schedule(device: localIndex, kind: .reported, at: now + UInt64(behavior.profile.reported.interval * 1e9))
        case .reply:
            if let reply = pendingReplies.removeValue(forKey: timer.token) {
                sendReply(reply)
                syncRegistration()
            }
        case .reconnect:
            if phase == .idle { connect() }
        }
    }

    // MARK: Driving libmosquitto

    func readable() {
        guard let raw = mosq else { return }
        let rc = mosquitto_loop_read(raw, 64)
        if rc == MOSQ_ERR_SUCCESS.rawValue, mosquitto_want_write(raw) {
            _ = mosquitto_loop_write(raw, 64)
        }
    }

    func writable() {
        guard let raw = mosq else { return }
        _ = mosquitto_loop_write(raw, 64)
    }

    /// Keep-alive (PINGREQ) and timeouts; once a second.
    func misc() {
        guard let raw = mosq else { return }
        _ = mosquitto_loop_misc(raw)
        if mosquitto_want_write(raw) { _ = mosquitto_loop_write(raw, 64) }
        syncRegistration()
    }

    /// Keeps the epoll registration in step with the client's socket and pending output.
    func syncRegistration() {
        guard let raw = mosq else { return }
        let fd = mosquitto_socket(raw)
        guard fd >= 0 else {
            registered = (-1, 0)
            return
        }
        let events = loop.register(fd: fd, device: localIndex, wantWrite: mosquitto_want_write(raw), previous: registered)
        registered = (fd, events)
    }

    // MARK: Exit

    func stop(abrupt: Bool) {
        guard let raw = mosq else {
            phase = .stopped
            return
        }
        switch phase {
        case .connected where abrupt, .connecting where abrupt:
            // Close the TCP connection without DISCONNECT: the broker publishes the will.
            let fd = mosquitto_socket(raw)
            if fd >= 0 { _ = shutdown(fd, Int32(SHUT_RDWR)) }
            loop.counters.add(loop.counters.abruptExits)
            trace?("\(behavior.id) dropped the connection (abrupt exit)")
            destroy()
        case .connected:
            // Publish offline (retained, QoS 1); DISCONNECT follows its PUBACK (onPublished).
            phase = .leaving
            leavingMessageID = publish(behavior.topics.status, DeviceBehavior.offlinePayload, qos: 1, retain: true)
            if leavingMessageID == nil { _ = mosquitto_disconnect_v5(raw, 0, nil) }
            if mosquitto_want_write(raw) { _ = mosquitto_loop_write(raw, 64) }
            syncRegistration()
        default:
            destroy()
        }
    }
}
