import Foundation
import Logging
import NIOCore
import NIOPosix
import SwarmCore
import SwarmTransport
import Testing

@testable import SwarmNode

let testSecret = ClusterSecret("swarm-node-tests-secret")

/// Polls `condition` every 50 ms until it holds, at most `timeout / 50 ms` times; returns whether
/// it held. Counting polls rather than reading a clock keeps the bound meaningful when the test
/// process is starved (other suites run CPU-bound synchronous tests on the 2-thread pool): the
/// wait stretches with the starvation instead of expiring during it.
func eventually(
    timeout: Duration = .seconds(20), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let polls = max(1, Int(timeout / .milliseconds(50)))
    // A hard cap as well, for conditions that are slow to evaluate.
    let hardDeadline = ContinuousClock.now + timeout * 5
    for _ in 0..<polls where ContinuousClock.now < hardDeadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

/// Runs `operation`, failing with `SwarmError.timeout` if it takes longer than `timeout`.
func withTimeout<T: Sendable>(
    _ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw SwarmError.timeout
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

func testSettings(_ name: String, seeds: [String]) -> SwarmNodeSettings {
    var settings = SwarmNodeSettings(name: name, secret: testSecret)
    settings.seeds = seeds
    var logger = Logger(label: "test.\(name)")
    logger.logLevel = ProcessInfo.processInfo.environment["SWARM_TEST_LOG"] == nil ? .warning : .debug
    settings.logger = logger
    settings.drainTimeout = .seconds(20)
    // The nodes share this test process with CPU-bound suites: a starved input loop must not be
    // taken for a dead peer (a stopped node still closes its connections: instant detection).
    settings.tracker.failureTimeout = .seconds(10)
    return settings
}

let workerFactory: ProcessFactory = { name, _ in WorkerProcess(name: name) }

/// Starts `count` in-process nodes on port 0 (every node seeds the first), runs `body` once
/// every node sees a ring of all of them, and shuts every node down afterwards, even on failure.
func withCluster(
    _ count: Int, factories: [String: ProcessFactory] = ["worker": workerFactory],
    discovery: Bool = false,
    configure: (inout SwarmNodeSettings) -> Void = { _ in },
    _ body: @escaping @Sendable ([SwarmNode]) async throws -> Void
) async throws {
    func settings(_ name: String, seeds: [String]) -> SwarmNodeSettings {
        var settings = testSettings(name, seeds: seeds)
        configure(&settings)
        return settings
    }
    let first = SwarmNode(settings: settings("node-1", seeds: []), factories: factories)
    try await first.start()
    let seed = try #require(await first.address)
    var nodes = [first]
    for index in stride(from: 2, through: count, by: 1) {
        var nodeSettings = settings("node-\(index)", seeds: discovery ? [] : [seed])
        if discovery {
            // Found through a DNS name instead of a seed: `localhost` resolves to the first node.
            let port = try #require(seed.split(separator: ":").last)
            nodeSettings.discovery = ["localhost:\(port)"]
            nodeSettings.discoveryInterval = .milliseconds(200)
        }
        let node = SwarmNode(settings: nodeSettings, factories: factories)
        try await node.start()
        nodes.append(node)
    }
    let all = nodes
    try await withThrowingTaskGroup(of: Void.self) { group in
        for node in all { group.addTask { try await node.run() } }
        var failure: (any Error)?
        do {
            let formed = try await eventually(timeout: .seconds(30)) { try await ringFormed(all, size: all.count) }
            try #require(formed, "the \(all.count)-node ring did not form")
            try await body(all)
        } catch {
            failure = error
        }
        for node in all { await node.shutdown() }
        try await group.waitForAll()
        if let failure { throw failure }
    }
}

/// True when every node is up and its ring has `size` nodes.
func ringFormed(_ nodes: [SwarmNode], size: Int) async throws -> Bool {
    for node in nodes {
        let dump = try await node.dump()
        if dump.ringNodes.count != size || dump.state != "up" { return false }
    }
    return true
}

/// True when every node's registry maps `name` to `pid`.
func everywhere(_ nodes: [SwarmNode], _ name: String, is pid: ProcessID?) async -> Bool {
    for node in nodes where node.whereis(name) != pid { return false }
    return true
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }
