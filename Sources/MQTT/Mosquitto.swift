internal import CMosquitto
import Dispatch
import Glibc

/// Process-wide libmosquitto setup.
///
/// `mosquitto_lib_init` is the one libmosquitto call that is not thread safe. A global `let` is
/// initialised exactly once, under the runtime's `swift_once`, however many clients start
/// concurrently; `mosquitto_lib_cleanup` is never called (the library lives as long as the process).
enum MosquittoLibrary {
    private static let initResult: Int32 = mosquitto_lib_init()

    /// Initialises libmosquitto on first use; throws if that failed.
    static func ensureInitialized() throws {
        let rc = initResult
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError.mosquitto(rc, "mosquitto_lib_init") }
    }

    /// The linked libmosquitto version, for example "2.0.11".
    static var version: String {
        var major: Int32 = 0
        var minor: Int32 = 0
        var revision: Int32 = 0
        mosquitto_lib_version(&major, &minor, &revision)
        return "\(major).\(minor).\(revision)"
    }
}

/// Owns one `struct mosquitto *` and the callback context its `obj` pointer refers to.
///
/// Lifetime: libmosquitto's `obj` (userdata) is an *unretained* pointer to `context`; this object
/// keeps `context` alive strongly, and destroys the mosquitto instance in `deinit`. Everyone who
/// runs `mosquitto_loop_stop` holds a reference to this handle while doing so, and the network
/// thread never holds one, so `mosquitto_destroy` (and the release of `context`) can only happen
/// after the network thread has been joined: no callback can see a dangling `obj`.
///
/// `@unchecked Sendable`: the only non-Sendable stored property is the `OpaquePointer`. The calls
/// made on it from several threads (publish, subscribe, unsubscribe, disconnect, socket lookups)
/// are the ones libmosquitto makes thread safe with its own per-client mutexes in threaded mode
/// (`mosquitto_loop_start`); setup calls happen in `MQTTClient.init` before the handle is shared,
/// and connect / loop_start / loop_stop are serialised by `MQTTClient`'s lifecycle state.
final class MosquittoHandle: @unchecked Sendable {
    let raw: OpaquePointer
    let context: CallbackContext

    init(raw: OpaquePointer, context: CallbackContext) {
        self.raw = raw
        self.context = context
    }

    deinit {
        mosquitto_destroy(raw)
    }
}

/// Runs a blocking C call (thread join, blocking connect) on a Dispatch worker, so it never parks
/// one of Swift concurrency's cooperative threads.
func runBlocking<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(returning: work())
        }
    }
}

/// Runs `body` and fails with `MQTTError.timedOut` if it has not finished after `timeout`; the
/// body is then cancelled (it must react to cancellation, as the waiters here do).
func withTimeout<T: Sendable>(
    _ timeout: Duration,
    operation: String,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw MQTTError.timedOut(operation, after: timeout)
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw CancellationError() }
        return first
    }
}

extension Duration {
    /// Whole seconds, rounded up, at least `minimum`: libmosquitto takes seconds as C ints.
    func wholeSeconds(minimum: Int) -> Int {
        let (seconds, attoseconds) = components
        let rounded = Int(seconds) + (attoseconds > 0 ? 1 : 0)
        return max(minimum, rounded)
    }
}

// MARK: - MQTT 5 properties <-> libmosquitto property lists

/// Converts between `MQTTProperties` and libmosquitto `mosquitto_property` lists.
enum PropertyList {
    private static func id(_ property: mqtt5_property) -> Int32 { Int32(property.rawValue) }

    /// Builds a property list for PUBLISH or the will; the caller frees it with
    /// `mosquitto_property_free_all` (or hands ownership to libmosquitto where documented).
    /// Returns nil for empty properties.
    static func make(_ properties: MQTTProperties) throws -> OpaquePointer? {
        if properties.isEmpty { return nil }
        var list: OpaquePointer? = nil
        var rc = MOSQ_ERR_SUCCESS.rawValue
        func fail(_ what: String) -> MQTTError {
            mosquitto_property_free_all(&list)
            return MQTTError.mosquitto(rc, "adding MQTT 5 property \(what)")
        }
        if let topic = properties.responseTopic {
            rc = mosquitto_property_add_string(&list, id(MQTT_PROP_RESPONSE_TOPIC), topic)
            if rc != 0 { throw fail("response topic") }
        }
        if let data = properties.correlationData {
            guard data.count <= Int(UInt16.max) else {
                mosquitto_property_free_all(&list)
                throw MQTTError.invalid("correlation data is \(data.count) bytes; MQTT allows at most 65535")
            }
            rc = data.withUnsafeBytes { bytes in
                mosquitto_property_add_binary(&list, id(MQTT_PROP_CORRELATION_DATA), bytes.baseAddress, UInt16(bytes.count))
            }
            if rc != 0 { throw fail("correlation data") }
        }
        if let expiry = properties.messageExpiryInterval {
            rc = mosquitto_property_add_int32(&list, id(MQTT_PROP_MESSAGE_EXPIRY_INTERVAL), expiry)
            if rc != 0 { throw fail("message expiry interval") }
        }
        if let contentType = properties.contentType {
            rc = mosquitto_property_add_string(&list, id(MQTT_PROP_CONTENT_TYPE), contentType)
            if rc != 0 { throw fail("content type") }
        }
        for pair in properties.userProperties {
            rc = mosquitto_property_add_string_pair(&list, id(MQTT_PROP_USER_PROPERTY), pair.name, pair.value)
            if rc != 0 { throw fail("user property \(pair.name)") }
        }
        return list
    }

    /// Copies the properties of a received message out of libmosquitto's list (which is freed
    /// when the callback returns).
    static func read(_ list: OpaquePointer?) -> MQTTProperties {
        var result = MQTTProperties()
        guard let list else { return result }

        var string: UnsafeMutablePointer<CChar>? = nil
        if mosquitto_property_read_string(list, id(MQTT_PROP_RESPONSE_TOPIC), &string, false) != nil, let string {
            result.responseTopic = String(cString: string)
            free(string)
        }
        var contentType: UnsafeMutablePointer<CChar>? = nil
        if mosquitto_property_read_string(list, id(MQTT_PROP_CONTENT_TYPE), &contentType, false) != nil, let contentType {
            result.contentType = String(cString: contentType)
            free(contentType)
        }
        var data: UnsafeMutableRawPointer? = nil
        var length: UInt16 = 0
        if mosquitto_property_read_binary(list, id(MQTT_PROP_CORRELATION_DATA), &data, &length, false) != nil {
            if let data {
                result.correlationData = Array(UnsafeRawBufferPointer(start: data, count: Int(length)))
                free(data)
            } else {
                result.correlationData = []
            }
        }
        var expiry: UInt32 = 0
        if mosquitto_property_read_int32(list, id(MQTT_PROP_MESSAGE_EXPIRY_INTERVAL), &expiry, false) != nil {
            result.messageExpiryInterval = expiry
        }

        var cursor: OpaquePointer? = list
        var skipFirst = false
        while true {
            var name: UnsafeMutablePointer<CChar>? = nil
            var value: UnsafeMutablePointer<CChar>? = nil
            guard let found = mosquitto_property_read_string_pair(cursor, id(MQTT_PROP_USER_PROPERTY), &name, &value, skipFirst) else {
                break
            }
            result.userProperties.append(
                MQTTUserProperty(name.map { String(cString: $0) } ?? "", value.map { String(cString: $0) } ?? "")
            )
            free(name)
            free(value)
            cursor = found
            skipFirst = true
        }
        return result
    }
}
