import Foundation

/// The configuration of one `swarm-gateway run` node.
///
/// Every key is settable four ways; a later source overrides an earlier one:
///
/// 1. the default (below),
/// 2. the JSON configuration file (`--config FILE`, or `SWARM_GATEWAY_CONFIG`),
/// 3. an environment variable `SWARM_GATEWAY_<KEY>` (upper snake case: `clusterListen` →
///    `SWARM_GATEWAY_CLUSTER_LISTEN`),
/// 4. a command-line flag (`--cluster-listen`).
///
/// ``GatewayConfiguration/keys`` lists every key with its environment variable, flag, default
/// and meaning; `docs/configuration.md` is the same table for people. Loading validates
/// everything and stops at the first problem with a ``GatewayConfigError`` naming the key and
/// its source. Secrets (cluster secret, API token, broker passwords) are ``Secret``s and never
/// appear in ``description``.
public struct GatewayConfiguration: Sendable, Hashable, CustomStringConvertible {
    /// Node name, unique in the cluster. Default: the host name.
    public var nodeName: String = GatewayConfiguration.defaultNodeName
    /// Cluster (peer) listen address. Default `127.0.0.1:7946`.
    public var clusterListen = HostPort(host: "127.0.0.1", port: 7946)
    /// Seed nodes' cluster addresses. Default none (a single node, or a node others seed from).
    public var seeds: [HostPort] = []
    /// DNS names (`NAME:PORT`) resolved periodically for peers (Kubernetes headless services).
    /// Default none.
    public var dnsDiscovery: [HostPort] = []
    /// Backend HTTP API and dashboard listen address. Default `127.0.0.1:8080`.
    public var httpListen = HostPort(host: "127.0.0.1", port: 8080)
    /// MQTT brokers; every node joins the share group on every broker. Default none, which
    /// starts the embedded broker.
    public var brokers: [BrokerEndpoint] = []
    /// CA certificates (PEM) for `mqtts://` brokers. Default nil: the system's.
    public var brokerCAFile: String? = nil
    /// The dynamic security plugin's admin login on the external brokers: with it the gateway
    /// manages device logins there (`PUT /v1/devices/{id}` with a password, `DELETE`). Set with
    /// ``brokerAdminPassword``. Default nil (device logins on external brokers not managed).
    public var brokerAdminUsername: String? = nil
    /// The admin login's password. Default nil.
    public var brokerAdminPassword: Secret? = nil
    /// Shared cluster secret authenticating peers (at least 16 bytes). Required when seeds or
    /// DNS discovery are set. Default nil.
    public var clusterSecret: Secret? = nil
    /// Mutual TLS between nodes: this node's certificate chain (PEM). Set together with
    /// ``clusterTLSKey`` and ``clusterTLSCA``, or none of them. Default nil (plain TCP).
    public var clusterTLSCertificate: String? = nil
    /// Mutual TLS between nodes: this node's private key (PEM, unencrypted). Default nil.
    public var clusterTLSKey: String? = nil
    /// Mutual TLS between nodes: the cluster CA bundle (PEM) peers' certificates must chain to.
    /// Default nil.
    public var clusterTLSCA: String? = nil
    /// Bearer token required on `/v1` of the backend API. Default nil (no token required).
    public var apiToken: Secret? = nil
    /// First topic level of the device topics. Default `devices`.
    public var topicPrefix = "devices"
    /// MQTT 5 shared-subscription group (`$share/<group>/devices/+/...`). Default `swarm-gateway`.
    public var shareGroup = "swarm-gateway"
    /// Cluster heartbeat interval. Default 200 ms.
    public var heartbeatInterval: Duration = .milliseconds(200)
    /// Silence after which a peer counts as failed. Default 1.5 s.
    public var failureTimeout: Duration = .milliseconds(1500)
    /// Longest graceful shutdown (drain: hand every device process off) before stopping anyway.
    /// Default 30 s.
    public var drainTimeout: Duration = .seconds(30)
    /// Log level. Default `info`.
    public var logLevel: GatewayLogLevel = .info
    /// Node names (or `/regex/`) allowed in the ring; non-empty overrides the deny list.
    public var allowNodes: [String] = []
    /// Node names (or `/regex/`) kept out of the ring.
    public var denyNodes: [String] = []
    /// Largest accepted inbound MQTT payload in bytes; larger ones are rejected and counted.
    /// Default 65,536.
    public var maxPayloadBytes = 65_536
    /// Bound of each of the 8 ingress lanes: telemetry beyond it is shed (counted, logged);
    /// status and reported messages are never shed. Default 1,024.
    public var ingressLaneCapacity = 1024
    /// Start an embedded Mosquitto child on loopback. Default: true exactly when no broker is
    /// configured.
    public var embeddedBroker = true
    /// Port of the embedded broker (0 = any free port). Default 1883.
    public var embeddedBrokerPort = 1883
    /// Where this node keeps its files: the SQLite store (`gateway.sqlite`), the embedded
    /// broker's persistence (`mosquitto/`) and the lock that keeps a second node out. Default nil:
    /// ``effectiveDataDirectory``, `./data/<node name>`.
    public var dataDirectory: String? = nil
    /// The durable store: `sqlite` (the default: one database per node in its data directory) or
    /// a PostgreSQL URL shared by every node.
    public var store: StoreLocation = .sqlite
    /// Write-behind window of device-reported state: changes are committed at most this long
    /// after they happened (coalesced per device). 10 ms to 1 s. Default 500 ms.
    public var writeBehindInterval: Duration = .milliseconds(500)
    /// How long events are kept for `GET /v1/events` cursors and webhooks (docs/gateway.md, “Events”). Default 1 h.
    public var eventRetention: Duration = .seconds(3600)
    /// At most this many events are kept in the store (the size bound of the retention window).
    /// Default 2,000,000.
    public var eventMaxStored = 2_000_000
    /// Events kept in memory per node for live consumers and recent cursors. Default 100,000.
    public var eventBufferSize = 100_000
    /// Also publish every event on the broker (`events/{type}/{device}`, QoS 1). Default false.
    public var eventsToBroker = false

