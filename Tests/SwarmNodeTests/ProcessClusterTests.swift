import Foundation
import NIOCore
import NIOPosix
import SwarmCore
import Testing

@testable import SwarmNode

/// The `swarm-node` executable next to this test bundle (`swift build` builds it), or under
/// `.build/debug` of this package; `SWARM_NODE_BINARY` overrides.
let swarmNodeBinary: String? = {
    if let path = ProcessInfo.processInfo.environment["SWARM_NODE_BINARY"] { return path }
    let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let candidates = [
        bundleDirectory.appendingPathComponent("swarm-node").path,
        bundleDirectory.deletingLastPathComponent().appendingPathComponent("swarm-node").path,
        packageRoot.appendingPathComponent(".build/debug/swarm-node").path,
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}()

/// One answer line of the control port.
struct ControlAnswer: Decodable {
    var ok: Bool
    var error: String?
    var result: String?
    var pid: String?
    var pids: [String]?
    var reply: String?
    var replies: [String]?
    var failures: Int?
    var names: [String: String]?
    var completed: Bool?
    var dump: TrackerDump?
}

/// The node name in a pid's description `<name/incarnation.n>`.
func host(of pid: String?) -> String? {
    guard let pid, pid.hasPrefix("<"), let slash = pid.firstIndex(of: "/") else { return nil }
    return String(pid[pid.index(after: pid.startIndex)..<slash])
}

/// Free TCP ports on 127.0.0.1 (bound to port 0, then released).
func freePorts(_ count: Int) async throws -> [Int] {
    var channels: [any Channel] = []
    for _ in 0..<count {
        channels.append(try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get())
    }
    let ports = channels.compactMap { $0.localAddress?.port }
    for channel in channels { try await channel.close() }
    return ports
}

/// `swarm-node` child processes of one test, killed (SIGKILL) by ``killAll()`` whatever happened.
final class NodeProcesses: @unchecked Sendable {
    // Only touched by the test's own task (and its defer): no concurrent access.
    struct Node {
        var name: String
        var process: Process
        var clusterPort: Int
        var controlPort: Int
    }

    let binary: String
    let logDirectory: URL
    private(set) var nodes: [Node] = []

    init(binary: String) throws {
        self.binary = binary
        logDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("swarm-node-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: logDirectory, withIntermediateDirectories: true)
    }

    /// Starts `count` nodes `gw-1…` on free ports, each seeded with all the others.
    func start(_ count: Int) async throws {
        let ports = try await freePorts(count * 2)
        for index in 0..<count {
            let seeds = (0..<count).filter { $0 != index }.map { "127.0.0.1:\(ports[$0])" }.joined(separator: ",")
            let name = "gw-\(index + 1)"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = [
                "--name", name, "--listen", "127.0.0.1:\(ports[index])", "--seeds", seeds,
                "--secret", "process-tests-cluster-secret", "--control", "127.0.0.1:\(ports[count + index])",
                "--drain-timeout", "15",
            ]
            let log = logDirectory.appendingPathComponent("\(name).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            process.standardInput = FileHandle.nullDevice
            try process.run()
            nodes.append(Node(name: name, process: process, clusterPort: ports[index], controlPort: ports[count + index]))
        }
    }

    func node(_ name: String) -> Node? { nodes.first { $0.name == name } }

    /// Sends `signal` to the node's process.
    func signal(_ name: String, _ signal: Int32) {
        guard let node = node(name), node.process.isRunning else { return }
        kill(node.process.processIdentifier, signal)
    }

    /// Waits for the node's process to exit; its exit status, or nil on timeout.
    func waitForExit(_ name: String, timeout: Duration) async -> Int32? {
        guard let node = node(name) else { return nil }
        let ended = await eventually(timeout: timeout) { !node.process.isRunning }
        return ended ? node.process.terminationStatus : nil
    }

    func killAll() {
        for node in nodes where node.process.isRunning {
            kill(node.process.processIdentifier, SIGKILL)
        }
        for node in nodes { node.process.waitUntilExit() }
    }

    func logTail(_ name: String) -> String {
        let text = (try? String(contentsOf: logDirectory.appendingPathComponent("\(name).log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(25).joined(separator: "\n")
    }

    /// One control command to node `name`, answered within `timeout`.
    func control(_ name: String, _ line: String, timeout: Duration = .seconds(30)) async throws -> ControlAnswer {
        let port = try #require(node(name)).controlPort
        let answer = try await withTimeout(timeout) {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineCoder()))
                        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LineCoder()))
                        return try NIOAsyncChannel<String, String>(wrappingChannelSynchronously: channel)
                    }
                }
            return try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(line)
                var iterator = inbound.makeAsyncIterator()
                return try await iterator.next() ?? ""
            }
        }
        return try JSONDecoder().decode(ControlAnswer.self, from: Data(answer.utf8))
    }

    /// `control`, nil when the node does not answer (yet).
    func tryControl(_ name: String, _ line: String) async -> ControlAnswer? {
        try? await control(name, line, timeout: .seconds(5))
    }

    /// True when each of `names` is up with a ring of exactly `names`.
    func ringFormed(_ names: [String]) async -> Bool {
        for name in names {
            guard let dump = await tryControl(name, "dump")?.dump, dump.state == "up", dump.ringNodes == names.sorted()
            else { return false }
        }
        return true
    }
}

@Suite(
    "swarm-node processes", .serialized, .timeLimit(.minutes(10)),
    .enabled(if: swarmNodeBinary != nil, "swarm-node is not built: run `swift build` first"))
