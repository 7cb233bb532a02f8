/// MQTT quality of service. The set is closed by the protocol, so it is an enum.
public enum MQTTQoS: Int32, Sendable, Hashable, Comparable, CaseIterable {
    /// QoS 0: fire and forget.
    case atMostOnce = 0
    /// QoS 1: acknowledged with PUBACK, may be duplicated. Note that libmosquitto sends the PUBACK
    /// of an inbound message *before* the message reaches Swift, so it is not an end-to-end ack.
    case atLeastOnce = 1
    /// QoS 2: four-way handshake.
    case exactlyOnce = 2

    public static func < (lhs: MQTTQoS, rhs: MQTTQoS) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One MQTT 5 user property (a name/value pair; names may repeat and order is kept).
public struct MQTTUserProperty: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }

    public var description: String { "\(name)=\(value)" }
}

/// The MQTT 5 PUBLISH properties the wrapper reads and writes.
///
/// The same type is used for outgoing messages (and the will) and for received ones.
public struct MQTTProperties: Sendable, Hashable {
    /// Response Topic (request/response): where the receiver should publish its reply.
    public var responseTopic: String?
    /// Correlation Data (request/response): opaque bytes echoed in the reply. At most 65 535 bytes.
    public var correlationData: [UInt8]?
    /// User properties, in order.
    public var userProperties: [MQTTUserProperty]
    /// Message Expiry Interval in seconds: the broker drops the message when it has waited longer.
    /// On a received message this is the remaining interval.
    public var messageExpiryInterval: UInt32?
    /// Content Type (a MIME type string, for example `application/json`).
    public var contentType: String?

    public init(
        responseTopic: String? = nil,
        correlationData: [UInt8]? = nil,
        userProperties: [MQTTUserProperty] = [],
        messageExpiryInterval: UInt32? = nil,
        contentType: String? = nil
    ) {
        self.responseTopic = responseTopic
        self.correlationData = correlationData
        self.userProperties = userProperties
        self.messageExpiryInterval = messageExpiryInterval
        self.contentType = contentType
    }

    /// The value of the first user property called `name`, if any.
    public subscript(userProperty name: String) -> String? {
        userProperties.first { $0.name == name }?.value
    }

    /// True when no property is set.
    public var isEmpty: Bool {
        responseTopic == nil && correlationData == nil && userProperties.isEmpty
            && messageExpiryInterval == nil && contentType == nil
    }
}

/// An MQTT application message: what is published, what a will carries, and what is received.
public struct MQTTMessage: Sendable, Hashable {
    /// The topic name (no wildcards).
    public var topic: String
    /// The payload bytes.
    public var payload: [UInt8]
    /// The quality of service (for a received message: the QoS it was delivered with).
    public var qos: MQTTQoS
    /// The retain flag. On a received message it is true when the message came from the broker's
    /// retained store at subscribe time; live forwards arrive with `retain == false` unless the
    /// subscription asked for retain-as-published.
    public var retain: Bool
    /// MQTT 5 properties.
    public var properties: MQTTProperties

    public init(
        topic: String,
        payload: [UInt8],
        qos: MQTTQoS = .atMostOnce,
        retain: Bool = false,
        properties: MQTTProperties = MQTTProperties()
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
    }

    /// A message whose payload is the UTF-8 bytes of `string`.
    public init(
        topic: String,
        string: String,
        qos: MQTTQoS = .atMostOnce,
        retain: Bool = false,
        properties: MQTTProperties = MQTTProperties()
    ) {
        self.init(topic: topic, payload: Array(string.utf8), qos: qos, retain: retain, properties: properties)
    }

    /// The payload decoded as UTF-8 (invalid sequences are replaced).
    public var payloadString: String { String(decoding: payload, as: UTF8.self) }
}

/// MQTT 5 subscription options.
public struct MQTTSubscribeOptions: Sendable, Hashable {
    /// Whether retained messages are sent when the subscription is made.
    public struct RetainHandling: Sendable, Hashable {
        let bits: Int32
        /// Send retained messages on every subscribe (the MQTT default).
        public static let sendOnSubscribe = RetainHandling(bits: 0x00)
        /// Send retained messages only if the subscription did not exist before.
        public static let sendIfNew = RetainHandling(bits: 0x10)
        /// Never send retained messages on subscribe.
        public static let doNotSend = RetainHandling(bits: 0x20)
    }

    /// Do not receive messages published by this same client. Default false. Must stay false for
    /// shared subscriptions (`$share/...`), where it is a protocol error.
    public var noLocal: Bool
    /// Keep the retain flag of live forwards as published. Default false.
    public var retainAsPublished: Bool
    /// Default `.sendOnSubscribe`.
    public var retainHandling: RetainHandling

    public init(noLocal: Bool = false, retainAsPublished: Bool = false, retainHandling: RetainHandling = .sendOnSubscribe) {
        self.noLocal = noLocal
        self.retainAsPublished = retainAsPublished
        self.retainHandling = retainHandling
    }

    /// The options byte for `mosquitto_subscribe_v5` (without the QoS bits).
    var mosquittoOptions: Int32 {
        var bits = retainHandling.bits
        if noLocal { bits |= 0x04 }
        if retainAsPublished { bits |= 0x08 }
        return bits
    }
}

/// A change of the client's connection, delivered on `MQTTClient.events`.
///
/// Reason codes are passed through as libmosquitto reports them: on `.disconnected` the code is
/// 0 for a disconnect this client asked for, an MQTT 5 reason code (≥ 0x80) when the broker sent
/// DISCONNECT, or a libmosquitto error code (for example 7, `MOSQ_ERR_CONN_LOST`) when the network
/// connection broke. `description` is the matching text.
public enum MQTTConnectionEvent: Sendable, Hashable {
    /// CONNACK with success. `sessionPresent` is the broker's session-present flag.
    case connected(sessionPresent: Bool)
    /// CONNACK with a failure reason code; the client keeps retrying with backoff unless this was
    /// the first `connect()`, which then throws `.connectionRefused`.
    case connectionRefused(reasonCode: Int32, description: String)
    /// After a reconnect: the broker answered every SUBSCRIBE that renewed the recorded
    /// subscriptions (`count` of them); `refused` lists the filters it refused. From here on
    /// messages for those subscriptions flow again. Not sent when there was nothing to renew.
    case subscriptionsRenewed(count: Int, refused: [String])
    /// The connection was lost or closed. The client reconnects on its own unless it was closed.
    case disconnected(reasonCode: Int32, description: String)
}

/// The broker's answer to a QoS 1/2 publish (for QoS 0: the message was written to the socket).
public struct MQTTPublishResult: Sendable, Hashable {
    /// The PUBACK/PUBREC reason code: 0 success, 0x10 no matching subscribers (still a success).
    /// Always 0 for QoS 0.
    public var reasonCode: Int32
    /// The libmosquitto message id used on the wire.
    public var messageID: Int32
}