    /// All defaults (the node name is the host name).
    public init() {}

    /// ``dataDirectory``, or `./data/<node name>` when it is not set.
    public var effectiveDataDirectory: String { dataDirectory ?? "./data/\(nodeName)" }

    static var defaultNodeName: String {
        let host = ProcessInfo.processInfo.hostName
        let cleaned = String(host.prefix(while: { $0 != "." }).filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
        return cleaned.isEmpty ? "gw-1" : cleaned
    }

    /// One line per key, secrets redacted.
    public var description: String {
        func list<T: CustomStringConvertible>(_ values: [T]) -> String { "[" + values.map(\.description).joined(separator: ", ") + "]" }
        func duration(_ value: Duration) -> String { GatewayConfiguration.format(value) }
        return [
            "nodeName: \(nodeName)",
            "clusterListen: \(clusterListen)",
            "seeds: \(list(seeds))",
            "dnsDiscovery: \(list(dnsDiscovery))",
            "httpListen: \(httpListen)",
            "brokers: \(list(brokers))",
            "brokerCAFile: \(brokerCAFile ?? "-")",
            "brokerAdminUsername: \(brokerAdminUsername ?? "-")",
            "brokerAdminPassword: \(brokerAdminPassword == nil ? "-" : "<redacted>")",
            "clusterSecret: \(clusterSecret == nil ? "-" : "<redacted>")",
            "clusterTLSCertificate: \(clusterTLSCertificate ?? "-")",
            "clusterTLSKey: \(clusterTLSKey ?? "-")",
            "clusterTLSCA: \(clusterTLSCA ?? "-")",
            "apiToken: \(apiToken == nil ? "-" : "<redacted>")",
            "topicPrefix: \(topicPrefix)",
            "shareGroup: \(shareGroup)",
            "heartbeatInterval: \(duration(heartbeatInterval))",
            "failureTimeout: \(duration(failureTimeout))",
            "drainTimeout: \(duration(drainTimeout))",
            "logLevel: \(logLevel.rawValue)",
            "allowNodes: \(list(allowNodes))",
            "denyNodes: \(list(denyNodes))",
            "maxPayloadBytes: \(maxPayloadBytes)",
            "ingressLaneCapacity: \(ingressLaneCapacity)",
            "embeddedBroker: \(embeddedBroker)",
            "embeddedBrokerPort: \(embeddedBrokerPort)",
            "dataDirectory: \(effectiveDataDirectory)",
            "store: \(store)",
            "writeBehindInterval: \(duration(writeBehindInterval))",
            "eventRetention: \(duration(eventRetention))",
            "eventMaxStored: \(eventMaxStored)",
            "eventBufferSize: \(eventBufferSize)",
            "eventsToBroker: \(eventsToBroker)",
        ].joined(separator: "\n")
    }

    static func format(_ value: Duration) -> String {
        let millis = value.components.seconds * 1000 + value.components.attoseconds / 1_000_000_000_000_000
        return millis % 1000 == 0 ? "\(millis / 1000)s" : "\(millis)ms"
    }
}

// MARK: - Keys

extension GatewayConfiguration {
    /// The kind of value a key takes.
    public enum ValueKind: String, Sendable, Hashable {
        case string, hostPort = "HOST:PORT", hostPortList = "list of HOST:PORT", brokerList = "list of broker URLs"
        case secret, duration, boolean, integer, stringList = "list of strings", logLevel = "log level", path
    }

