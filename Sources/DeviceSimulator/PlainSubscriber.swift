internal import CMosquitto
import Synchronization

/// The M1 baseline: a plain libmosquitto subscriber that only counts messages in its callback
/// (threaded loop, no copy, no Swift stream), to measure what the broker can deliver to one
/// client on this machine.
///
/// `@unchecked Sendable`: the only non-Sendable stored property is the handle, used from the
/// caller's thread for setup and shutdown and from libmosquitto's own network thread, which
/// libmosquitto serialises with its per-client mutexes in threaded mode.
public final class PlainSubscriber: @unchecked Sendable {
    private let mosq: OpaquePointer
    private let box: Counters

    final class Counters: Sendable {
        let messages = Atomic<Int>(0)
        let bytes = Atomic<Int>(0)
        let connected = Atomic<Bool>(false)
        let filters: [String]
        let qos: Int32
        init(filters: [String], qos: Int32) {
            self.filters = filters
            self.qos = qos
        }
    }

    /// Messages received so far.
    public var messages: Int { box.messages.load(ordering: .relaxed) }
    /// Payload bytes received so far.
    public var bytes: Int { box.bytes.load(ordering: .relaxed) }
    public var isConnected: Bool { box.connected.load(ordering: .relaxed) }

    /// Connects to `broker` and subscribes to `filters` (on every connect).
    public init(broker: BrokerURL, filters: [String], qos: Int = 0, receiveMaximum: Int = 1000, tlsCAFile: String? = nil) throws {
        try FleetRunner.ensureLibrary()
        box = Counters(filters: filters, qos: Int32(qos))
        guard let raw = mosquitto_new(nil, true, nil) else { throw SimulatorConfigError("mosquitto_new failed") }
        mosq = raw
        mosquitto_int_option(raw, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5)
        mosquitto_int_option(raw, MOSQ_OPT_RECEIVE_MAXIMUM, Int32(receiveMaximum))
        if let username = broker.username {
            mosquitto_username_pw_set(raw, username, broker.password)
        }
        if broker.tls {
            mosquitto_tls_set(raw, tlsCAFile, tlsCAFile == nil ? "/etc/ssl/certs" : nil, nil, nil, nil)
        }
        mosquitto_user_data_set(raw, Unmanaged.passUnretained(box).toOpaque())
        mosquitto_connect_v5_callback_set(raw) { mosq, obj, rc, _, _ in
            guard let obj, rc == 0 else { return }
            let box = Unmanaged<Counters>.fromOpaque(obj).takeUnretainedValue()
            for filter in box.filters {
                mosquitto_subscribe_v5(mosq, nil, filter, box.qos, 0, nil)
            }
            box.connected.store(true, ordering: .relaxed)
        }
        mosquitto_disconnect_v5_callback_set(raw) { _, obj, _, _ in
            guard let obj else { return }
            Unmanaged<Counters>.fromOpaque(obj).takeUnretainedValue().connected.store(false, ordering: .relaxed)
        }
        mosquitto_message_v5_callback_set(raw) { _, obj, message, _ in
            guard let obj, let message else { return }
            let box = Unmanaged<Counters>.fromOpaque(obj).takeUnretainedValue()
            box.messages.add(1, ordering: .relaxed)
            box.bytes.add(Int(message.pointee.payloadlen), ordering: .relaxed)
        }
        let rc = mosquitto_connect_bind_v5(raw, broker.host, Int32(broker.port), 30, nil, nil)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            mosquitto_destroy(raw)
            throw SimulatorConfigError("cannot connect to \(broker): \(String(cString: mosquitto_strerror(rc)))")
        }
        let started = mosquitto_loop_start(raw)
        guard started == MOSQ_ERR_SUCCESS.rawValue else {
            mosquitto_destroy(raw)
            throw SimulatorConfigError("mosquitto_loop_start failed: \(String(cString: mosquitto_strerror(started)))")
        }
    }

    /// Disconnects and joins the network thread.
    public func close() {
        mosquitto_disconnect_v5(mosq, 0, nil)
        mosquitto_loop_stop(mosq, false)
    }

    deinit {
        mosquitto_loop_stop(mosq, true)
        mosquitto_destroy(mosq)
    }
}
