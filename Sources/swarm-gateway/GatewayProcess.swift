import Foundation
import Gateway
import GatewayConfig
import GatewayHTTP
import GatewayStore
import GatewayStoreEngines
import Logging
import MQTT
import ServiceLifecycle
import SwarmCore
import SwarmNode
import SwarmTLS
import SwarmTransport
import Synchronization
import UnixSignals

/// One gateway node process: the durable store (opened and migrated first: a store written by a
/// newer build stops start-up), the embedded broker when no broker is configured (persistent in
/// the data directory), then one `ServiceGroup` with the HTTP API and the node + gateway service.
///
/// Shutdown (SIGTERM, SIGINT, or `POST /v1/cluster/drain`): the gateway stops taking device
/// messages, routes what it took, drains the node (every device process is handed over with its
/// state), then the node and the gateway stop, then the HTTP API (it answers — `/readyz` 503 —
/// until the drain is over), and the process exits 0.
struct GatewayProcess {
    let configuration: GatewayConfiguration

    func run() async -> Int32 {
        let level = Logger.Level(rawValue: configuration.logLevel.rawValue) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = TimestampedLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "swarm-gateway")
        logger.info("starting \(configuration.nodeName): \(configuration)")
        // Before any child process starts: a bad TLS file or node filter stops start-up here.
        let nodeSettings: SwarmNodeSettings
        do {
            nodeSettings = try self.nodeSettings()
        } catch {
            logger.critical("\(error)")
            return 78
        }

        // The store before anything else uses the data directory (its lock keeps a second node
        // off it).
        let store: (writer: StoreWriter, lock: DataDirectoryLock?)
        do {
            store = try await openStore(logger: logger)
        } catch let error as StoreError {
            logger.critical("\(error)")
            if case .unavailable = error { return 69 }
            return 78
        } catch {
            logger.critical("store: \(error)")
            return 78
        }
        defer { withExtendedLifetime(store.lock) {} }

        var broker: EmbeddedBroker?
        var brokerURLs = configuration.brokers
        var logins: (any DeviceLoginManager)?
        if brokerURLs.isEmpty {
            guard configuration.embeddedBroker else {
                logger.critical("no broker configured and embeddedBroker is false: nothing to connect to")
                return 78
            }
            do {
                // Never anonymous: the gateway logs in with a fresh random password, devices with
                // the logins it manages (PUT /v1/devices/{id}), under the strict device ACL.
                let gatewayPassword = Self.randomSecret()
                var settings = EmbeddedBroker.Settings()
                settings.host = "127.0.0.1"
                settings.port = configuration.embeddedBrokerPort
                settings.allowAnonymous = false
                settings.managedLogins = true
                settings.users = [.init(DeviceACL.defaultGatewayUser, password: gatewayPassword)]
                settings.aclRules = DeviceACL.rules(topics: DeviceTopics(prefix: configuration.topicPrefix), adminUser: nil)
                // Retained messages, sessions and device logins survive a restart of the node.
                settings.directory = (configuration.effectiveDataDirectory as NSString).appendingPathComponent("mosquitto")
                settings.persistence = true
                let embedded = try EmbeddedBroker(settings: settings, logger: Logger(label: "swarm.mqtt.broker"))
                try await embedded.start()
                broker = embedded
                brokerURLs = [
                    BrokerEndpoint(host: "127.0.0.1", port: embedded.port, username: DeviceACL.defaultGatewayUser, password: Secret(gatewayPassword))
                ]
                logins = EmbeddedBrokerLogins(broker: embedded)
                logger.info("embedded Mosquitto listening on 127.0.0.1:\(embedded.port) (password file and strict device ACL; device logins managed by the gateway)")
            } catch {
                logger.critical("could not start the embedded Mosquitto: \(error)")
                await store.writer.store.close()
                return 69
            }
        }
        defer { if let broker { Task { await broker.stop() } } }

