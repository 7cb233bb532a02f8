internal import CMosquitto
import Glibc

/// An error from the MQTT layer.
///
/// `code` says what went wrong. When libmosquitto returned an error, `mosquittoCode` holds its
/// `MOSQ_ERR_*` value and `message` includes `mosquitto_strerror`; when the broker refused
/// something with an MQTT 5 reason code (CONNACK, SUBACK, PUBACK), `reasonCode` holds it and
/// `message` includes `mosquitto_reason_string`.
public struct MQTTError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is. A struct with static members, so new kinds can be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let description: String
        private init(_ name: String) { self.description = name }

        /// A libmosquitto call failed (`mosquittoCode` is set).
        public static let library = Code("library")
        /// The broker refused the connection in its CONNACK (`reasonCode` is set), for example
        /// 0x86 bad user name or password, 0x87 not authorized.
        public static let connectionRefused = Code("connectionRefused")
        /// The broker refused a subscription in its SUBACK (`reasonCode` is set).
        public static let subscriptionRefused = Code("subscriptionRefused")
        /// The broker rejected a QoS 1/2 publish in its PUBACK/PUBREC (`reasonCode` is set), for
        /// example 0x87 not authorized by the ACL.
        public static let publishRejected = Code("publishRejected")
        /// An operation did not complete within its timeout.
        public static let timedOut = Code("timedOut")
        /// The client is not connected to the broker right now.
        public static let notConnected = Code("notConnected")
        /// The connection dropped before the operation was acknowledged.
        public static let connectionLost = Code("connectionLost")
        /// The client was closed.
        public static let closed = Code("closed")
        /// An argument was invalid (topic, filter, property size, setting).
        public static let invalidArgument = Code("invalidArgument")
        /// The embedded broker could not be started or prepared.
        public static let broker = Code("broker")
    }

    /// What kind of failure this is.
    public var code: Code
    /// The libmosquitto error code (`MOSQ_ERR_*`), when a libmosquitto call failed.
    public var mosquittoCode: Int32?
    /// The MQTT 5 reason code, when the broker refused something.
    public var reasonCode: Int32?
    /// A human-readable explanation.
    public var message: String

    public init(code: Code, message: String, mosquittoCode: Int32? = nil, reasonCode: Int32? = nil) {
        self.code = code
        self.message = message
        self.mosquittoCode = mosquittoCode
        self.reasonCode = reasonCode
    }

    public var description: String {
        var text = "MQTTError.\(code): \(message)"
        if let mosquittoCode { text += " [MOSQ_ERR \(mosquittoCode)]" }
        if let reasonCode { text += " [reason 0x\(String(reasonCode, radix: 16))]" }
        return text
    }
}

extension MQTTError {
    /// Wraps a failed libmosquitto return code. `MOSQ_ERR_NO_CONN` becomes `.notConnected`;
    /// `MOSQ_ERR_ERRNO` includes the C `errno` text.
    static func mosquitto(_ rc: Int32, _ operation: String) -> MQTTError {
        var text = "\(operation): \(mosquittoErrorString(rc))"
        if rc == MOSQ_ERR_ERRNO.rawValue {
            let savedErrno = errno
            text += " (\(String(cString: strerror(savedErrno))))"
        }
        let code: Code = rc == MOSQ_ERR_NO_CONN.rawValue ? .notConnected : .library
        return MQTTError(code: code, message: text, mosquittoCode: rc)
    }

    /// A refusal by the broker carrying an MQTT 5 reason code.
    static func refused(_ code: Code, reason: Int32, _ operation: String) -> MQTTError {
        MQTTError(code: code, message: "\(operation): \(mqttReasonString(reason))", reasonCode: reason)
    }

    static func timedOut(_ operation: String, after timeout: Duration) -> MQTTError {
        MQTTError(code: .timedOut, message: "\(operation) did not complete within \(timeout)")
    }

    static func closed(_ operation: String) -> MQTTError {
        MQTTError(code: .closed, message: "\(operation): the client is closed")
    }

    static func invalid(_ message: String) -> MQTTError {
        MQTTError(code: .invalidArgument, message: message)
    }
}

/// `mosquitto_strerror` for a libmosquitto error code.
func mosquittoErrorString(_ rc: Int32) -> String {
    String(cString: mosquitto_strerror(rc))
}

/// `mosquitto_reason_string` for an MQTT 5 reason code.
func mqttReasonString(_ reason: Int32) -> String {
    String(cString: mosquitto_reason_string(reason))
}
