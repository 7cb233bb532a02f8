import NIOCore
import SwarmCore
import SwarmTransport
import Testing

@testable import SwarmNode

/// A process whose factory never finishes in time.
actor SlowProcess: SwarmProcess {}

struct BrokenFactory: Error {}

/// A process that never answers a call in time.
actor HangingProcess: SwarmProcess {
    func call(_ message: [UInt8]) async throws -> [UInt8] {
        try await Task.sleep(for: .seconds(30))
        return []
    }
}

@Suite("SwarmNode runtime edges", .serialized, .timeLimit(.minutes(10)))
struct RuntimeEdgeTests {
    @Test("mailbox bound: casts over the bound are dropped and counted, calls are refused, control passes")
    func mailboxBound() async throws {
        let worker = WorkerProcess(name: "w")
        // A control item that holds the runner, so the bound is tested while messages wait.
        let (gate, opened) = AsyncStream.makeStream(of: Void.self)
        let (ends, ended) = AsyncStream.makeStream(of: Mailbox.Ending.self)
        let mailbox = Mailbox(capacity: 2, process: worker) { _, ending in ended.yield(ending) }
        #expect(mailbox.enqueue(.control(run: { _ in for await _ in gate { break } }, dropped: {})) == .enqueued)
        #expect(mailbox.enqueue(.cast([1])) == .enqueued)
        #expect(mailbox.enqueue(.cast([2])) == .enqueued)
        #expect(mailbox.enqueue(.cast([3])) == .full)
        #expect(mailbox.enqueue(.call([4]) { _ in }) == .full)
        #expect(mailbox.droppedCasts == 1)
        #expect(mailbox.depth == 2)
        #expect(mailbox.enqueue(.control(run: { _ in }, dropped: {})) == .enqueued)
        #expect(mailbox.enqueue(.stop(.die)) == .enqueued)
        // Behind the stop: never delivered; the question gets its fallback.
        let (late, lateReply) = AsyncStream.makeStream(of: String.self)
        #expect(mailbox.enqueue(.control(run: { _ in lateReply.yield("ran") }, dropped: { lateReply.yield("dropped") })) == .enqueued)
        opened.yield()
        var endings = ends.makeAsyncIterator()
        let ending = await endings.next()
        guard case .stopped(.die) = ending else {
            Issue.record("ending \(String(describing: ending))")
            return
        }
        #expect(await worker.count == 2)
        #expect(await worker.stoppedReason == .die)
        var answers = late.makeAsyncIterator()
        #expect(await answers.next() == "dropped")
        #expect(mailbox.enqueue(.cast([6])) == .closed)
        #expect(mailbox.depth == 0)

        // A call queued behind a crash fails instead of waiting for its timeout.
        let (crashEnds, crashEnded) = AsyncStream.makeStream(of: Mailbox.Ending.self)
        let crashing = Mailbox(process: WorkerProcess(name: "c")) { _, ending in crashEnded.yield(ending) }
        let (lateCall, lateCallReply) = AsyncStream.makeStream(of: String.self)
        let (crashGate, crashOpened) = AsyncStream.makeStream(of: Void.self)
        #expect(crashing.enqueue(.control(run: { _ in for await _ in crashGate { break } }, dropped: {})) == .enqueued)
        #expect(crashing.enqueue(.cast(Array("crash".utf8))) == .enqueued)
        #expect(crashing.enqueue(.call([7]) { result in lateCallReply.yield("\(result)") }) == .enqueued)
        crashOpened.yield()
        var crashEndings = crashEnds.makeAsyncIterator()
        guard case .crashed(let why) = await crashEndings.next() else {
            Issue.record("a throwing receive ends the process as crashed")
            return
        }
        #expect(why.contains("crash requested"))
        var lateCalls = lateCall.makeAsyncIterator()
        #expect(await lateCalls.next()?.contains("process ended") == true)
        #expect(crashing.depth == 0)
    }