        let node: SwarmNode
        let gateway: DeviceGateway
        do {
            node = SwarmNode(settings: nodeSettings)
            var settings = gatewaySettings(brokers: brokerURLs)
            if let admin = configuration.brokerAdminUsername, let password = configuration.brokerAdminPassword {
                let admins = settings.brokers.enumerated().map { index, broker -> MQTTClient.Settings in
                    var client = broker.client
                    client.username = admin
                    client.password = password.value
                    client.clientID = "swarm-admin-\(GatewaySettings.clientID(node: configuration.nodeName, brokerIndex: index).dropFirst("swarm-".count))"
                    return client
                }
                logins = try DynamicSecurityLogins(
                    admins: admins, reservedNames: Set(brokerURLs.compactMap(\.username)), logger: Logger(label: "swarm.gateway.logins"))
            }
            settings.logins = logins
            settings.store = store.writer
            gateway = try DeviceGateway(node: node, settings: settings)
        } catch {
            logger.critical("\(error)")
            await broker?.stop()
            await store.writer.store.close()
            return 78
        }
        let service = GatewayNodeService(node: node, gateway: gateway, logger: logger)
        var httpSettings = GatewayHTTPSettings(
            host: configuration.httpListen.host, port: configuration.httpListen.port, apiToken: configuration.apiToken?.value)
        httpSettings.logger = Logger(label: "swarm.gateway.http")
        // `POST /v1/cluster/drain` drains through the API, then stops the whole process.
        let groupBox = Mutex<ServiceGroup?>(nil)
        let http = GatewayHTTPServer(gateway: gateway, settings: httpSettings) { drained in
            logger.info("drain requested over the API \(drained ? "completed" : "timed out"); stopping")
            await groupBox.withLock { $0 }?.triggerGracefulShutdown()
        }
        // Graceful shutdown runs in reverse order: the node + gateway service drains first, the
        // HTTP API stops last.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: http),
                    .init(service: service, successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        groupBox.withLock { $0 = group }
        Task {
            if let port = try? await http.listeningPort() {
                logger.info("HTTP API, dashboard and metrics on http://\(configuration.httpListen.host):\(port)/")
            }
        }
        var status: Int32 = 0
        do {
            try await group.run()
        } catch {
            logger.critical("stopped: \(error)")
            status = 1
        }
        await broker?.stop()
        broker = nil
        logger.info("\(configuration.nodeName) exits (\(status))")
        return status
    }

