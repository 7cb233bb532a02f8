import ArgumentParser
import Logging
import ServiceLifecycle
import SwarmCore
import SwarmNode
import SwarmTLS
import SwarmTransport
import UnixSignals

/// One Swarm node with a `worker` process kind and a line-based control port.
///
///     swarm-node --name gw-1 --listen 127.0.0.1:7101 --seeds 127.0.0.1:7102,127.0.0.1:7103 \
///         --secret 'at least sixteen bytes' --control 127.0.0.1:7201
///
/// SIGTERM (or SIGINT, or the control command `drain`) drains the node (its processes move to
/// the other nodes with their state), then it exits 0. The control protocol is documented on
/// `SwarmControlServer`.
@main
struct SwarmNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swarm-node", abstract: "Run one Swarm node with a line-based control port.")

    @Option(help: "Node name (unique in the cluster).")
    var name: String

    @Option(help: "Cluster listen address host:port.")
    var listen = "127.0.0.1:7101"

    @Option(help: "Comma-separated seed addresses host:port.")
    var seeds = ""

    @Option(help: "Comma-separated DNS names host:port, re-resolved every 5 s; every address is a seed (a Kubernetes headless service).")
    var discovery = ""

    @Option(help: "Shared cluster secret (at least 16 bytes).")
    var secret: String

    @Option(help: "Mutual TLS between nodes: this node's certificate chain (PEM). With --tls-key and --tls-ca.")
    var tlsCert: String?

    @Option(help: "Mutual TLS between nodes: this node's private key (PEM, unencrypted).")
    var tlsKey: String?

    @Option(help: "Mutual TLS between nodes: the cluster CA certificate(s) (PEM) peers must chain to.")
    var tlsCa: String?

    @Option(help: "Control port address host:port (line-based, JSON answers). None if omitted.")
    var control: String?

    @Option(help: "Longest drain on shutdown, in seconds.")
    var drainTimeout = 30

    @Flag(help: "Log every tracker decision (debug level).")
    var debug = false

    func validate() throws {
        guard secret.utf8.count >= 16 else { throw ValidationError("--secret must be at least 16 bytes") }
        guard Self.split(listen) != nil else { throw ValidationError("--listen must be host:port") }
        if let control, Self.split(control) == nil { throw ValidationError("--control must be host:port") }
        for seed in seedList where Self.split(seed) == nil { throw ValidationError("--seeds: '\(seed)' is not host:port") }
        for name in Self.list(discovery) where Self.split(name) == nil { throw ValidationError("--discovery: '\(name)' is not host:port") }
        let tls = [tlsCert, tlsKey, tlsCa]
        if tls.contains(where: { $0 != nil }) && tls.contains(where: { $0 == nil }) {
            throw ValidationError("--tls-cert, --tls-key and --tls-ca go together: give all three or none")
        }
    }

    var seedList: [String] { Self.list(seeds) }

    static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { String($0.filter { $0 != " " }) }.filter { !$0.isEmpty }
    }

    static func split(_ address: String) -> (host: String, port: Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
            (0...65535).contains(port), colon > address.startIndex
        else { return nil }
        return (String(address[..<colon]), port)
    }

    func run() async throws {
        let debug = self.debug
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = debug ? .debug : .info
            return handler
        }
        let logger = Logger(label: "swarm-node")
        let (host, port) = Self.split(listen)!
        var settings = SwarmNodeSettings(name: name, secret: ClusterSecret(secret))
        settings.host = host
        settings.port = port
        settings.seeds = seedList
        settings.discovery = Self.list(discovery)
        settings.tracker.debug = debug
        settings.drainTimeout = .seconds(drainTimeout)
        settings.logger = Logger(label: "swarm.node")
        if let tlsCert, let tlsKey, let tlsCa {
            do {
                settings.security = try ClusterTLS.security(
                    files: ClusterTLSFiles(certificateChain: tlsCert, privateKey: tlsKey, trustRoots: tlsCa))
            } catch {
                // One line naming the file (never its contents), exit status 78 (EX_CONFIG).
                logger.critical("\(error)")
                throw ExitCode(78)
            }
        }
        let node = SwarmNode(settings: settings, factories: ["worker": { name, _ in WorkerProcess(name: name) }])
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let control, let (controlHost, controlPort) = Self.split(control) {
            services.append(.init(service: SwarmControlServer(node: node, host: controlHost, port: controlPort)))
        }
        // The node last: graceful shutdown reaches it first (reverse order), so the control port
        // keeps answering during the drain. When the node returns, the group shuts down.
        services.append(.init(service: node, successTerminationBehavior: .gracefullyShutdownGroup))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.info("swarm-node \(name) exits")
    }
}
