import Testing

@testable import SwarmCore

/// Replication and successor-state paths that need lost messages or late joiners: catch-up from a gap, catch-up
/// from the heartbeat digest, snapshots when the log wrapped, checkpoints following the ring
/// successor, and orphan hints to an owner that never saw the registration.
@Suite struct TrackerReplicationTests {
    /// Drops every queued `replicate` from `from` to `to`; returns how many were dropped.
    @discardableResult
    static func dropReplication(_ cluster: inout Cluster, from: String, to: String) -> Int {
        let before = cluster.queue.count
        cluster.queue.removeAll {
            if case .message(let f, let t, .replicate) = $0 { return f.name == from && t.name == to }
            return false
        }
        return before - cluster.queue.count
    }

    static func registerExisting(_ cluster: inout Cluster, _ names: [String], on node: String) {
        for name in names {
            let pid = cluster.newPid(on: node)
            cluster.on(node) { $0.onRegisterExisting(name: name, pid: pid, request: 1, now: $1) }
        }
    }

    @Test func gapTriggersCatchUp() {
        var cluster = Cluster(two)
        Self.registerExisting(&cluster, ["a"], on: "gw-1")
        #expect(Self.dropReplication(&cluster, from: "gw-1", to: "gw-2") == 1)
        cluster.settle()
        #expect(cluster.nodes["gw-2"]!.whereis("a") == nil, "lost")
        Self.registerExisting(&cluster, ["b"], on: "gw-1")
        cluster.settle()
        #expect(cluster.history["gw-2"]!.compactMap(\.sentMessage).contains { $0.message == .catchUp(after: 0) }, "the gap is noticed")
        #expect(cluster.nodes["gw-2"]!.whereis("a") != nil)
        #expect(cluster.nodes["gw-2"]!.whereis("b") != nil)
        #expect(cluster.nodes["gw-2"]!.registry.view == cluster.nodes["gw-1"]!.registry.view)
    }

    @Test func heartbeatDigestTriggersCatchUp() {
        var cluster = Cluster(two)
        Self.registerExisting(&cluster, ["a", "b"], on: "gw-1")
        #expect(Self.dropReplication(&cluster, from: "gw-1", to: "gw-2") == 2)
        cluster.settle()
        #expect(cluster.nodes["gw-2"]!.whereis("b") == nil)
        // Nothing else changes: only the heartbeat's sequence number reveals the loss.
        for _ in 0..<6 { cluster.tick(.ms(100)) }
        #expect(cluster.history["gw-2"]!.compactMap(\.sentMessage).contains { $0.message == .catchUp(after: 1) || $0.message == .catchUp(after: 0) })
        #expect(cluster.nodes["gw-2"]!.registry.view == cluster.nodes["gw-1"]!.registry.view)
        #expect(cluster.nodes["gw-2"]!.whereis("b") != nil)
    }

    @Test func snapshotWhenTheLogNoLongerReachesBack() {
        var cluster = Cluster()
        cluster.settings.changeLogCapacity = 4
        cluster.addNode("gw-1")
        cluster.addNode("gw-2")
        cluster.connect("gw-1", "gw-2")
        Self.registerExisting(&cluster, ["a"], on: "gw-1")
        cluster.settle()
        Self.registerExisting(&cluster, ["b", "c", "d", "e", "f", "g"], on: "gw-1")
        #expect(Self.dropReplication(&cluster, from: "gw-1", to: "gw-2") == 6)
        cluster.on("gw-1") { $0.onUnregister(name: "a", request: 9, now: $1) }  // seq 8 arrives: gap after 1
        let snapshotsBefore = cluster.nodes["gw-1"]!.stats.snapshotsSent
        cluster.settle()
        #expect(cluster.nodes["gw-1"]!.stats.snapshotsSent == snapshotsBefore + 1, "position 1 is older than the log")
        #expect(cluster.nodes["gw-2"]!.registry.view == cluster.nodes["gw-1"]!.registry.view)
        #expect(cluster.nodes["gw-2"]!.whereis("a") == nil)
        #expect(cluster.nodes["gw-2"]!.registered().map(\.name) == ["b", "c", "d", "e", "f", "g"])
    }

    /// A checkpoint is re-sent when the name's ring successor changes, so the node that takes
    /// over after a crash recovers the state.
    @Test func checkpointFollowsTheSuccessor() {
        let ring3 = HashRing(nodes: three)
        let survivors = HashRing(nodes: ["gw-2", "gw-3"])
        var candidate: String?
        for i in 0..<10_000 where ring3.owner(of: "cp-\(i)") == "gw-1" && survivors.owner(of: "cp-\(i)") == "gw-3" {
            candidate = "cp-\(i)"
            break
        }
        guard let name = candidate else {
            Issue.record("no suitable name")
            return
        }
        var cluster = Cluster(two)
        let pid = cluster.register(name, from: "gw-2", request: 1)!.pid!
        #expect(pid.node == cluster.id("gw-1"))
        cluster.on("gw-1") { $0.onCheckpoint(pid: pid, state: [1, 1], now: $1) }
        cluster.on("gw-1") { $0.onCheckpoint(pid: pid, state: [2, 2], now: $1) }
        cluster.settle()
        cluster.addNode("gw-3")
        cluster.connect("gw-1", "gw-3")
        cluster.connect("gw-2", "gw-3")
        let toGw3 = cluster.history["gw-1"]!.compactMap(\.sentMessage).filter { $0.to.name == "gw-3" }
        #expect(toGw3.contains { $0.message == .checkpoint(name: name, pid: pid, version: 2, state: [2, 2]) })
        cluster.crash("gw-1")
        let start = cluster.startOrders.last
        #expect(start?.node == "gw-3")
        #expect(start?.order.reason == .recover(state: [2, 2]), "the latest checkpoint")
        checkConverged(cluster, names: [name])
    }

