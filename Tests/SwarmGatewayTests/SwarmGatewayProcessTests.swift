import Foundation
import MQTT
import TestCertificates
import Testing

/// The `swarm-gateway` executable next to this test bundle (`swift build --build-tests` builds it).
let swarmGatewayBinary: String? = {
    let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return [
        bundleDirectory.appendingPathComponent("swarm-gateway").path,
        bundleDirectory.deletingLastPathComponent().appendingPathComponent("swarm-gateway").path,
        packageRoot.appendingPathComponent(".build/debug/swarm-gateway").path,
    ].first { FileManager.default.isExecutableFile(atPath: $0) }
}()

/// Runs the executable to completion (bounded); returns (status, stderr + stdout).
func runGateway(_ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(30)) async throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try #require(swarmGatewayBinary))
    process.arguments = arguments
    var env = ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    env.merge(environment) { $1 }
    process.environment = env
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let deadline = ContinuousClock.now + timeout
    while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    if process.isRunning { process.terminate() }
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
}

/// `curl` (installed by scripts/install-deps.sh): status code and body.
func curl(_ arguments: [String]) async throws -> (status: Int, body: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    process.arguments = ["-s", "-m", "10", "-o", "/dev/stdout", "-w", "\n%{http_code}"] + arguments
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
}

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard ok else { throw POSIXError(.EADDRINUSE) }
    return Int(UInt16(bigEndian: address.sin_port))
}

@Suite(
    "swarm-gateway executable", .serialized, .timeLimit(.minutes(5)),
    .enabled(if: swarmGatewayBinary != nil, "swarm-gateway is not built: run `swift build --build-tests` first"))
struct SwarmGatewayProcessTests {
    @Test("bad configuration stops start-up with exit status 78 and a message naming the key and its source")
    func badConfiguration() async throws {
        let (status, output) = try await runGateway(["run", "--cluster-listen", "127.0.0.1:nope"])
        #expect(status == 78)
        #expect(output.contains("clusterListen") && output.contains("--cluster-listen"), "\(output)")

        let (unknown, unknownOutput) = try await runGateway(["run", "--nod-name", "x"])
        #expect(unknown == 78)
        #expect(unknownOutput.contains("--node-name"), "a suggestion: \(unknownOutput)")

        let (environment, environmentOutput) = try await runGateway(["run"], environment: ["SWARM_GATEWAY_HTTP_LISTEN": "1.2.3.4:99999"])
        #expect(environment == 78)
        #expect(environmentOutput.contains("SWARM_GATEWAY_HTTP_LISTEN"), "\(environmentOutput)")

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).json")
        try Data(#"{"seeds": ["127.0.0.1:7001"]}"#.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let (secret, secretOutput) = try await runGateway(["run", "--config", file.path])
        #expect(secret == 78)
        #expect(secretOutput.contains("clusterSecret"), "seeds without a secret: \(secretOutput)")
        #expect(!secretOutput.contains("127.0.0.1:7001") || secretOutput.contains("clusterSecret"))
    }