    @Test("mailbox runner on demand: idle between bursts, order kept across bursts, close delivers what is queued then ends once")
    func mailboxRunsOnDemand() async throws {
        let worker = WorkerProcess(name: "w")
        let (ends, ended) = AsyncStream.makeStream(of: Mailbox.Ending.self)
        let mailbox = Mailbox(process: worker) { _, ending in ended.yield(ending) }
        for burst in 0..<50 {
            for _ in 0..<(burst % 7 + 1) { #expect(mailbox.enqueue(.cast([1])) == .enqueued) }
            if burst % 5 == 0 { try await Task.sleep(for: .milliseconds(2)) }  // let the runner go idle
        }
        let expected = (0..<50).reduce(0) { $0 + $1 % 7 + 1 }
        let reply = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8], any Error>) in
            #expect(mailbox.enqueue(.call(Array("count".utf8)) { continuation.resume(with: $0) }) == .enqueued)
        }
        #expect(String(decoding: reply, as: UTF8.self) == String(expected), "every cast before the call was delivered first")
        for _ in 0..<3 { #expect(mailbox.enqueue(.cast([1])) == .enqueued) }
        mailbox.close()
        #expect(mailbox.enqueue(.cast([1])) == .closed)
        var endings = ends.makeAsyncIterator()
        guard case .closed = await endings.next() else {
            Issue.record("a closed mailbox ends with .closed")
            return
        }
        #expect(await worker.count == expected + 3, "what was queued before close() is still delivered")
        mailbox.close()
        try await Task.sleep(for: .milliseconds(20))
        ended.finish()
        #expect(await endings.next() == nil, "onEnd runs once")
    }

    @Test("deadlines: each fires once after its duration, in order per duration, none early")
    func deadlines() async throws {
        let deadlines = Deadlines()
        let start = ContinuousClock.now
        deadlines.add(after: .milliseconds(200), .call(2))
        deadlines.add(after: .milliseconds(50), .call(1))
        deadlines.add(after: .milliseconds(200), .call(3))
        #expect(deadlines.count == 3)
        #expect(deadlines.expired(now: start).isEmpty)
        let atHundred = deadlines.expired(now: start + .milliseconds(100))
        #expect(atHundred.map(\.callID) == [1])
        let later = deadlines.expired(now: start + .milliseconds(300))
        #expect(later.map(\.callID) == [2, 3])
        #expect(deadlines.isEmpty)
        // Many entries of one duration: the queue compacts and keeps order.
        for id in 0..<10_000 { deadlines.add(after: .milliseconds(1), .call(UInt64(id))) }
        try await Task.sleep(for: .milliseconds(5))
        #expect(deadlines.expired().map(\.callID) == (0..<10_000).map { UInt64($0) })
    }

    @Test("call timeouts and multiCall: a member that never answers is counted, the rest reply")
    func callTimeouts() async throws {
        let factories: [String: ProcessFactory] = [
            "worker": workerFactory,
            "hanging": { _, _ in HangingProcess() },
        ]
        try await withCluster(1, factories: factories) { nodes in
            let node = nodes[0]
            for name in ["w1", "w2"] { #expect(try await node.register(name, kind: "worker", groups: ["g"]).pid != nil) }
            #expect(try await node.register("h", kind: "hanging", groups: ["g"]).pid != nil)
            let clock = ContinuousClock()
            let start = clock.now
            await #expect(throws: SwarmError.timeout) { try await node.call("h", bytes("ping"), timeout: .milliseconds(200)) }
            let callTook = clock.now - start
            #expect(callTook >= .milliseconds(200) && callTook < .seconds(3), "call timed out after \(callTook)")
            let multiStart = clock.now
            let result = await node.multiCall("g", bytes("ping"), timeout: .milliseconds(300))
            let multiTook = clock.now - multiStart
            #expect(result.replies.count == 2)
            #expect(result.replies.allSatisfy { text($0.reply) == "pong" })
            #expect(result.failures == 1)
            #expect(result.failed == [node.whereis("h")].compactMap { $0 }, "the member that timed out is named")
            #expect(multiTook >= .milliseconds(300) && multiTook < .seconds(3), "multiCall took \(multiTook)")
            // Everyone answers: the result comes as soon as the last reply does.
            try await node.unregister("h")
            let quick = await node.multiCall("g", bytes("ping"), timeout: .seconds(10))
            #expect(quick.replies.count == 2 && quick.failures == 0)
        }
    }

    @Test("DNS discovery: names resolve to every address; unresolvable names are errors")
    func discoveryResolve() async throws {
        let local = try await SwarmNode.resolve("localhost:7946")
        #expect(local.contains("127.0.0.1:7946"), "\(local)")
        await #expect(throws: (any Error).self) { try await SwarmNode.resolve("no-such-host.invalid:7946") }
        await #expect(throws: (any Error).self) { try await SwarmNode.resolve("missing-port") }
    }

    @Test("nodes with no seeds find the cluster through a DNS name and form one ring")
    func discoveryCluster() async throws {
        try await withCluster(3, discovery: true) { (nodes: [SwarmNode]) async throws in
            #expect(try await nodes[2].register("d-1", kind: "worker").pid != nil)
            #expect(await eventually { await everywhere(nodes, "d-1", is: nodes[2].whereis("d-1")) })
        }
    }

    @Test("a factory that hangs or throws fails the registration; the node keeps serving")
    func factoryFailures() async throws {
        let factories: [String: ProcessFactory] = [
            "worker": workerFactory,
            "slow": { _, _ in
                try await Task.sleep(for: .seconds(30))
                return SlowProcess()
            },
            "broken": { _, _ in throw BrokenFactory() },
        ]
        try await withCluster(1, factories: factories, configure: { $0.startTimeout = .milliseconds(300) }) { nodes in
            let node = nodes[0]
            #expect(try await node.register("s", kind: "slow") == .failed(.timeout))
            let broken = try await node.register("b", kind: "broken")
            guard case .failed(.startFailed) = broken else {
                Issue.record("broken factory: \(broken)")
                return
            }
            #expect(node.whereis("s") == nil)
            #expect(node.whereis("b") == nil)
            #expect(try await node.register("w", kind: "worker").pid != nil)
            #expect(text(try await node.call("w", bytes("ping"), timeout: .seconds(2))) == "pong")
        }
    }

    @Test("undecodable frames from an authenticated peer are logged and dropped; the node keeps serving")
    func undecodableFrames() async throws {
        try await withCluster(1) { nodes in
            let node = nodes[0]
            let address = try #require(await node.address)
            let (host, port) = try #require(splitAddress(address))
            let intruder = ClusterTransport(
                node: NodeID(name: "intruder", incarnation: 1), settings: TransportSettings(secret: testSecret)
            ) { _ in }
            try await intruder.start()
            var failure: (any Error)?
            do {
                intruder.connect(host: host, port: port)
                #expect(await eventually { !intruder.connectedPeers.isEmpty })
                let peer = try #require(intruder.connectedPeers.first)
                var garbage = ByteBuffer()
                garbage.writeBytes([0xde, 0xad, 0xbe, 0xef, 0x01])
                intruder.send(to: peer, type: 0x0001, payload: garbage)
                intruder.send(to: peer, type: 0x4242, payload: garbage)
                #expect(await eventually { node.framesUndecodable >= 2 })
            } catch {
                failure = error
            }
            await intruder.shutdown()
            if let failure { throw failure }
            #expect(try await node.register("still-alive", kind: "worker").pid != nil)
            #expect(text(try await node.call("still-alive", bytes("ping"))) == "pong")
        }
    }
}
