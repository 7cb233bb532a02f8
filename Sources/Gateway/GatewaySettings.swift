import GatewayStore
import Logging
import MQTT
import SwarmJSON

/// Configuration of one node's ``DeviceGateway``. Every field has a documented default except
/// the brokers (at least one).
public struct GatewaySettings: Sendable {
    /// One MQTT broker the devices connect to. With several, devices are sharded over them and
    /// every gateway node joins the share group on every broker.
    public struct Broker: Sendable {
        /// A stable name for the broker, the same on every node (it is recorded in device twins
        /// as the broker the device last talked through). Default: `host:port`.
        public var id: String
        /// Client settings (host, port, credentials, TLS…). The client id is derived from the
        /// node name when left at `MQTTClient.Settings`' random default
        /// (``GatewaySettings/clientID(node:brokerIndex:)``); an explicit client id is kept.
        public var client: MQTTClient.Settings

        public init(id: String? = nil, client: MQTTClient.Settings) {
            self.id = id ?? "\(client.host):\(client.port)"
            self.client = client
        }
    }

    /// The brokers, in the same order on every node.
    public var brokers: [Broker]
    /// Device topic prefix (docs/gateway.md, “Device contract”). Default `devices`.
    public var topicPrefix = "devices"
    /// Shared-subscription group name (`$share/{group}/…`). Default `swarm-gateway`.
    public var shareGroup = "swarm-gateway"
    /// Largest accepted inbound payload in bytes (larger ones are rejected and counted).
    /// Default 64 KiB.
    public var maxPayloadBytes = 64 * 1024
    /// The Swarm process kind of device processes. Default `device`.
    public var processKind = "device"
    /// Prefix of the Swarm group names that hold device groups: device group `g` is Swarm group
    /// `{groupPrefix}g`, so device groups never clash with other users of the node. Default
    /// `device-group:`.
    public var groupPrefix = "device-group:"
    /// Shortest interval between two checkpoints of one device for telemetry and reported
    /// changes (status, desired and group changes checkpoint at once). Default 250 ms.
    public var checkpointInterval: Duration = .milliseconds(250)
    /// Default command timeout when the caller gives none. Default 5 s.
    public var commandTimeout: Duration = .seconds(5)
    /// Default group query timeout. Default 5 s.
    public var queryTimeout: Duration = .seconds(5)
    /// Ingress lanes: inbound messages are spread over this many ordered queues by a hash of the
    /// device id, so a slow first-contact registration holds up only its lane, and one device's
    /// messages keep their arrival order on this node. Default 8.
    public var ingressLanes = 8
    /// Bound of each ingress lane (the overload policy, ``IngressLane``): telemetry is queued
    /// while a lane holds fewer than this many messages and shed (counted, logged) beyond;
    /// status and reported messages may fill twice as many and are never shed (beyond that the
    /// broker consumer waits). With the default 8 lanes, at most 8 × 1,024 telemetry messages
    /// wait on a node. Default 1,024.
    public var ingressLaneCapacity = 1024
    /// Inbound messages each broker client holds for the broker consumer before its network
    /// thread stops reading (``MQTTClient/Settings/flowControlLimit``, unless the broker's client
    /// settings set one): with the lanes' waits this is the backpressure chain that keeps every
    /// QoS 1 message the broker delivered. Default 4,096.
    public var ingressFlowControlLimit = 4096
    /// QoS of the ingress subscriptions. Default 1.
    public var ingressQoS: MQTTQoS = .atLeastOnce
    /// Shortest interval between two log lines about rejected input of one kind. Default 5 s.
    public var rejectLogInterval: Duration = .seconds(5)
    /// Called by a device process after it applied an inbound device message (with the device
    /// id, the kind and the parsed payload), on the node that hosts the process. For benchmarks
    /// and tests (publish-to-handled latency); must return quickly. Default nil.
    public var ingressObserver: (@Sendable (_ id: String, _ kind: DeviceTopics.Kind, _ payload: JSONValue) -> Void)?
    /// Creates and removes device logins on the brokers (``EmbeddedBrokerLogins``,
    /// ``DynamicSecurityLogins``): used by provisioning with a password and by deletion. nil:
    /// device logins are not managed here; provisioning with a password is refused
    /// (``GatewayError/credentialsNotManaged``). Several nodes may share one manager. Default nil.
    public var logins: (any DeviceLoginManager)?
    /// The durable store's writer (docs/deployment.md, “Durable state”; engines in `GatewayStoreEngines`, opened by the
    /// caller): device state is written through it (``DeviceStorage``) and recovered from it at
    /// start (``DeviceRecovery``). The gateway runs it from ``DeviceGateway/start()`` and closes it
    /// (after a last flush) in ``DeviceGateway/shutdown()``. nil: state lives in memory and in
    /// successor replicas only, and a restart of every node loses it. Default nil.
    public var store: StoreWriter?
    /// Recovery waits until the ring has not changed for this long (at most ten times it) before
    /// it sends stored rows to their owners. Default 1 s.
    public var recoverySettle: Duration = .seconds(1)
    /// Longest recovery keeps API writes waiting for peers still reading their stores; after it
    /// they are taken anyway (logged). Default 30 s.
    public var recoveryTimeout: Duration = .seconds(30)
    /// Rows read from the store per page at recovery. Default 1,000.
    public var recoveryPage = 1_000
    /// The event stream, its store, webhooks and the broker sink (docs/gateway.md, “Events”, ``EventHub``).
    /// Default: in memory only (``EventSettings/store`` nil), no broker sink.
    public var events = EventSettings()
    /// Logger for the gateway.
    public var logger = Logger(label: "swarm.gateway")

    /// Settings for `brokers`, defaults elsewhere.
    public init(brokers: [Broker]) {
        self.brokers = brokers
    }

    /// The Swarm kind of the gateway's per-node process (``GatewayNodeProcess``).
    static let nodeProcessKind = "gateway-node"
    /// The Swarm group every gateway node's process joins: one message per node.
    public static let nodeGroup = "gateway-nodes"

    /// The Swarm kind of the event hub's per-node process (``EventHubProcess``).
    static let eventHubProcessKind = "gateway-events"
    /// The Swarm group of every node's event hub process.
    public static let eventHubGroup = "gateway-event-hubs"
    /// The registered name of the event hub process on node `token`: `gateway-events:{token}`.
    public static func eventHubProcessName(_ token: String) -> String { "gateway-events:" + token }
    /// The Swarm kind of webhook sink processes (``WebhookProcess``, named `webhook:{id}`).
    static let webhookProcessKind = "webhook"

    /// The registered name of the gateway process on node `token` (a topic-safe node name, the
    /// last level of a reply topic): `gateway-node:{token}`.
    public static func nodeProcessName(_ token: String) -> String { "gateway-node:" + token }

    /// The MQTT client id of `node` on `broker` (`swarm-gw-{node}-{broker index}`, with
    /// characters outside `[A-Za-z0-9._-]` replaced by `_`).
    public static func clientID(node: String, brokerIndex: Int) -> String {
        "swarm-gw-\(topicSafe(node))-\(brokerIndex)"
    }

    /// `text` with every character outside `[A-Za-z0-9._-]` replaced by `_` (safe as one topic
    /// level and as a client id).
    static func topicSafe(_ text: String) -> String {
        String(
            text.map { character -> Character in
                if character.isASCII && (character.isLetter || character.isNumber || "._-".contains(character)) {
                    return character
                }
                return "_"
            })
    }
}