    @Test("one node with its embedded broker (never anonymous): a provisioned device logs in, its twin over HTTP (token required) and through the operator commands, SIGTERM exits 0")
    func oneNode() async throws {
        let binary = try #require(swarmGatewayBinary)
        let (brokerPort, httpPort) = (try freePort(), try freePort())
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "run", "--node-name", "gw-t", "--cluster-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:\(httpPort)",
            "--embedded-broker-port", String(brokerPort), "--log-level", "warning",
            "--data-dir", FileManager.default.temporaryDirectory.appendingPathComponent("gw-t-\(UUID().uuidString.prefix(8))").path,
        ]
        process.environment = ["SWARM_GATEWAY_API_TOKEN": "test-token-123", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        let log = Pipe()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let base = "http://127.0.0.1:\(httpPort)"
        var ready = false
        for _ in 0..<300 where !ready {
            ready = (try? await curl(["\(base)/readyz"]))?.status == 200
            if !ready { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(ready, "the node did not become ready")

        // The embedded broker refuses anonymous clients and unknown logins…
        var anonymous = MQTTClient.Settings(host: "127.0.0.1", port: brokerPort)
        anonymous.connectTimeout = .seconds(3)
        let refusedClient = try MQTTClient(settings: anonymous)
        await #expect(throws: MQTTError.self) { try await refusedClient.connect() }
        await refusedClient.close()
        // …until the device is provisioned with a password: then it logs in as itself.
        let put = try await curl([
            "-X", "PUT", "-H", "Authorization: Bearer test-token-123", "-d", #"{"password":"dev-t1-secret","tags":{"site":"lab"}}"#,
            "\(base)/v1/devices/dev-t1",
        ])
        #expect(put.status == 201 && put.body.contains(#""online":false"#) && put.body.contains(#""site":"lab""#), "\(put)")
        var settings = MQTTClient.Settings(host: "127.0.0.1", port: brokerPort)
        settings.clientID = "dev-t1"
        settings.username = "dev-t1"
        settings.password = "dev-t1-secret"
        let device = try MQTTClient(settings: settings)
        try await device.connect()
        _ = try await device.publish(MQTTMessage(topic: "devices/dev-t1/status", payload: Array(#"{"status":"online","model":"x1"}"#.utf8), qos: .atLeastOnce, retain: true))
        _ = try await device.publish(MQTTMessage(topic: "devices/dev-t1/telemetry", payload: Array(#"{"seq":1,"temp":21.5}"#.utf8), qos: .atLeastOnce))

        #expect(try await curl(["\(base)/v1/devices/dev-t1"]).status == 401)
        var twin = (status: 0, body: "")
        for _ in 0..<100 {
            twin = try await curl(["-H", "Authorization: Bearer test-token-123", "\(base)/v1/devices/dev-t1"])
            if twin.status == 200 && twin.body.contains("21.5") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(twin.status == 200 && twin.body.contains("\"online\":true") && twin.body.contains("21.5"), "\(twin)")
        #expect(try await curl(["\(base)/metrics"]).body.contains("swarm_gateway_"))

        // The operator commands against the running node (token from the environment, like an operator's shell).
        let operatorEnvironment = ["SWARM_GATEWAY_URL": base, "SWARM_GATEWAY_API_TOKEN": "test-token-123"]
        let (shown, deviceText) = try await runGateway(["device", "dev-t1"], environment: operatorEnvironment)
        #expect(shown == 0 && deviceText.contains("device dev-t1: online, on node gw-t") && deviceText.contains("21.5"), "\(deviceText)")
        let (listed, groupsText) = try await runGateway(["group", "list"], environment: operatorEnvironment)
        #expect(listed == 0 && groupsText.split(separator: "\n").contains("all\t1"), "\(groupsText)")
        let (members, membersText) = try await runGateway(["group", "members", "all"], environment: operatorEnvironment)
        #expect(members == 0 && membersText.contains("all: 1 device(s)") && membersText.contains("  dev-t1"), "\(membersText)")
        let (status, statusText) = try await runGateway(["status"], environment: operatorEnvironment)
        #expect(status == 0 && statusText.contains("cluster seen from gw-t") && statusText.contains("devices in the registry: 1"), "\(statusText)")
        let (unknown, unknownText) = try await runGateway(["device", "nobody"], environment: operatorEnvironment)
        #expect(unknown != 0 && unknownText.contains("HTTP 404"), "\(unknownText)")
        let (refused, refusedText) = try await runGateway(["device", "dev-t1"], environment: ["SWARM_GATEWAY_URL": base])
        #expect(refused != 0 && refusedText.contains("HTTP 401") && refusedText.contains("SWARM_GATEWAY_API_TOKEN"), "\(refusedText)")
        await device.close()

        kill(process.processIdentifier, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(20)
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!process.isRunning, "still running 20 s after SIGTERM")
        if !process.isRunning { #expect(process.terminationStatus == 0) }
    }

    @Test("cluster TLS: two nodes with certificates of one CA form a cluster; an expired certificate stops start-up with 78")
    func clusterTLS() async throws {
        let binary = try #require(swarmGatewayBinary)
        let ca = try TestCertificateAuthority(name: "gateway-tests-ca")
        defer { ca.remove() }
        let (brokerPort, clusterA, httpA, httpB) = (try freePort(), try freePort(), try freePort(), try freePort())
        func tls(_ node: String, days: Int = 2) throws -> [String] {
            let issued = try ca.issue(node, days: days)
            return ["--cluster-tls-certificate", issued.certificate, "--cluster-tls-key", issued.privateKey, "--cluster-tls-ca", ca.certificate]
        }
        let environment = ["SWARM_GATEWAY_CLUSTER_SECRET": "gateway-tls-test-secret", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]

        // A certificate that expired: refused at start-up, before the broker starts, the file named.
        let expired = try tls("gw-old", days: 0)
        try await Task.sleep(for: .milliseconds(1100))
        let (status, output) = try await runGateway(
            ["run", "--node-name", "gw-old", "--cluster-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--embedded-broker-port", "0"]
                + expired, environment: environment)
        #expect(status == 78)
        #expect(output.contains("TLS certificate chain \(expired[1]): certificate expired on "), "\(output)")
        #expect(!output.contains("BEGIN"), "no PEM contents in the output")

        var processes: [Process] = []
        defer { for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        for (node, arguments) in [
            ("gw-a", ["--cluster-listen", "127.0.0.1:\(clusterA)", "--http-listen", "127.0.0.1:\(httpA)", "--embedded-broker-port", String(brokerPort)]),
            // Each node with its own embedded broker (never anonymous: its gateway login is the node's own).
            ("gw-b", ["--cluster-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:\(httpB)", "--seeds", "127.0.0.1:\(clusterA)",
                      "--embedded-broker-port", "0"]),
        ] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            let data = FileManager.default.temporaryDirectory.appendingPathComponent("\(node)-\(UUID().uuidString.prefix(8))").path
            process.arguments = ["run", "--node-name", node, "--log-level", "warning", "--data-dir", data] + arguments + (try tls(node))
            process.environment = environment
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            processes.append(process)
            // gw-b seeds from gw-a: wait for gw-a first.
            var ready = false
            for _ in 0..<300 where !ready {
                ready = (try? await curl(["http://127.0.0.1:\(node == "gw-a" ? httpA : httpB)/readyz"]))?.status == 200
                if !ready { try await Task.sleep(for: .milliseconds(100)) }
            }
            try #require(ready, "\(node) did not become ready")
        }
        var ring: [String] = []
        for _ in 0..<200 where ring.count < 2 {
            let body = (try? await curl(["http://127.0.0.1:\(httpA)/v1/cluster/tracker"]))?.body ?? ""
            let dump = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            ring = (dump?["ringNodes"] as? [String]) ?? []
            if ring.count < 2 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(ring.sorted() == ["gw-a", "gw-b"], "the two TLS nodes did not form a ring")
        for process in processes { kill(process.processIdentifier, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(30)
        while processes.contains(where: \.isRunning) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(processes.allSatisfy { !$0.isRunning && $0.terminationStatus == 0 })
    }
}
