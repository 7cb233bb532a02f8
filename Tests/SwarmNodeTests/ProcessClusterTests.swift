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
            let seeds = (0..<count).filter { $0 != index }.map { "127.0.0.1:\(ports[$0])" }
            try launch("gw-\(index + 1)", clusterPort: ports[index], controlPort: ports[count + index], seeds: seeds)
        }
    }

    /// Starts one more node, seeded with every node started so far.
    func add(_ name: String) async throws {
        let ports = try await freePorts(2)
        try launch(name, clusterPort: ports[0], controlPort: ports[1], seeds: nodes.map { "127.0.0.1:\($0.clusterPort)" })
    }

    private func launch(_ name: String, clusterPort: Int, controlPort: Int, seeds: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--name", name, "--listen", "127.0.0.1:\(clusterPort)", "--seeds", seeds.joined(separator: ","),
            "--secret", "process-tests-cluster-secret", "--control", "127.0.0.1:\(controlPort)",
            "--drain-timeout", "15",
        ]
        let log = logDirectory.appendingPathComponent("\(name).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        nodes.append(Node(name: name, process: process, clusterPort: clusterPort, controlPort: controlPort))
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

    @Test("a 4th node joins under a steady stream of casts: its names move to it with their state, 0 casts lost")
    func joinUnderCasts() async throws {
        let cluster = try NodeProcesses(binary: try #require(swarmNodeBinary))
        defer { cluster.killAll() }
        try await cluster.start(3)
        let first = ["gw-1", "gw-2", "gw-3"]
        let formed = await eventually(timeout: .seconds(60)) { await cluster.ringFormed(first) }
        try #require(formed, "ring did not form; gw-1 log:\n\(cluster.logTail("gw-1"))")
        let names = (0..<60).map { "c-\($0)" }
        for (index, name) in names.enumerated() {
            #expect(try await cluster.control(first[index % 3], "register \(name) fleet").pid != nil)
        }
        for node in first { #expect(await eventually { await cluster.tryControl(node, "members fleet")?.pids?.count == names.count }) }

        // The stream: rounds of `castmany 5` over batches of 10 names, from gw-1 and gw-2 in turn.
        var sent = [String: Int]()
        var failures: [String] = []
        func round(_ number: Int) async throws {
            for (batchIndex, start) in stride(from: 0, to: names.count, by: 10).enumerated() {
                let batch = names[start..<min(start + 10, names.count)]
                let sender = first[(number + batchIndex) % 2]
                let answer = try await cluster.control(sender, "castmany 5 \(batch.joined(separator: " "))")
                if !answer.ok { failures.append("\(sender): \(answer.error ?? "?") after \(answer.result ?? "?")") }
                let total = Int(answer.result ?? "") ?? 0
                // castmany goes round the names in order: the first `total` casts reached these.
                for offset in 0..<total { sent[batch[batch.startIndex + offset % batch.count], default: 0] += 1 }
            }
        }
        for number in 0..<3 { try await round(number) }
        try await cluster.add("gw-4")
        let all = first + ["gw-4"]
        var rounds = 3
        var joinedAt: Int?
        // Keep casting while the ring changes and the names move, then a few rounds more.
        while rounds < 400 {
            try await round(rounds)
            rounds += 1
            if joinedAt == nil, await cluster.ringFormed(all) { joinedAt = rounds }
            if let joinedAt, rounds >= joinedAt + 5 { break }
        }
        try #require(joinedAt != nil, "gw-4 never joined; its log:\n\(cluster.logTail("gw-4"))")
        #expect(failures.isEmpty, "\(failures.prefix(5))")
        let registered = try #require(try await cluster.control("gw-4", "registered").names)
        let onNewcomer = registered.filter { host(of: $0.value) == "gw-4" }.keys.sorted()
        #expect(!onNewcomer.isEmpty, "no name moved to gw-4")
        // Every cast arrived exactly once: each name's count is what was sent to it, including
        // the names that moved with their count while casts kept coming.
        for name in names {
            let expected = String(sent[name] ?? 0)
            let arrived = await eventually(timeout: .seconds(10)) {
                await cluster.tryControl("gw-3", "call \(name) count")?.reply == expected
            }
            let got = await cluster.tryControl("gw-3", "call \(name) count")?.reply ?? "none"
            #expect(arrived, "\(name): \(got) casts counted, \(expected) sent (host \(host(of: registered[name]) ?? "?"))")
        }
        #expect(try await cluster.control("gw-4", "members fleet").pids?.count == names.count)
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

        // State on the victim's names, replicated to their ring successors (ARCHITECTURE.md, “Successor state”).
        let onVictim = hostOf.keys.filter { hostOf[$0] == victim }.sorted()
        try #require(!onVictim.isEmpty)
        for name in onVictim {
            #expect(try await cluster.control(victim, "castmany 3 \(name)").result == "3")
            #expect(try await cluster.control(victim, "call \(name) count").reply == "3")
            #expect(try await cluster.control(victim, "checkpoint \(name)").ok)
        }
        // Every successor holds a standby state for the victim's names before the kill.
        #expect(await eventually {
            var standbys = 0
            for node in survivors { standbys += await cluster.tryControl(node, "dump")?.dump?.standbyStates ?? 0 }
            return standbys >= onVictim.count
        })

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
        for name in onVictim {
            let count = try await cluster.control(survivors[0], "call \(name) count").reply
            #expect(count == "3", "\(name) restarted without its replicated state (count \(count ?? "none"))")
        }

        // Give the names on the node about to leave (the survivor hosting more) some state,
        // then SIGTERM it. (The victim's restored names carry 3 already: compare differences.)
        let registered = try #require(try await cluster.control(survivors[0], "registered").names)
        let hosted = { (node: String) in registered.keys.filter { host(of: registered[$0]) == node }.sorted() }
        let leaving = hosted(survivors[0]).count >= hosted(survivors[1]).count ? survivors[0] : survivors[1]
        let last = survivors.first { $0 != leaving }!
        let onLeaving = hosted(leaving)
        try #require(!onLeaving.isEmpty)
        var expected: [String: String] = [:]
        for name in onLeaving {
            let before = Int(try await cluster.control(last, "call \(name) count").reply ?? "") ?? -100
            for _ in 0..<2 { #expect(try await cluster.control(last, "cast \(name) tick").ok) }
            expected[name] = String(before + 2)
            #expect(try await cluster.control(last, "call \(name) count").reply == expected[name])
        }
        cluster.signal(leaving, SIGTERM)
        let status = await cluster.waitForExit(leaving, timeout: .seconds(25))
        #expect(status == 0, "\(leaving) exit status \(status.map(String.init) ?? "none (still running)"):\n\(cluster.logTail(leaving))")
        let final = try #require(try await cluster.control(last, "registered").names)
        #expect(final.count == 12)
        #expect(final.values.allSatisfy { host(of: $0) == last }, "\(final)")
        for name in onLeaving {
            #expect(try await cluster.control(last, "call \(name) count").reply == expected[name], "\(name) lost its state")
        }
        #expect(try await cluster.control(last, "members fleet").pids?.count == 12)
    }
}
