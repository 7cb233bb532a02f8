// W6K: `kill -9` of a real `swarm-node` process (BENCHMARKS W6 as written): three swarm-node
// processes on 127.0.0.1, N names registered, the process hosting the most names killed with
// SIGKILL. Figures from the survivors' control ports.
import Foundation
import NIOPosix
import SwarmCore

#if canImport(Glibc)
import Glibc
#endif

/// The `swarm-node` executable next to this one (`swift build -c release --product swarm-node`).
func swarmNodeExecutable() -> String? {
    let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let path = directory.appendingPathComponent("swarm-node").path
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}

/// One line to a control port, one JSON line back (blocking socket calls on NIO's thread pool).
func controlLine(port: Int, _ line: String, timeout: Int = 30) async throws -> [String: Any] {
    let text: String = try await NIOThreadPool.singleton.runIfActive {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchFailure(description: "socket failed") }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw BenchFailure(description: "control port \(port): connect failed") }
        let bytes = Array((line + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw BenchFailure(description: "control write failed") }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !answer.contains(UInt8(ascii: "\n")) {
            let count = read(fd, &buffer, buffer.count)
            guard count > 0 else { throw BenchFailure(description: "control port \(port): no answer to \(line)") }
            answer.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: answer.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
    }
    guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
        throw BenchFailure(description: "control answer is not JSON: \(text)")
    }
    return object
}

/// Free loopback ports (bound to 0, then released).
func freeLoopbackPorts(_ count: Int) throws -> [Int] {
    var sockets: [Int32] = []
    defer { for fd in sockets { close(fd) } }
    var ports: [Int] = []
    for _ in 0..<count {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        sockets.append(fd)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw BenchFailure(description: "could not bind a loopback port") }
        ports.append(Int(UInt16(bigEndian: address.sin_port)))
    }
    return ports
}

func killNineWorkload(_ options: Options, report: Report) async throws {
    guard let binary = swarmNodeExecutable() else {
        print("W6K skipped: swarm-node is not built next to swarm-bench (swift build -c release --product swarm-node)")
        return
    }
    let n = options.n
    let names = ["gw-1", "gw-2", "gw-3"]
    let ports = try freeLoopbackPorts(6)
    let logs = FileManager.default.temporaryDirectory.appendingPathComponent("swarm-bench-w6k-\(getpid())")
    try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
    var processes: [String: Process] = [:]
    var control: [String: Int] = [:]
    defer {
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in processes.values { process.waitUntilExit() }
    }
    for (index, name) in names.enumerated() {
        let seeds = (0..<3).filter { $0 != index }.map { "127.0.0.1:\(ports[$0])" }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--name", name, "--listen", "127.0.0.1:\(ports[index])", "--seeds", seeds,
            "--secret", "swarm-bench-w6k-cluster-secret", "--control", "127.0.0.1:\(ports[3 + index])",
        ]
        let log = logs.appendingPathComponent("\(name).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        processes[name] = process
        control[name] = ports[3 + index]
    }
    func dump(_ name: String) async -> [String: Any]? {
        guard let port = control[name] else { return nil }
        return (try? await controlLine(port: port, "dump", timeout: 5))?["dump"] as? [String: Any]
    }
    func ring(_ name: String) async -> [String]? { await dump(name)?["ringNodes"] as? [String] }
    func hosted(_ name: String) async -> [String: Int]? {
        guard let port = control[name], let answer = try? await controlLine(port: port, "hosted w6k \(n)", timeout: 5),
            let hosts = answer["names"] as? [String: String]
        else { return nil }
        return hosts.compactMapValues { Int($0) }
    }

    guard await waitUntil(from: .now, timeout: .seconds(60), interval: .milliseconds(100), {
        for name in names where await ring(name)?.count != 3 { return false }
        return true
    }) != nil else { throw BenchFailure(description: "W6K: the 3-process ring did not form (logs in \(logs.path))") }
    print("W6K: 3 swarm-node processes up; registering \(n) names")
    let registered = try await controlLine(port: control["gw-1"]!, "register-many w6k \(n)", timeout: 300)
    guard (registered["result"] as? String) == String(n) else { throw BenchFailure(description: "W6K: register-many answered \(registered)") }
    guard await waitUntil(from: .now, timeout: .seconds(60), interval: .milliseconds(50), {
        for name in names {
            guard let hosts = await hosted(name), hosts["-"] == nil else { return false }
        }
        return true
    }) != nil else { throw BenchFailure(description: "W6K: names did not reach every node") }
    let before = await hosted("gw-1") ?? [:]
    guard let victim = before.filter({ $0.key != "-" }).max(by: { $0.value < $1.value })?.key, let process = processes[victim] else {
        throw BenchFailure(description: "W6K: no host found")
    }
    let held = before[victim] ?? 0
    let survivors = names.filter { $0 != victim }
    let heartbeat = Tracker.Settings()
    let setup = "3 swarm-node processes on 127.0.0.1, N=\(n), SIGKILL to \(victim) holding \(held) names; heartbeat \(heartbeat.heartbeatInterval / 1_000_000) ms, failure timeout \(heartbeat.failureTimeout / 1_000_000) ms"

    kill(process.processIdentifier, SIGKILL)
    let start = ContinuousClock.now
    let detected = await waitUntil(from: start, timeout: .seconds(60), interval: .milliseconds(2)) {
        for name in survivors where await ring(name)?.count != 2 { return false }
        return true
    }
    let recovered = await waitUntil(from: start, timeout: .seconds(120), interval: .milliseconds(2)) {
        for name in survivors {
            guard let hosts = await hosted(name), hosts[victim] == nil, hosts["-"] == nil else { return false }
        }
        return true
    }
    let detectedMs = detected.map { nanoseconds($0) / 1e6 } ?? .nan
    report.record("W6K.detect", "failure detection after kill -9 (both survivors' rings drop the node)", setup: setup, unit: "ms", detectedMs)
    report.record("W6K.recover", "time until every name it held resolves to a survivor on both survivors, from the SIGKILL", setup: setup, unit: "ms",
        recovered.map { nanoseconds($0) / 1e6 } ?? .nan, goal: .atMost(detectedMs + 500), goalText: "≤ detection + 500 ms")
    try? FileManager.default.removeItem(at: logs)
}