    /// One configuration key: its spellings in every source, its default and meaning.
    public struct Key: Sendable, Hashable {
        /// The file key (JSON member name), e.g. `clusterListen`.
        public var name: String
        public var kind: ValueKind
        /// The default, as documented.
        public var defaultText: String
        /// What it does.
        public var summary: String
        /// The flag's name when it is not the key in kebab case (`brokers` → `--broker`,
        /// repeatable).
        var flagName: String? = nil
        /// The snake-case spelling when splitting the name cannot find it (`clusterTLSCA` →
        /// `cluster_tls_ca`).
        var snakeName: String? = nil
        /// `SWARM_GATEWAY_CLUSTER_LISTEN`.
        public var environmentVariable: String { "SWARM_GATEWAY_" + (snakeName ?? Self.snake(name)).uppercased() }
        /// `--cluster-listen`.
        public var flag: String { "--" + (flagName ?? (snakeName ?? Self.snake(name)).replacingOccurrences(of: "_", with: "-")) }

        /// `clusterListen` → `cluster_listen`, `brokerCAFile` → `broker_ca_file`.
        static func snake(_ name: String) -> String {
            var result = ""
            let characters = Array(name)
            for (index, character) in characters.enumerated() {
                if character.isUppercase {
                    let previousLower = index > 0 && characters[index - 1].isLowercase
                    let nextLower = index + 1 < characters.count && characters[index + 1].isLowercase
                    let previousUpper = index > 0 && characters[index - 1].isUppercase
                    if index > 0 && (previousLower || (previousUpper && nextLower)) { result += "_" }
                    result += character.lowercased()
                } else {
                    result.append(character)
                }
            }
            return result
        }
    }