    /// The new owner never saw the registration (it is not connected to the dead host); a node
    /// that knew it hints the owner, which restarts the name.
    @Test func orphanHintReachesAnOwnerThatNeverSawTheName() {
        let ring3 = HashRing(nodes: three)
        let survivors = HashRing(nodes: ["gw-2", "gw-3"])
        var candidate: String?
        for i in 0..<10_000 where ring3.owner(of: "oh-\(i)") == "gw-1" && survivors.owner(of: "oh-\(i)") == "gw-3" {
            candidate = "oh-\(i)"
            break
        }
        guard let name = candidate else {
            Issue.record("no suitable name")
            return
        }
        var cluster = Cluster(two)
        let pid = cluster.register(name, from: "gw-2", groups: ["g"], request: 1)!.pid!
        #expect(pid.node == cluster.id("gw-1"))
        cluster.addNode("gw-3")
        cluster.connect("gw-2", "gw-3")  // gw-3 never connects to gw-1
        #expect(cluster.nodes["gw-3"]!.whereis(name) == nil)
        cluster.crash("gw-1")
        for _ in 0..<5 { cluster.tick(.ms(100)) }
        let start = cluster.startOrders.last
        #expect(start?.node == "gw-3")
        #expect(start?.order.name == name)
        #expect(start?.order.reason == .restart)
        let restarted = cluster.nodes["gw-2"]!.whereis(name)
        #expect(restarted?.node == cluster.id("gw-3"))
        #expect(cluster.nodes["gw-3"]!.members(of: "g") == [restarted!])
        checkConverged(cluster, names: [name])
    }

    /// An acknowledged checkpoint is answered only once the successor holds it: not before the
    /// `checkpointRequest` was delivered, and a crash of the host right after the answer
    /// recovers that state.
    @Test func acknowledgedCheckpointIsAnsweredOnceTheSuccessorHoldsIt() {
        var cluster = Cluster(three)
        let name = nameOwned(by: "gw-1", among: three, prefix: "ack")
        let pid = cluster.register(name, from: "gw-2", request: 1)!.pid!
        let successor = cluster.nodes["gw-1"]!.successor(of: name)!
        cluster.on("gw-1") { $0.onCheckpoint(pid: pid, state: [7], request: 50, now: $1) }
        #expect(cluster.done("gw-1", 50) == nil, "no answer before the successor confirmed")
        #expect(cluster.queue.contains {
            if case .message(_, let to, .checkpointRequest(50, name, pid, _, [7])) = $0 { return to.name == successor }
            return false
        })
        cluster.settle()
        #expect(cluster.done("gw-1", 50) == .some(nil))
        #expect(cluster.nodes["gw-1"]!.inFlight == 0)
        // A plain checkpoint after it, lost on the way: the acknowledged one is what recovery finds.
        cluster.on("gw-1") { $0.onCheckpoint(pid: pid, state: [8], now: $1) }
        cluster.queue.removeAll()
        cluster.crash("gw-1")
        let start = cluster.startOrders.last
        #expect(start?.node == successor)
        #expect(start?.order.reason == .recover(state: [7]))
    }

    /// The successor dies before it confirmed: the request goes to the name's next successor
    /// (same request id) and is answered by it; without any successor left it is answered at once.
    @Test func acknowledgedCheckpointFollowsANewSuccessor() {
        var cluster = Cluster(three)
        let name = nameOwned(by: "gw-1", among: three, prefix: "ackmove")
        let pid = cluster.register(name, from: "gw-1", request: 1)!.pid!
        let first = cluster.nodes["gw-1"]!.successor(of: name)!
        let second = three.first { $0 != "gw-1" && $0 != first }!
        cluster.on("gw-1") { $0.onCheckpoint(pid: pid, state: [1], request: 60, now: $1) }
        cluster.queue.removeAll()  // the request to the first successor is lost with it
        cluster.crash(first)
        #expect(cluster.done("gw-1", 60) == .some(nil))
        #expect(cluster.history["gw-1"]!.compactMap(\.sentMessage).contains {
            $0.to.name == second && $0.message == .checkpointRequest(id: 60, name: name, pid: pid, version: 1, state: [1])
        })
        #expect(cluster.nodes[second]!.inFlight == 0)
        // Alone: nothing to replicate to, answered at once.
        cluster.crash(second)
        cluster.on("gw-1") { $0.onCheckpoint(pid: pid, state: [2], request: 61, now: $1) }
        #expect(cluster.done("gw-1", 61) == .some(nil))
    }

    /// A successor that stays silent: the request times out (the API answers 503), nothing waits
    /// for ever.
    @Test func acknowledgedCheckpointTimesOut() {
        var cluster = Cluster(two)
        let name = nameOwned(by: "gw-1", among: two, prefix: "acktime")
        let pid = cluster.register(name, from: "gw-1", request: 1)!.pid!
        cluster.on("gw-1") { $0.onCheckpoint(pid: pid, state: [1], request: 70, now: $1) }
        cluster.queue.removeAll()
        for _ in 0..<120 { cluster.tick(.ms(50)) }
        #expect(cluster.done("gw-1", 70) == .some(.timeout))
    }
}