struct ProcessClusterTests {
    @Test("three swarm-node processes: registration, duplicates, calls, casts and groups over the control port")
    func threeNodeAPI() async throws {
        let cluster = try NodeProcesses(binary: try #require(swarmNodeBinary))
        defer { cluster.killAll() }
        try await cluster.start(3)
        let names = ["gw-1", "gw-2", "gw-3"]
        let formed = await eventually(timeout: .seconds(60)) { await cluster.ringFormed(names) }
        try #require(formed, "ring did not form; gw-1 log:\n\(cluster.logTail("gw-1"))")

        for index in 0..<4 {
            let name = "dev-\(index)"
            let registered = try await cluster.control("gw-1", "register \(name) fleet")
            #expect(registered.ok && registered.result == "registered", "\(registered)")
            let pid = try #require(registered.pid)
            for node in ["gw-2", "gw-3"] {
                #expect(await eventually { await cluster.tryControl(node, "whereis \(name)")?.pid == pid })
            }
            for node in names {
                let duplicate = try await cluster.control(node, "register \(name)")
                #expect(duplicate.result == "alreadyRegistered" && duplicate.pid == pid, "\(node): \(duplicate)")
                #expect(try await cluster.control(node, "call \(name) ping").reply == "pong")
            }
            for _ in 0..<3 { #expect(try await cluster.control("gw-3", "cast \(name) tick").ok) }
            #expect(try await cluster.control("gw-3", "call \(name) count").reply == "3")
        }
        let unknown = try await cluster.control("gw-2", "call ghost ping")
        #expect(!unknown.ok && unknown.error?.contains("ghost") == true)

        #expect(try await cluster.control("gw-2", "join vip dev-1").ok)
        #expect(try await cluster.control("gw-3", "join vip dev-2").ok)
        for node in names {
            #expect(await eventually { await cluster.tryControl(node, "members vip")?.pids?.count == 2 })
            #expect(await eventually { await cluster.tryControl(node, "members fleet")?.pids?.count == 4 })
        }
        #expect(try await cluster.control("gw-1", "publish vip tick").ok)
        #expect(await eventually { await cluster.tryControl("gw-2", "call dev-1 count")?.reply == "4" })
        #expect(await eventually { await cluster.tryControl("gw-2", "call dev-2 count")?.reply == "4" })
        let multi = try await cluster.control("gw-3", "multicall fleet ping")
        #expect(multi.replies == ["pong", "pong", "pong", "pong"] && multi.failures == 0, "\(multi)")
    }

    @Test("kill -9 a node: its names run again on the survivors with their groups; SIGTERM another: it exits 0 after handing off")
    func killAndTerminate() async throws {
        let cluster = try NodeProcesses(binary: try #require(swarmNodeBinary))
        defer { cluster.killAll() }
        try await cluster.start(3)
        let names = ["gw-1", "gw-2", "gw-3"]
        let formed = await eventually(timeout: .seconds(60)) { await cluster.ringFormed(names) }
        try #require(formed, "ring did not form; gw-1 log:\n\(cluster.logTail("gw-1"))")

        var hostOf: [String: String] = [:]
        for index in 0..<12 {
            let answer = try await cluster.control(names[index % 3], "register n-\(index) fleet")
            let hostName: String = try #require(host(of: answer.pid), "\(answer)")
            hostOf["n-\(index)"] = hostName
        }
        let counts = Dictionary(grouping: hostOf.keys, by: { hostOf[$0]! }).mapValues(\.count)
        let victim = try #require(counts.max { $0.value < $1.value }?.key)
        let survivors = names.filter { $0 != victim }
        for node in survivors {
            #expect(await eventually { await cluster.tryControl(node, "members fleet")?.pids?.count == 12 })
        }

        cluster.signal(victim, SIGKILL)
        for node in survivors {
            let moved = await eventually(timeout: .seconds(30)) {
                guard let registered = await cluster.tryControl(node, "registered")?.names, registered.count == 12 else { return false }
                return registered.values.allSatisfy { host(of: $0) != victim }
            }
            #expect(moved, "\(node) still sees names on \(victim)")
            #expect(await eventually { await cluster.tryControl(node, "members fleet")?.pids?.count == 12 })
        }
        #expect(await eventually { await cluster.ringFormed(survivors) })

        // Give the names on the node about to leave (the survivor hosting more) some state,
        // then SIGTERM it.
        let registered = try #require(try await cluster.control(survivors[0], "registered").names)
        let hosted = { (node: String) in registered.keys.filter { host(of: registered[$0]) == node }.sorted() }
        let leaving = hosted(survivors[0]).count >= hosted(survivors[1]).count ? survivors[0] : survivors[1]
        let last = survivors.first { $0 != leaving }!
        let onLeaving = hosted(leaving)
        try #require(!onLeaving.isEmpty)
        for name in onLeaving {
            for _ in 0..<2 { #expect(try await cluster.control(last, "cast \(name) tick").ok) }
            #expect(try await cluster.control(last, "call \(name) count").reply == "2")
        }
        cluster.signal(leaving, SIGTERM)
        let status = await cluster.waitForExit(leaving, timeout: .seconds(25))
        #expect(status == 0, "\(leaving) exit status \(status.map(String.init) ?? "none (still running)"):\n\(cluster.logTail(leaving))")
        let final = try #require(try await cluster.control(last, "registered").names)
        #expect(final.count == 12)
        #expect(final.values.allSatisfy { host(of: $0) == last }, "\(final)")
        for name in onLeaving {
            #expect(try await cluster.control(last, "call \(name) count").reply == "2", "\(name) lost its state")
        }
        #expect(try await cluster.control(last, "members fleet").pids?.count == 12)
    }
}