    /// Opens the configured store (SQLite in the data directory, under its lock; or PostgreSQL,
    /// retried for up to 30 s while it cannot be reached), creates or migrates its schema and
    /// returns its writer (run and closed by the gateway).
    func openStore(logger: Logger) async throws -> (writer: StoreWriter, lock: DataDirectoryLock?) {
        let directory = configuration.effectiveDataDirectory
        let engine: any DeviceStore
        var lock: DataDirectoryLock?
        switch configuration.store {
        case .sqlite:
            lock = try DataDirectoryLock(directory: directory, holder: "\(configuration.nodeName) pid \(getpid())")
            engine = SQLiteDeviceStore(directory: directory, logger: Logger(label: "swarm.store.sqlite"))
        case .postgresql(let endpoint):
            var settings = PostgresDeviceStore.Settings(
                host: endpoint.host, port: endpoint.port, username: endpoint.username, password: endpoint.password?.value,
                database: endpoint.database)
            settings.tls = PostgresDeviceStore.Settings.TLSMode(rawValue: endpoint.sslMode) ?? .disable
            engine = PostgresDeviceStore(settings: settings, logger: Logger(label: "swarm.store.postgresql"))
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                try await engine.open()
                break
            } catch StoreError.unavailable(let location, let reason) where ContinuousClock.now < deadline {
                logger.warning("store \(location) unavailable (\(reason)); retrying")
                try await Task.sleep(for: .seconds(1))
            } catch {
                await engine.close()
                throw error
            }
        }
        var settings = StoreSettings()
        settings.writeBehindInterval = configuration.writeBehindInterval
        settings.logger = Logger(label: "swarm.store")
        let version = (try? await engine.schemaVersion()) ?? 0
        logger.info("store \(engine.location): schema version \(version), write-behind window \(configuration.writeBehindInterval)")
        return (StoreWriter(store: engine, settings: settings), lock)
    }

    func nodeSettings() throws -> SwarmNodeSettings {
        let secret = configuration.clusterSecret?.value ?? Self.randomSecret()
        var settings = SwarmNodeSettings(name: configuration.nodeName, secret: ClusterSecret(secret))
        settings.host = configuration.clusterListen.host
        settings.port = configuration.clusterListen.port
        settings.seeds = configuration.seeds.map(\.description)
        settings.discovery = configuration.dnsDiscovery.map(\.description)
        settings.tracker.heartbeatInterval = Self.nanoseconds(configuration.heartbeatInterval)
        settings.tracker.failureTimeout = Self.nanoseconds(configuration.failureTimeout)
        // `logLevel: trace` adds every tracker decision (Swarm's `debug: true`), at debug level.
        settings.tracker.debug = configuration.logLevel == .trace
        settings.drainTimeout = configuration.drainTimeout
        settings.filter = try NodeFilter(
            allow: configuration.allowNodes.map(NodeFilter.Pattern.init(parsing:)),
            deny: configuration.denyNodes.map(NodeFilter.Pattern.init(parsing:)))
        if let certificate = configuration.clusterTLSCertificate, let key = configuration.clusterTLSKey,
            let ca = configuration.clusterTLSCA
        {
            // Fails fast (exit 78) on an unreadable, malformed or expired file, naming its path.
            settings.security = try ClusterTLS.security(
                files: ClusterTLSFiles(certificateChain: certificate, privateKey: key, trustRoots: ca))
        }
        settings.logger = Logger(label: "swarm.node")
        return settings
    }

    func gatewaySettings(brokers: [BrokerEndpoint]) -> GatewaySettings {
        var settings = GatewaySettings(
            brokers: brokers.map { endpoint in
                var client = MQTTClient.Settings(host: endpoint.host, port: endpoint.port)
                client.username = endpoint.username
                client.password = endpoint.password?.value
                // One client per broker per node: retry every second (libmosquitto's backoff grows
                // 1, 4, 9… s up to 30 s: a broker back after 3 s waited 5 s for its gateways).
                client.maxReconnectDelay = .seconds(1)
                if endpoint.tls {
                    client.tls = configuration.brokerCAFile.map { MQTTClient.Settings.TLS(caFile: $0) } ?? MQTTClient.Settings.TLS(caPath: "/etc/ssl/certs")
                }
                return GatewaySettings.Broker(id: "\(endpoint.host):\(endpoint.port)", client: client)
            })
        settings.topicPrefix = configuration.topicPrefix
        settings.shareGroup = configuration.shareGroup
        settings.maxPayloadBytes = configuration.maxPayloadBytes
        settings.ingressLaneCapacity = configuration.ingressLaneCapacity
        settings.logger = Logger(label: "swarm.gateway")
        // The event stream (docs/gateway.md, “Events”): every node keeps the cluster's events of the retention
        // window in `events.sqlite` in its data directory, whatever the device store.
        settings.events.store = SQLiteEventStore(directory: configuration.effectiveDataDirectory, logger: Logger(label: "swarm.events.sqlite"))
        settings.events.retention = configuration.eventRetention
        settings.events.maxStored = configuration.eventMaxStored
        settings.events.bufferSize = configuration.eventBufferSize
        settings.events.toBroker = configuration.eventsToBroker
        settings.events.webhookTransport = HTTPWebhookTransport()
        return settings
    }

    /// A single node without a configured secret still needs one for its (unused) cluster port.
    static func randomSecret() -> String {
        (0..<32).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}

/// The node and its gateway as one service: runs both; on graceful shutdown drains in the
/// right order (ingress first, then the node's processes), then stops both.
struct GatewayNodeService: Service {
    let node: SwarmNode
    let gateway: DeviceGateway
    let logger: Logger

    func run() async throws {
        try await node.start()
        // The node runs outside this task's graceful-shutdown scope: the gateway decides when
        // the node drains (after ingress stopped), not the signal directly. It runs before the
        // gateway starts: the gateway's start registers its node process, which needs the node's
        // input loop.
        let nodeTask = Task.detached { try await node.run() }
        do {
            try await gateway.start()
        } catch {
            await node.shutdown()
            _ = try? await nodeTask.value
            throw error
        }
        try await withGracefulShutdownHandler {
            try await gateway.run()
        } onGracefulShutdown: {
            Task.detached {
                logger.info("graceful shutdown: draining")
                let drained = await gateway.drain()
                if !drained { logger.warning("drain did not hand every device over (timed out, or no peer can take them); stopping anyway") }
                try? await Task.sleep(for: .milliseconds(200))
                await gateway.shutdown()
                await node.shutdown()
            }
        }
        await node.shutdown()
        _ = try? await nodeTask.value
    }
}
