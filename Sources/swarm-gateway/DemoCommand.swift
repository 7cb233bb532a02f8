import ArgumentParser
import Foundation
import Gateway
import Logging
import MQTT
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `swarm-gateway demo`: an embedded Mosquitto, N gateway nodes on loopback (child processes of
/// this one, each `swarm-gateway run`), a simulated fleet (`swarm-devices run`), then where to
/// look. Ctrl-C (or SIGTERM, or `--duration`) stops everything in order: devices, then each node
/// drains and exits, then the broker.
///
/// The broker is never anonymous and runs the strict device ACL: the gateway nodes log in as
/// `gateway`, each simulated device with its id and a password of this run (a password file made
/// from the fleet's ids), and the dynamic security plugin lets the nodes create more device logins
/// (`PUT /v1/devices/{id}` with a password) with its admin login `swarm-admin`. Every password is
/// random per run and printed where it is needed.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a local demo: broker, gateway nodes, simulated devices; Ctrl-C stops it.")

    @Option(help: "Gateway nodes to start.")
    var nodes = 3

    @Option(help: "Simulated devices.")
    var devices = 1000

    @Option(help: "Broker port on 127.0.0.1.")
    var brokerPort = 1883

    @Option(help: "First cluster port (node i listens on this + i).")
    var clusterBase = 7100

    @Option(help: "First HTTP port (node i serves on this + i).")
    var httpBase = 8080

    @Option(help: "Fleet file (profiles and id patterns).")
    var fleet = "devices/fleet-demo.json"

    @Option(help: "Telemetry messages per second per device.")
    var rate = 0.2

    @Option(help: "Stop after this many seconds (0 = until Ctrl-C).")
    var duration = 0.0

    @Option(help: "Where the logs go (default: a new directory under /tmp).")
    var logs: String?

    func validate() throws {
        guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 9") }
        guard devices >= 0 else { throw ValidationError("--devices must not be negative") }
        guard rate >= 0 else { throw ValidationError("--rate must not be negative") }
        guard FileManager.default.fileExists(atPath: fleet) else {
            throw ValidationError("--fleet: \(fleet) not found (run the demo from the repository root, or pass --fleet)")
        }
    }

    func run() async throws {
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let gatewayBinary = me.path
        let devicesBinary = me.deletingLastPathComponent().appendingPathComponent("swarm-devices").path
        guard FileManager.default.isExecutableFile(atPath: devicesBinary) else {
            throw ValidationError("swarm-devices is not built next to \(gatewayBinary) (swift build -c release --product swarm-devices)")
        }
        let clusterPorts = (1...nodes).map { clusterBase + $0 }
        let httpPorts = (1...nodes).map { httpBase + $0 }
        for port in [brokerPort] + clusterPorts + httpPorts where !Self.portIsFree(port) {
            throw ValidationError("port \(port) on 127.0.0.1 is in use (another demo running? choose other ports with --broker-port / --cluster-base / --http-base)")
        }
        let logDirectory = logs ?? FileManager.default.temporaryDirectory.appendingPathComponent("swarm-gateway-demo-\(getpid())").path
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        let stop = StopSignal()
        let signals = Self.watch([SIGINT, SIGTERM], stop)
        defer { signals.forEach { $0.cancel() } }

        Self.say("Swarm Gateway demo: starting a broker, \(nodes) gateway node(s) and \(devices) simulated devices (logs in \(logDirectory))")
        let ids = try await Self.fleetIDs(devicesBinary: devicesBinary, fleet: fleet, count: devices, logDirectory: logDirectory)
        let gatewayPassword = Self.randomHex(16)
        let adminPassword = Self.randomHex(16)
        let deviceSecret = Self.randomHex(8)
        var brokerSettings = EmbeddedBroker.Settings()
        brokerSettings.host = "127.0.0.1"
        brokerSettings.port = brokerPort
        brokerSettings.ownProcessGroup = true  // Ctrl-C reaches the demo only; the broker stops last
        brokerSettings.allowAnonymous = false
        brokerSettings.aclRules = DeviceACL.rules()
        brokerSettings.users = [.init(DeviceACL.defaultGatewayUser, password: gatewayPassword)]
            + ids.map { .init($0, password: Self.devicePassword(secret: deviceSecret, id: $0)) }
        brokerSettings.dynamicSecurityAdmin = .init(DeviceACL.defaultAdminUser, password: adminPassword)
        var quiet = Logger(label: "demo.broker")
        quiet.logLevel = .warning
        let broker = try EmbeddedBroker(settings: brokerSettings, logger: quiet)
        try await broker.start()
        let brokerURL = "mqtt://127.0.0.1:\(broker.port)"
        let nodeEnvironment = [
            "SWARM_GATEWAY_BROKERS": "mqtt://\(DeviceACL.defaultGatewayUser):\(gatewayPassword)@127.0.0.1:\(broker.port)",
            "SWARM_GATEWAY_BROKER_ADMIN_USERNAME": DeviceACL.defaultAdminUser,
            "SWARM_GATEWAY_BROKER_ADMIN_PASSWORD": adminPassword,
        ]

        var children: [(name: String, process: ChildProcess)] = []
        let secret = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        do {
            for index in 0..<nodes {
                let name = "gw-\(index + 1)"
                let seeds = clusterPorts.enumerated().filter { $0.offset != index }.map { "127.0.0.1:\($0.element)" }
                var arguments = [
                    "run", "--node-name", name, "--cluster-listen", "127.0.0.1:\(clusterPorts[index])",
                    "--http-listen", "127.0.0.1:\(httpPorts[index])",
                    // Each node's SQLite store next to its log (the demo's broker is fresh too).
                    "--data-dir", "\(logDirectory)/data/\(name)",
                ]
                if !seeds.isEmpty { arguments += ["--seeds", seeds.joined(separator: ",")] }
                let child = try ChildProcess.spawn(
                    executable: gatewayBinary, arguments: arguments, outputPath: "\(logDirectory)/\(name).log",
                    environment: nodeEnvironment.merging(["SWARM_GATEWAY_CLUSTER_SECRET": secret]) { a, _ in a }, ownProcessGroup: true)
                children.append((name, child))
            }
            Self.say("waiting for the nodes to be ready…")
            for (index, port) in httpPorts.enumerated() {
                let ready = await Self.waitReady(port: port, timeout: .seconds(90), stop: stop, child: children[index].process)
                guard ready else {
                    throw ValidationError("gw-\(index + 1) did not become ready; see \(logDirectory)/gw-\(index + 1).log")
                }
            }
            if devices > 0 {
                let child = try ChildProcess.spawn(
                    executable: devicesBinary,
                    arguments: [
                        "run", "--fleet", fleet, "--count", String(devices), "--rate", String(rate), "--progress", "30",
                        "--broker", "mqtt://{id}:\(Self.devicePassword(secret: deviceSecret, id: "{id}"))@127.0.0.1:\(broker.port)",
                    ],
                    outputPath: "\(logDirectory)/devices.log", ownProcessGroup: true)
                children.append(("devices", child))
            }
            let sample = ids.first ?? Self.sampleDeviceID(fleet: fleet)
            let publish = "mosquitto_pub -h 127.0.0.1 -p \(broker.port) -u \(sample) -P '\(Self.devicePassword(secret: deviceSecret, id: sample))' -t devices/\(sample)/telemetry -m '{\"temp\":30.5}'"
            let first = "http://127.0.0.1:\(httpPorts[0])"
            let other = "http://127.0.0.1:\(httpPorts[min(1, nodes - 1)])"
            Self.say("""

                Swarm Gateway demo is running.
                  broker      \(brokerURL) (strict device ACL; no anonymous clients)
                  nodes       \(zip(1...nodes, httpPorts).map { "gw-\($0.0) http://127.0.0.1:\($0.1)" }.joined(separator: "   "))
                  dashboard   \(first)/
                  a device    curl -s \(first)/v1/devices/\(sample)
                  as device   \(publish)
                  provision   curl -s -X PUT \(first)/v1/devices/my-sensor -d '{"password":"s3cret","tags":{"site":"lab"}}'   (then log in as my-sensor / s3cret)
                  a query     curl -s -X POST '\(other)/v1/groups/all/query?timeout=2000' -d '{"fields":["reported"]}'
                  the cluster \(gatewayBinary) status --url \(first)
                  logs        \(logDirectory)
                Ctrl-C stops everything.

                """)
            let deadline = duration > 0 ? ContinuousClock.now + .milliseconds(Int(duration * 1000)) : nil
            var departed = Set<String>()
            watch: while !stop.isSet {
                if let deadline, ContinuousClock.now >= deadline { break }
                for child in children where !departed.contains(child.name) && !child.process.isRunning {
                    departed.insert(child.name)
                    // A node drained by the operator (`swarm-gateway drain`, SIGTERM) exits 0 after
                    // handing its devices over: the others carry on. Anything else stops the demo.
                    if child.name != "devices", child.process.exitCode == 0,
                        children.contains(where: { $0.name != "devices" && !departed.contains($0.name) })
                    {
                        Self.say("\(child.name) left the cluster (drained, exit 0); the other nodes carry on")
                        continue
                    }
                    Self.say("\(child.name) exited unexpectedly (see \(logDirectory)/\(child.name).log); stopping the demo")
                    break watch
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        } catch {
            await Self.stopAll(children, broker: broker)
            throw error
        }
        Self.say("stopping: devices, then each node drains, then the broker…")
        await Self.stopAll(children, broker: broker)
        Self.say("demo stopped")
    }

    /// The ids of the fleet the demo runs (`swarm-devices validate --list-ids`), for their logins.
    static func fleetIDs(devicesBinary: String, fleet: String, count: Int, logDirectory: String) async throws -> [String] {
        guard count > 0 else { return [] }
        let output = "\(logDirectory)/fleet-ids.txt"
        try? FileManager.default.removeItem(atPath: output)
        let code = try await ChildProcess.run(
            executable: devicesBinary, arguments: ["validate", "--fleet", fleet, "--count", String(count), "--list-ids"], outputPath: output,
            timeout: .seconds(60))
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard code == 0 else { throw ValidationError("swarm-devices validate --fleet \(fleet) failed: \(text)") }
        let ids = text.split(separator: "\n").map(String.init)
        guard !ids.isEmpty, ids.allSatisfy({ DeviceID.isValid($0) }) else { throw ValidationError("swarm-devices validate --list-ids printed no device ids: \(text.prefix(200))") }
        return ids
    }

    /// A simulated device's password in this run: `{secret}-{id}` (swarm-devices fills in `{id}`).
    static func devicePassword(secret: String, id: String) -> String { "\(secret)-\(id)" }

    static func randomHex(_ bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }

    /// A line on stdout, unbuffered: the demo runs until Ctrl-C, so buffered output (stdout to a
    /// file or a pipe) would show nothing until the end.
    static func say(_ text: String) { FileHandle.standardOutput.write(Data((text + "\n").utf8)) }

    static func stopAll(_ children: [(name: String, process: ChildProcess)], broker: EmbeddedBroker) async {
        for child in children where child.name == "devices" { await child.process.terminate(grace: .seconds(10)) }
        // Nodes one after another: each drain hands its devices to the nodes still up.
        for child in children.reversed() where child.name != "devices" { await child.process.terminate(grace: .seconds(35)) }
        await broker.stop()
    }

    static func waitReady(port: Int, timeout: Duration, stop: StopSignal, child: ChildProcess) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        guard let client = try? HTTPLite(url: "http://127.0.0.1:\(port)", token: nil) else { return false }
        var client5 = client
        client5.timeout = 5
        while ContinuousClock.now < deadline, !stop.isSet, child.isRunning {
            if let response = try? await client5.request("GET", "/readyz"), response.status == 200 { return true }
            try? await Task.sleep(for: .milliseconds(250))
        }
        return false
    }

    /// The first device id of the fleet file's first group (`thermo-{n:4}` → `thermo-0001`).
    static func sampleDeviceID(fleet: String) -> String {
        guard let data = FileManager.default.contents(atPath: fleet),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let groups = object["devices"] as? [[String: Any]], let pattern = groups.first?["idPattern"] as? String,
            let open = pattern.firstIndex(of: "{"), let close = pattern.firstIndex(of: "}")
        else { return "thermo-0001" }
        let spec = pattern[pattern.index(after: open)..<close]
        let width = Int(spec.split(separator: ":").last ?? "") ?? 1
        let number = String(repeating: "0", count: max(0, width - 1)) + "1"
        return String(pattern[..<open]) + number + String(pattern[pattern.index(after: close)...])
    }

    static func portIsFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    static func watch(_ numbers: [Int32], _ stop: StopSignal) -> [any DispatchSourceSignal] {
        numbers.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { stop.set() }
            source.resume()
            return source
        }
    }
}

/// Set once by a signal handler, polled by the demo loop.
final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}