    /// Every key, in documentation order.
    public static let keys: [Key] = [
        Key(name: "nodeName", kind: .string, defaultText: "the host name", summary: "Node name, unique in the cluster (`[A-Za-z0-9._@:-]`, at most 255 characters)."),
        Key(name: "clusterListen", kind: .hostPort, defaultText: "127.0.0.1:7946", summary: "Address the cluster (peer) port listens on. Port 0 picks a free port."),
        Key(name: "seeds", kind: .hostPortList, defaultText: "none", summary: "Cluster addresses of seed nodes, dialled until connected."),
        Key(name: "dnsDiscovery", kind: .hostPortList, defaultText: "none", summary: "DNS names with the cluster port (`NAME:PORT`), resolved periodically to find peers (a Kubernetes headless service)."),
        Key(name: "httpListen", kind: .hostPort, defaultText: "127.0.0.1:8080", summary: "Address of the backend HTTP API, metrics and dashboard. Port 0 picks a free port."),
        Key(name: "brokers", kind: .brokerList, defaultText: "none (embedded broker)", summary: "MQTT brokers, `mqtt://USER:PASS@HOST:PORT` or `mqtts://...`; every node joins the share group on each. The flag is repeatable.", flagName: "broker"),
        Key(name: "brokerCAFile", kind: .path, defaultText: "the system's CA certificates", summary: "PEM file of CA certificates for `mqtts://` brokers; must exist."),
        Key(name: "brokerAdminUsername", kind: .string, defaultText: "none (device logins on external brokers not managed)", summary: "Admin login of the external brokers' dynamic security plugin; with it the gateway creates and deletes device logins there (`PUT`/`DELETE /v1/devices/{id}`). Set with `brokerAdminPassword`; only with `brokers` (the embedded broker's logins are always managed). See docs/deployment.md."),
        Key(name: "brokerAdminPassword", kind: .secret, defaultText: "none", summary: "Password of `brokerAdminUsername`."),
        Key(name: "clusterSecret", kind: .secret, defaultText: "none", summary: "Shared secret authenticating cluster peers (at least 16 bytes). Required when `seeds` or `dnsDiscovery` is set."),
        Key(name: "clusterTLSCertificate", kind: .path, defaultText: "none (plain TCP)", summary: "Mutual TLS between nodes: this node's certificate chain (PEM), signed by the cluster CA. Set with `clusterTLSKey` and `clusterTLSCA`, or none of the three; every node of a cluster must agree. See docs/deployment.md."),
        Key(name: "clusterTLSKey", kind: .path, defaultText: "none", summary: "Mutual TLS between nodes: this node's private key (PEM, unencrypted)."),
        Key(name: "clusterTLSCA", kind: .path, defaultText: "none", summary: "Mutual TLS between nodes: the cluster CA certificate(s) (PEM) every peer's certificate must chain to.", snakeName: "cluster_tls_ca"),
        Key(name: "apiToken", kind: .secret, defaultText: "none (API open)", summary: "Bearer token the backend API requires on `/v1` (at least 8 characters, no spaces)."),
        Key(name: "topicPrefix", kind: .string, defaultText: "devices", summary: "First level of the device topics (`devices/{id}/...`); no `/`, `+`, `#`."),
        Key(name: "shareGroup", kind: .string, defaultText: "swarm-gateway", summary: "MQTT 5 shared-subscription group (`$share/<group>/...`); letters, digits, `-`, `_`."),
        Key(name: "heartbeatInterval", kind: .duration, defaultText: "200ms", summary: "Cluster heartbeat interval."),
        Key(name: "failureTimeout", kind: .duration, defaultText: "1500ms", summary: "Heartbeat silence after which a peer counts as failed; more than `heartbeatInterval`."),
        Key(name: "drainTimeout", kind: .duration, defaultText: "30s", summary: "Longest graceful shutdown (drain) before the node stops anyway."),
        Key(name: "logLevel", kind: .logLevel, defaultText: "info", summary: "One of trace (adds every tracker decision), debug, info, notice, warning, error, critical."),
        Key(name: "allowNodes", kind: .stringList, defaultText: "none", summary: "Node names or `/regex/` admitted to the ring; when non-empty only these are."),
        Key(name: "denyNodes", kind: .stringList, defaultText: "none (built-in operator-tool denials still apply)", summary: "Node names or `/regex/` kept out of the ring."),
        Key(name: "maxPayloadBytes", kind: .integer, defaultText: "65536", summary: "Largest inbound MQTT payload accepted (1 to 268435455); larger ones are rejected and counted."),
        Key(name: "ingressLaneCapacity", kind: .integer, defaultText: "1024", summary: "Telemetry messages each of the 8 ingress lanes holds before it sheds the newest (counted in `swarm_gateway_ingress_shed_total`); status and reported messages are never shed (16 to 1048576)."),
        Key(name: "embeddedBroker", kind: .boolean, defaultText: "true when `brokers` is empty, else false", summary: "Start an embedded Mosquitto child process on loopback."),
        Key(name: "embeddedBrokerPort", kind: .integer, defaultText: "1883", summary: "Port of the embedded broker on 127.0.0.1 (0 = any free port)."),
        Key(name: "dataDirectory", kind: .path, defaultText: "./data/<node name>", summary: "Directory of this node's files: the SQLite store `gateway.sqlite`, the embedded broker's persistence, a lock file. Created when missing; one node per directory.", flagName: "data-dir"),
        Key(name: "store", kind: .string, defaultText: "sqlite", summary: "The durable store: `sqlite` (one database per node in `dataDirectory`) or `postgresql://USER:PASS@HOST:PORT/DATABASE[?sslmode=disable|prefer|require]`, one database shared by every node. See docs/deployment.md."),
        Key(name: "writeBehindInterval", kind: .duration, defaultText: "500ms", summary: "Device-reported state (reported, telemetry values, presence, counters) is committed at most this long after it changed, coalesced per device (10ms-1s); API changes are committed before the API answers."),
        Key(name: "eventRetention", kind: .duration, defaultText: "1h", summary: "How long events are kept (in `events.sqlite` of the data directory, or the PostgreSQL store) for `GET /v1/events` cursors and webhooks; an older cursor is answered 410 `cursorExpired` (1s-24h)."),
        Key(name: "eventMaxStored", kind: .integer, defaultText: "2000000", summary: "Size bound of the retention window: at most this many events are kept, the oldest go first (1000-1000000000)."),
        Key(name: "eventBufferSize", kind: .integer, defaultText: "100000", summary: "Events each node keeps in memory for live consumers and recent cursors; older cursors are read from the store (1000-10000000)."),
        Key(name: "eventsToBroker", kind: .boolean, defaultText: "false", summary: "Also publish every event on the broker, QoS 1, on `events/{type}/{device}` (by the node hosting the device), for MQTT consumers such as Telegraf or Node-RED."),
    ]

    /// The key named `name` in any spelling (file key, `--flag`, flag without dashes, or
    /// environment variable).
    public static func key(named name: String) -> Key? {
        keys.first { $0.name == name || $0.flag == name || $0.flag == "--" + name || $0.environmentVariable == name }
    }

    /// The environment variable naming the configuration file.
    public static let configFileVariable = "SWARM_GATEWAY_CONFIG"
}
