import Testing

@testable import SwarmCore

let two = ["gw-1", "gw-2"]
let three = ["gw-1", "gw-2", "gw-3"]

/// Every row of the Swarm API (README.md), driven through `Tracker.Instance` with the mini cluster harness.
@Suite struct TrackerRegistrationTests {
    @Test func clusterFormsTheSameRingEverywhere() {
        let cluster = Cluster(three)
        for node in cluster.nodes.values {
            #expect(node.selfState == .up)
            #expect(node.ring.nodes == three)
            #expect(three.allSatisfy { $0 == node.me.name || node.isReachable($0) })
        }
    }

    @Test func registerWithFactoryWhenTheOwnerIsLocal() {
        var cluster = Cluster(two)
        cluster.holdStarts = true
        let name = nameOwned(by: "gw-1", among: two)
        let directives = cluster.on("gw-1") { $0.onRegister(name: name, factory: worker, groups: ["b", "a", "b"], request: 1, now: $1) }
        let orders = directives.compactMap(\.startOrder)
        #expect(orders.count == 1)
        #expect(orders.first?.name == name)
        #expect(orders.first?.factory == worker)
        #expect(orders.first?.reason == .register)
        #expect(cluster.replies["gw-1"]?[1] == nil, "no answer before the process started")
        #expect(cluster.nodes["gw-1"]!.isStarting(name))
        cluster.completeStart()
        cluster.settle()
        guard case .registered(let pid)? = cluster.registration("gw-1", 1) else {
            Issue.record("no registration: \(String(describing: cluster.replies["gw-1"]))")
            return
        }
        #expect(pid.node == cluster.id("gw-1"))
        #expect(cluster.whereis(name) == [pid], "replicated to every node")
        let entry = cluster.nodes["gw-1"]!.localEntries[name]
        #expect(entry?.factory == worker)
        #expect(entry?.groups == ["a", "b"], "groups sorted, without duplicates")
        #expect(cluster.nodes["gw-2"]!.members(of: "a") == [pid])
    }

    @Test func registerWithFactoryWhenTheOwnerIsRemote() {
        var cluster = Cluster(three)
        let name = nameOwned(by: "gw-3", among: three)
        let directives = cluster.on("gw-1") { $0.onRegister(name: name, factory: worker, request: 7, now: $1) }
        #expect(directives.compactMap(\.startOrder).isEmpty, "the non-owner starts nothing")
        let sent = directives.compactMap(\.sentMessage)
        #expect(sent.count == 1)
        #expect(sent.first?.to == cluster.id("gw-3"))
        #expect(sent.first?.message == .registerRequest(id: 7, name: name, factory: worker, groups: [], whereisOrRegister: false))
        cluster.settle()
        #expect(cluster.startOrders.map(\.node) == ["gw-3"])
        guard case .registered(let pid)? = cluster.registration("gw-1", 7) else {
            Issue.record("no registration reply on gw-1")
            return
        }
        #expect(pid.node == cluster.id("gw-3"))
        #expect(cluster.whereis(name) == [pid])
    }

    /// The reply to a remote registration must not overtake the replication of the entry: once
    /// the caller has its pid, `whereis` on the caller's node finds it.
    @Test func remoteRegistrationIsVisibleLocallyWhenTheReplyArrives() {
        var cluster = Cluster(two)
        let name = nameOwned(by: "gw-2", among: two)
        cluster.on("gw-1") { $0.onRegister(name: name, factory: worker, request: 3, now: $1) }
        // Deliver one item at a time and look as soon as the reply is out.
        while cluster.replies["gw-1"]?[3] == nil, !cluster.queue.isEmpty { cluster.step() }
        let pid = cluster.registration("gw-1", 3)?.pid
        #expect(pid != nil)
        #expect(cluster.nodes["gw-1"]!.whereis(name) == pid)
    }

    @Test func unknownFactoryFailsClearly() {
        var cluster = Cluster(two)
        let unknown = FactorySpec(kind: "no-such-kind")
        let local = nameOwned(by: "gw-1", among: two)
        #expect(cluster.register(local, from: "gw-1", factory: unknown, request: 1) == .failed(.unknownFactory("no-such-kind")))
        let remote = nameOwned(by: "gw-2", among: two)
        #expect(cluster.register(remote, from: "gw-1", factory: unknown, request: 2) == .failed(.unknownFactory("no-such-kind")))
        #expect(cluster.whereis(local) == [nil])
        #expect(cluster.whereis(remote) == [nil])
        #expect(!cluster.nodes["gw-2"]!.isStarting(remote))
        // The name is free again afterwards.
        #expect(cluster.register(remote, from: "gw-1", request: 3)?.pid != nil)
    }

    @Test func duplicateRegistrationAnswersAlreadyRegisteredFromEveryNode() {
        var cluster = Cluster(three)
        let name = nameOwned(by: "gw-2", among: three)
        guard case .registered(let pid)? = cluster.register(name, from: "gw-3", request: 1) else {
            Issue.record("first registration failed")
            return
        }
        #expect(cluster.register(name, from: "gw-2", request: 2) == .alreadyRegistered(pid), "owner")
        #expect(cluster.register(name, from: "gw-1", request: 3) == .alreadyRegistered(pid), "non-owner")
        #expect(cluster.register(name, from: "gw-3", factory: FactorySpec(kind: "other"), request: 4) == .alreadyRegistered(pid))
        #expect(cluster.startOrders.count == 1)
    }

    /// A non-owner whose replica has not seen the registration yet asks the owner, which
    /// answers `alreadyRegistered` too.
    @Test func duplicateFromANonOwnerWithAStaleReplica() {
        var cluster = Cluster(two)
        let name = nameOwned(by: "gw-2", among: two)
        cluster.on("gw-2") { $0.onRegister(name: name, factory: worker, request: 1, now: $1) }
        // gw-2 registers (the start completes) but gw-1 asks before hearing of it.
        cluster.on("gw-1") { $0.onRegister(name: name, factory: worker, request: 2, now: $1) }
        #expect(cluster.nodes["gw-1"]!.whereis(name) == nil)
        cluster.settle()
        guard case .registered(let pid)? = cluster.registration("gw-2", 1) else {
            Issue.record("owner did not register")
            return
        }
        #expect(cluster.registration("gw-1", 2) == .alreadyRegistered(pid))
        #expect(cluster.startOrders.count == 1)
    }

    @Test func registerAnExistingLocalProcess() {
        var cluster = Cluster(two)
        let pid = cluster.newPid(on: "gw-1")
        let name = nameOwned(by: "gw-2", among: two)  // ownership does not matter for existing processes
        let directives = cluster.on("gw-1") { $0.onRegisterExisting(name: name, pid: pid, request: 1, now: $1) }
        #expect(directives.contains(.reply(1, .registration(.registered(pid)))))
        #expect(directives.compactMap(\.startOrder).isEmpty)
        cluster.settle()
        #expect(cluster.whereis(name) == [pid])
        #expect(cluster.nodes["gw-1"]!.localEntries[name]?.factory == nil)
        // Registering the same pair again is fine; another pid gets alreadyRegistered.
        cluster.on("gw-1") { $0.onRegisterExisting(name: name, pid: pid, request: 2, now: $1) }
        #expect(cluster.registration("gw-1", 2) == .registered(pid))
        let other = cluster.newPid(on: "gw-1")
        cluster.on("gw-1") { $0.onRegisterExisting(name: name, pid: other, request: 3, now: $1) }
        #expect(cluster.registration("gw-1", 3) == .alreadyRegistered(pid))
        // Never moved: ring changes do not hand it off.
        cluster.addNode("gw-3")
        cluster.connect("gw-1", "gw-3")
        cluster.connect("gw-2", "gw-3")
        for _ in 0..<5 { cluster.tick() }
        #expect(cluster.asked.isEmpty)
        #expect(cluster.whereis(name) == [pid])
        // Removed when the process ends.
        cluster.on("gw-1") { $0.onProcessEnded(pid, now: $1) }
        cluster.settle()
        #expect(cluster.whereis(name) == [nil])
    }

    @Test func registerANonLocalProcessFails() {
        var cluster = Cluster(two)
        let remotePid = cluster.newPid(on: "gw-2")
        cluster.on("gw-1") { $0.onRegisterExisting(name: "x", pid: remotePid, request: 1, now: $1) }
        #expect(cluster.registration("gw-1", 1) == .failed(.notLocal(remotePid)))
        // A pid of an older life of this very node is not local either.
        let oldLife = ProcessID(node: NodeID(name: "gw-1", incarnation: 0), local: 1)
        cluster.on("gw-1") { $0.onRegisterExisting(name: "y", pid: oldLife, request: 2, now: $1) }
        #expect(cluster.registration("gw-1", 2) == .failed(.notLocal(oldLife)))
        cluster.settle()
        #expect(cluster.whereis("x") == [nil])
        #expect(cluster.whereis("y") == [nil])
    }

    @Test func whereisOrRegisterIsAtomic() {
        var cluster = Cluster(three)
        cluster.holdStarts = true
        let name = nameOwned(by: "gw-2", among: three)
        cluster.on("gw-2") { $0.onRegister(name: name, factory: worker, whereisOrRegister: true, request: 1, now: $1) }
        cluster.on("gw-1") { $0.onRegister(name: name, factory: worker, whereisOrRegister: true, request: 2, now: $1) }
        cluster.on("gw-3") { $0.onRegister(name: name, factory: worker, whereisOrRegister: true, request: 3, now: $1) }
        cluster.settle()
        #expect(cluster.heldStarts.count == 1, "one start for concurrent requests")
        #expect(cluster.replies.values.allSatisfy { $0.isEmpty }, "nobody answered before the start")
        cluster.completeStart()
        cluster.settle()
        let results = [cluster.registration("gw-2", 1), cluster.registration("gw-1", 2), cluster.registration("gw-3", 3)]
        let pids = Set(results.map { $0?.pid })
        #expect(pids.count == 1)
        #expect(pids.first! != nil)
        #expect(results.filter { if case .registered? = $0 { return true } else { return false } }.count == 1)
        #expect(cluster.startOrders.count == 1)
    }

    @Test func unregisterRemovesOnlyThatName() {
        var cluster = Cluster(two)
        let pid = cluster.newPid(on: "gw-1")
        cluster.on("gw-1") { $0.onRegisterExisting(name: "first", pid: pid, request: 1, now: $1) }
        cluster.on("gw-1") { $0.onRegisterExisting(name: "second", pid: pid, request: 2, now: $1) }
        cluster.on("gw-1") { $0.onGroup("g", pid: pid, join: true, request: 3, now: $1) }
        cluster.settle()
        // Unregistered from the other node: a request to the host.
        cluster.on("gw-2") { $0.onUnregister(name: "first", request: 4, now: $1) }
        cluster.settle()
        #expect(cluster.done("gw-2", 4) == .some(nil))
        #expect(cluster.whereis("first") == [nil])
        #expect(cluster.whereis("second") == [pid])
        #expect(cluster.stops[pid] == nil, "an existing process keeps running")
        #expect(cluster.nodes["gw-2"]!.members(of: "g") == [pid], "still a member through its other name")
        cluster.on("gw-1") { $0.onUnregister(name: "second", request: 5, now: $1) }
        cluster.settle()
        #expect(cluster.done("gw-1", 5) == .some(nil))
        #expect(cluster.whereis("second") == [nil])
        #expect(cluster.nodes["gw-2"]!.members(of: "g").isEmpty)
        #expect(cluster.stops[pid] == nil)
    }

    @Test func unregisterStopsAFactoryProcessWithItsLastName() {
        var cluster = Cluster(two)
        let name = nameOwned(by: "gw-2", among: two)
        guard let pid = cluster.register(name, from: "gw-1", request: 1)?.pid else {
            Issue.record("registration failed")
            return
        }
        cluster.on("gw-2") { $0.onRegisterExisting(name: "alias", pid: pid, request: 2, now: $1) }
        cluster.settle()
        cluster.on("gw-1") { $0.onUnregister(name: name, request: 3, now: $1) }
        cluster.settle()
        #expect(cluster.done("gw-1", 3) == .some(nil))
        #expect(cluster.whereis(name) == [nil])
        #expect(cluster.whereis("alias") == [pid])
        #expect(cluster.stops[pid] == nil, "it still has a name")
        cluster.on("gw-1") { $0.onUnregister(name: "alias", request: 4, now: $1) }
        cluster.settle()
        #expect(cluster.whereis("alias") == [nil])
        #expect(cluster.stops[pid] == .unregistered, "the tracker started it, so it stops it with its last name")
        // With a single factory name the process stops with it.
        let other = nameOwned(by: "gw-1", among: two)
        let otherPid = cluster.register(other, from: "gw-2", request: 5)?.pid
        cluster.on("gw-2") { $0.onUnregister(name: other, request: 6, now: $1) }
        cluster.settle()
        #expect(otherPid != nil && cluster.stops[otherPid!] == .unregistered)
    }

    @Test func unregisterOfAnUnknownNameIsAnError() {
        var cluster = Cluster(two)
        cluster.on("gw-1") { $0.onUnregister(name: "nobody", request: 1, now: $1) }
        #expect(cluster.done("gw-1", 1) == .some(.unknownName("nobody")))
    }

    @Test func whereisAndRegisteredAreLocalReads() {
        var cluster = Cluster(three)
        var expected: [(String, ProcessID)] = []
        for (i, owner) in three.enumerated() {
            let name = nameOwned(by: owner, among: three, prefix: "r\(i)")
            if let pid = cluster.register(name, from: "gw-1", request: RequestID(i + 1))?.pid { expected.append((name, pid)) }
        }
        #expect(expected.count == 3)
        expected.sort { $0.0 < $1.0 }
        for node in cluster.nodes.values {
            let registered = node.registered()
            #expect(registered.map(\.name) == expected.map(\.0))
            #expect(registered.map(\.pid) == expected.map(\.1))
            for (name, pid) in expected { #expect(node.whereis(name) == pid) }
            #expect(node.whereis("missing") == nil)
        }
    }
}

@Suite struct TrackerMessagingTests {
    @Test func sendToAnUnknownNameIsUndeliverable() {
        var cluster = Cluster(two)
        let envelope = cluster.envelope(from: "gw-1")
        let directives = cluster.on("gw-1") { $0.onSend(to: "nobody", envelope, now: $1) }
        #expect(directives == [.undeliverable([envelope], .unknownName("nobody"))])
    }

    @Test func sendToALocalNameDelivers() {
        var cluster = Cluster(two)
        let name = nameOwned(by: "gw-1", among: two)
        guard let pid = cluster.register(name, from: "gw-1", request: 1)?.pid else {
            Issue.record("registration failed")
            return
        }
        let envelope = cluster.envelope(from: "gw-1")
        let directives = cluster.on("gw-1") { $0.onSend(to: name, envelope, now: $1) }
        #expect(directives == [.deliver(pid, [envelope])])
    }

    @Test func sendToARemoteNameReachesItsHost() {
        var cluster = Cluster(three)
        let name = nameOwned(by: "gw-3", among: three)
        guard let pid = cluster.register(name, from: "gw-1", request: 1)?.pid else {
            Issue.record("registration failed")
            return
        }
        let envelope = cluster.envelope(from: "gw-1")
        let directives = cluster.on("gw-1") { $0.onSend(to: name, envelope, now: $1) }
        #expect(directives.compactMap(\.sentMessage).map(\.to) == [cluster.id("gw-3")])
        cluster.settle()
        #expect(cluster.inbox[pid] == [.message(envelope.id)])
        #expect(cluster.undelivered.isEmpty)
    }

    /// A message routed on a stale view to a node that no longer has the name comes back to
    /// the sending node as undeliverable (the caller sees the error).
    @Test func staleRouteComesBackAsUndeliverable() {
        var cluster = Cluster(two)
        let name = nameOwned(by: "gw-2", among: two)
        _ = cluster.register(name, from: "gw-2", request: 1)
        cluster.on("gw-2") { $0.onUnregister(name: name, request: 2, now: $1) }
        let call = Envelope(id: 900, sender: cluster.id("gw-1"), callID: 5, payload: [1])
        cluster.on("gw-1") { $0.onSend(to: name, call, now: $1) }  // gw-1 has not heard yet
        cluster.settle()
        #expect(cluster.undelivered["gw-1"]?.count == 1)
        #expect(cluster.undelivered["gw-1"]?.first?.0.id == 900)
        #expect(cluster.undelivered["gw-1"]?.first?.0.callID == 5)
        #expect(cluster.undelivered["gw-1"]?.first?.1 == .unknownName(name))
        #expect(cluster.undelivered["gw-2"] == nil, "reported on the caller's node only")
    }

    /// Multi-call / publish to a process on a node we are not connected to: that one comes
    /// back as undeliverable, the others are sent.
    @Test func sendToProcessesOnAnUnreachableNode() {
        var cluster = Cluster(two)
        let here = cluster.newPid(on: "gw-1")
        let there = cluster.newPid(on: "gw-2")
        let lost = ProcessID(node: NodeID(name: "gw-9", incarnation: 1), local: 1)
        let envelope = Envelope(id: 500, sender: cluster.id("gw-1"), callID: 1, payload: [])
        let directives = cluster.on("gw-1") { $0.onSend(toProcesses: [there, lost, here], envelope, now: $1) }
        #expect(directives.contains(.deliver(here, [envelope])))
        #expect(directives.contains(.send(to: cluster.id("gw-2"), .toProcesses(pids: [there], envelope: envelope))))
        #expect(directives.contains { if case .undeliverable([envelope], .unknownName) = $0 { return true } else { return false } })
        cluster.settle()
        #expect(cluster.inbox[there] == [.message(500)])
    }

    @Test func joinAndLeaveUpdateMembers() {
        var cluster = Cluster(two)
        let local = cluster.newPid(on: "gw-1")
        let remote = cluster.newPid(on: "gw-2")
        cluster.on("gw-1") { $0.onRegisterExisting(name: "p1", pid: local, request: 1, now: $1) }
        cluster.on("gw-2") { $0.onRegisterExisting(name: "p2", pid: remote, request: 2, now: $1) }
        cluster.settle()
        cluster.on("gw-1") { $0.onGroup("g", pid: local, join: true, request: 3, now: $1) }
        // Joining a process hosted elsewhere goes through its host.
        cluster.on("gw-1") { $0.onGroup("g", pid: remote, join: true, request: 4, now: $1) }
        cluster.settle()
        #expect(cluster.done("gw-1", 3) == .some(nil))
        #expect(cluster.done("gw-1", 4) == .some(nil))
        for node in cluster.nodes.values { #expect(node.members(of: "g") == [local, remote].sorted()) }
        cluster.on("gw-2") { $0.onGroup("g", pid: local, join: false, request: 5, now: $1) }
        cluster.settle()
        #expect(cluster.done("gw-2", 5) == .some(nil))
        for node in cluster.nodes.values { #expect(node.members(of: "g") == [remote]) }
        // Auto-leave when the process ends.
        cluster.on("gw-2") { $0.onProcessEnded(remote, now: $1) }
        cluster.settle()
        for node in cluster.nodes.values {
            #expect(node.members(of: "g").isEmpty)
            #expect(node.whereis("p2") == nil)
        }
    }

    @Test func joinOfAnUnregisteredProcessIsAnError() {
        var cluster = Cluster(two)
        let local = cluster.newPid(on: "gw-1")
        let remote = cluster.newPid(on: "gw-2")
        cluster.on("gw-1") { $0.onGroup("g", pid: local, join: true, request: 1, now: $1) }
        cluster.on("gw-1") { $0.onGroup("g", pid: remote, join: true, request: 2, now: $1) }
        cluster.settle()
        #expect(cluster.done("gw-1", 1) == .some(.notRegistered(local)))
        #expect(cluster.done("gw-1", 2) == .some(.notRegistered(remote)))
        #expect(cluster.nodes["gw-1"]!.members(of: "g").isEmpty)
    }

    @Test func publishSendsOneBatchPerNode() {
        var cluster = Cluster(three)
        var members: [ProcessID] = []
        for (node, count) in [("gw-1", 1), ("gw-2", 3), ("gw-3", 2)] {
            for i in 0..<count {
                let pid = cluster.newPid(on: node)
                cluster.on(node) { $0.onRegisterExisting(name: "\(node)-p\(i)", pid: pid, request: 1, now: $1) }
                cluster.on(node) { $0.onGroup("room", pid: pid, join: true, request: 2, now: $1) }
                members.append(pid)
            }
        }
        cluster.settle()
        #expect(cluster.nodes["gw-1"]!.members(of: "room") == members.sorted())
        let envelope = cluster.envelope(from: "gw-1")
        let directives = cluster.on("gw-1") { $0.onPublish(group: "room", envelope, now: $1) }
        let sent = directives.compactMap(\.sentMessage)
        #expect(sent.count == 2, "one message per remote node, not per member")
        for (to, message) in sent {
            guard case .toProcesses(let pids, let batched) = message else {
                Issue.record("unexpected \(message)")
                continue
            }
            #expect(batched == envelope)
            #expect(Set(pids) == Set(members.filter { $0.node == to }))
        }
        #expect(directives.contains(.deliver(members[0], [envelope])))
        cluster.settle()
        for pid in members { #expect(cluster.inbox[pid] == [.message(envelope.id)], "\(pid)") }
    }
}

@Suite struct TrackerHandoffTests {
    /// gw-1 alone hosts `moving` (owned by gw-2 once gw-2 joins) and `staying`; then gw-2 joins
    /// and gw-1 is asked for `moving`'s handoff answer.
    static func setUp() -> (cluster: Cluster, moving: String, staying: String, pid: ProcessID, ask: Cluster.AskedHandoff?) {
        var cluster = Cluster(["gw-1"])
        let moving = nameOwned(by: "gw-2", among: two)
        let staying = nameOwned(by: "gw-1", among: two)
        let pid = cluster.register(moving, from: "gw-1", groups: ["g"], request: 1)!.pid!
        _ = cluster.register(staying, from: "gw-1", request: 2)
        cluster.addNode("gw-2")
        cluster.connect("gw-1", "gw-2")
        #expect(cluster.nodes["gw-1"]!.ring.nodes == two)
        #expect(cluster.nodes["gw-2"]!.whereis(moving) == pid)
        cluster.tick()
        #expect(cluster.asked.map(\.name) == [moving], "only the name whose owner changed")
        return (cluster, moving, staying, pid, cluster.asked.first)
    }

    /// A repeated offer (the acceptance was lost) is accepted again only while the process that
    /// took it still holds the name; once it has ended, the sender must keep its copy.
    @Test func repeatedOfferIsRejectedOnceTheAcceptingProcessEnded() {
        var (cluster, moving, _, _, ask) = Self.setUp()
        guard let ask else { return }
        let answered = cluster.on("gw-1") { $0.onHandoffAnswer(token: ask.token, answer: .resume([1]), now: $1) }
        guard let offer = answered.compactMap(\.sentMessage).compactMap({ sent -> HandoffOffer? in
            if case .handoffOffer(let offer) = sent.message { return offer }
            return nil
        }).first else {
            Issue.record("no offer")
            return
        }
        cluster.settle()
        guard let newPid = cluster.nodes["gw-2"]!.whereis(moving), newPid.node == cluster.id("gw-2") else {
            Issue.record("not moved")
            return
        }
        let gw1 = cluster.id("gw-1")
        func answers(_ directives: [Tracker.Directive]) -> [PeerMessage] {
            directives.compactMap(\.sentMessage).filter { $0.to == gw1 }.map(\.message)
        }
        let again = answers(cluster.on("gw-2") { $0.onPeerMessage(.handoffOffer(offer), from: gw1, now: $1) })
        #expect(again.contains(.handoffAccepted(id: offer.id, name: moving, pid: newPid)), "\(again)")
        _ = cluster.on("gw-2") { $0.onProcessEnded(newPid, now: $1) }
        let afterEnd = answers(cluster.on("gw-2") { $0.onPeerMessage(.handoffOffer(offer), from: gw1, now: $1) })
        #expect(!afterEnd.contains(.handoffAccepted(id: offer.id, name: moving, pid: newPid)), "\(afterEnd)")
        #expect(afterEnd.contains { if case .handoffRejected(let id, let name, _) = $0 { return id == offer.id && name == moving } else { return false } }, "\(afterEnd)")
    }

    @Test func resumeMovesTheProcessWithNoMessageLost() {
        var (cluster, moving, _, oldPid, ask) = Self.setUp()
        guard let ask else { return }
        #expect(ask.pid == oldPid)
        // Messages while the process is being asked: from the host and from the new owner.
        let e1 = cluster.envelope(from: "gw-1")
        #expect(cluster.on("gw-1") { $0.onSend(to: moving, e1, now: $1) }.isEmpty, "held")
        let e2 = cluster.envelope(from: "gw-2")
        cluster.on("gw-2") { $0.onSend(to: moving, e2, now: $1) }
        cluster.settle()
        #expect(cluster.nodes["gw-1"]!.dump().handoffs.first?.heldMessages == 2)
        // The process answers resume: an offer goes to the new owner.
        let answered = cluster.on("gw-1") { $0.onHandoffAnswer(token: ask.token, answer: .resume([7, 7]), now: $1) }
        let offers = answered.compactMap(\.sentMessage).compactMap { sent -> HandoffOffer? in
            if case .handoffOffer(let offer) = sent.message, sent.to == cluster.id("gw-2") { return offer }
            return nil
        }
        #expect(offers.count == 1)
        #expect(offers.first?.state == [7, 7])
        #expect(offers.first?.from == oldPid)
        #expect(offers.first?.groups == ["g"])
        #expect(offers.first?.factory == worker)
        // One more message while the offer is in flight.
        let e3 = cluster.envelope(from: "gw-1")
        cluster.on("gw-1") { $0.onSend(to: moving, e3, now: $1) }
        let gw2Before = cluster.history["gw-2"]!.count
        cluster.settle()

        // The new owner started it for the handoff, with the state.
        let start = cluster.startOrders.last
        #expect(start?.node == "gw-2")
        #expect(start?.order.reason == .handoff(state: [7, 7]))
        guard let newPid = cluster.nodes["gw-2"]!.whereis(moving), newPid != oldPid else {
            Issue.record("not moved")
            return
        }
        #expect(newPid.node == cluster.id("gw-2"))
        // endHandoff is the first directive for the new process, before any delivery.
        let gw2 = Array(cluster.history["gw-2"]![gw2Before...])
        let endIndex = gw2.firstIndex(of: .endHandoff(newPid, state: [7, 7]))
        let firstDelivery = gw2.firstIndex { if case .deliver(let pid, _) = $0 { return pid == newPid } else { return false } }
        #expect(endIndex != nil)
        #expect(firstDelivery != nil)
        if let endIndex, let firstDelivery { #expect(endIndex < firstDelivery) }
        // Everything sent during the switch reached the new process, once, after endHandoff.
        #expect(cluster.inbox[newPid] == [.endHandoff([7, 7]), .message(e1.id), .message(e2.id), .message(e3.id)])
        #expect(cluster.inbox[oldPid] == nil)
        #expect(cluster.undelivered.isEmpty)
        // The old process stopped as handed off, its entry gone everywhere; groups moved along.
        #expect(cluster.stops[oldPid] == .handedOff)
        #expect(cluster.whereis(moving) == [newPid])
        #expect(cluster.nodes["gw-1"]!.localEntries[moving] == nil)
        #expect(cluster.nodes["gw-1"]!.members(of: "g") == [newPid])
        #expect(cluster.nodes["gw-2"]!.localEntries[moving]?.groups == ["g"])
        #expect(cluster.nodes.values.allSatisfy { $0.registry.contested.isEmpty })
        // Later messages go straight to the new host.
        let e4 = cluster.envelope(from: "gw-1")
        cluster.on("gw-1") { $0.onSend(to: moving, e4, now: $1) }
        cluster.settle()
        #expect(cluster.inbox[newPid]?.last == .message(e4.id))
        for _ in 0..<10 { cluster.tick() }
        #expect(cluster.asked.count == 1, "no further handoffs once settled")
        #expect(cluster.nodes.values.allSatisfy { $0.inFlight == 0 })
    }

    /// Messages that reach the new owner while its process is still starting wait there and
    /// follow `endHandoff`.
    @Test func messagesAtTheNewOwnerWaitForEndHandoff() {
        var (cluster, moving, _, oldPid, ask) = Self.setUp()
        guard let ask else { return }
        cluster.holdStarts = true
        let e1 = cluster.envelope(from: "gw-1")
        cluster.on("gw-1") { $0.onSend(to: moving, e1, now: $1) }
        cluster.answer(ask, .resume([3]))
        cluster.settle()
        #expect(cluster.heldStarts.count == 1)
        #expect(cluster.nodes["gw-2"]!.isStarting(moving))
        // gw-2 learns it now hosts the name only when the start completes; meanwhile both
        // nodes' senders keep sending.
        let e2 = cluster.envelope(from: "gw-2")
        let e3 = cluster.envelope(from: "gw-1")
        cluster.on("gw-2") { $0.onSend(to: moving, e2, now: $1) }
        cluster.on("gw-1") { $0.onSend(to: moving, e3, now: $1) }
        cluster.settle()
        let e4 = cluster.envelope(from: "gw-2")
        let e5 = cluster.envelope(from: "gw-1")
        let gw1 = cluster.id("gw-1")
        #expect(cluster.on("gw-2") { $0.onPeerMessage(.named(name: moving, envelopes: [e5]), from: gw1, now: $1) }.isEmpty, "held by the pending start")
        cluster.on("gw-2") { $0.onSend(to: moving, e4, now: $1) }
        cluster.completeStart()
        cluster.settle()
        guard let newPid = cluster.nodes["gw-2"]!.whereis(moving), newPid != oldPid else {
            Issue.record("not moved")
            return
        }
        let received = cluster.inbox[newPid] ?? []
        #expect(received.first == .endHandoff([3]))
        #expect(received.count == 6)
        #expect(Set(received.dropFirst()) == Set([e1, e2, e3, e4, e5].map { Cluster.Received.message($0.id) }))
        #expect(cluster.inbox[oldPid] == nil)
        #expect(cluster.undelivered.isEmpty)
        #expect(cluster.stops[oldPid] == .handedOff)
    }

    /// The target dies with the offer in flight: the process stays, gets the held messages, and
    /// the name is never unknown.
    @Test func targetLostDuringTransferKeepsTheProcess() {
        var (cluster, moving, _, oldPid, ask) = Self.setUp()
        guard let ask else { return }
        let e1 = cluster.envelope(from: "gw-1")
        cluster.on("gw-1") { $0.onSend(to: moving, e1, now: $1) }
        cluster.answer(ask, .resume([1]))
        cluster.crash("gw-2")  // the offer is lost with it
        #expect(cluster.whereis(moving) == [oldPid])
        #expect(cluster.stops[oldPid] == nil)
        #expect(cluster.inbox[oldPid] == [.message(e1.id)])
        #expect(cluster.undelivered.isEmpty)
        #expect(cluster.nodes["gw-1"]!.dump().handoffs.isEmpty)
    }

    /// Swarm's `Tracker.handoff(name, state)`: hand over now, with the given state, without
    /// asking the process.
    @Test func explicitHandoffWithState() {
        var cluster = Cluster(["gw-1"])
        let moving = nameOwned(by: "gw-2", among: two)
        let staying = nameOwned(by: "gw-1", among: two)
        let oldPid = cluster.register(moving, from: "gw-1", request: 1)!.pid!
        let stayPid = cluster.register(staying, from: "gw-1", request: 2)!.pid!
        let plain = cluster.newPid(on: "gw-1")
        cluster.on("gw-1") { $0.onRegisterExisting(name: "plain", pid: plain, request: 3, now: $1) }
        cluster.addNode("gw-2")
        cluster.connect("gw-1", "gw-2")  // no tick yet: no beginHandoff was asked
        let directives = cluster.on("gw-1") { $0.onHandoff(name: moving, state: [3, 1, 4], request: 10, now: $1) }
        #expect(!directives.contains { if case .beginHandoff = $0 { return true } else { return false } })
        #expect(cluster.done("gw-1", 10) == .some(nil))
        cluster.settle()
        let newPid = cluster.nodes["gw-2"]!.whereis(moving)
        #expect(newPid?.node == cluster.id("gw-2"))
        #expect(cluster.inbox[newPid!] == [.endHandoff([3, 1, 4])])
        #expect(cluster.stops[oldPid] == .handedOff)
        // A process already on its owner stays; unknown and non-factory names are errors.
        cluster.on("gw-1") { $0.onHandoff(name: staying, state: [1], request: 11, now: $1) }
        #expect(cluster.done("gw-1", 11) == .some(nil))
        cluster.on("gw-1") { $0.onHandoff(name: "nobody", state: [1], request: 12, now: $1) }
        #expect(cluster.done("gw-1", 12) == .some(.unknownName("nobody")))
        cluster.on("gw-1") { $0.onHandoff(name: "plain", state: [1], request: 13, now: $1) }
        #expect(cluster.done("gw-1", 13) == .some(.unknownName("plain")))
        cluster.settle()
        for _ in 0..<5 { cluster.tick() }
        #expect(cluster.whereis(staying) == [stayPid])
        #expect(cluster.stops[stayPid] == nil)
        #expect(cluster.asked.isEmpty)
    }

    /// The name is unregistered while its handoff offer is in flight: it must stay
    /// unregistered, not come back on the new owner.
    /// (Same for a process that ends while its offer is in flight.)
    @Test(arguments: [false, true])
    func unregisterDuringTransferIsNotUndone(processEnds: Bool) {
        var (cluster, moving, _, oldPid, ask) = Self.setUp()
        guard let ask else { return }
        cluster.answer(ask, .resume([1]))  // the offer is queued for gw-2
        if processEnds {
            cluster.running[oldPid] = nil
            cluster.on("gw-1") { $0.onProcessEnded(oldPid, now: $1) }
            #expect(cluster.nodes["gw-1"]!.whereis(moving) == nil)
        } else {
            cluster.on("gw-1") { $0.onUnregister(name: moving, request: 77, now: $1) }
            #expect(cluster.done("gw-1", 77) == .some(nil))
            #expect(cluster.stops[oldPid] == .unregistered)
        }
        cluster.settle()
        for _ in 0..<5 { cluster.tick() }
        #expect(cluster.whereis(moving) == [nil], "unregistered names stay unregistered")
        #expect(cluster.running.values.filter { $0 == moving }.isEmpty, "no process runs for it")
    }

    /// While draining, `.ignore` is not honoured: the node is going away.
    @Test func drainTreatsIgnoreAsRestart() {
        var cluster = Cluster(two)
        cluster.handoffPolicy = .ignore
        let name = nameOwned(by: "gw-1", among: two)
        let oldPid = cluster.register(name, from: "gw-1", request: 1)!.pid!
        cluster.on("gw-1") { $0.onDrain(now: $1) }
        cluster.settle()
        for _ in 0..<5 { cluster.tick() }
        #expect(cluster.history["gw-1"]!.contains { $0.isDrainComplete })
        #expect(cluster.stops[oldPid] == .handedOff)
        #expect(cluster.startOrders.last?.order.reason == .handoff(state: nil))
        #expect(cluster.nodes["gw-2"]!.whereis(name)?.node == cluster.id("gw-2"))
    }

    @Test func restartStartsFreshOnTheNewOwner() {
        var (cluster, moving, _, oldPid, ask) = Self.setUp()
        guard let ask else { return }
        cluster.answer(ask, .restart)
        cluster.settle()
        #expect(cluster.startOrders.last?.order.reason == .handoff(state: nil))
        let newPid = cluster.nodes["gw-2"]!.whereis(moving)
        #expect(newPid?.node == cluster.id("gw-2"))
        #expect(cluster.inbox[newPid!] == nil, "no endHandoff for a restart")
        #expect(cluster.stops[oldPid] == .handedOff)
        #expect(cluster.whereis(moving) == [newPid])
    }

    @Test func ignoreKeepsTheProcess() {
        var (cluster, moving, _, oldPid, ask) = Self.setUp()
        guard let ask else { return }
        let e1 = cluster.envelope(from: "gw-2")
        cluster.on("gw-2") { $0.onSend(to: moving, e1, now: $1) }
        cluster.settle()
        let directives = cluster.on("gw-1") { $0.onHandoffAnswer(token: ask.token, answer: .ignore, now: $1) }
        #expect(directives.compactMap(\.sentMessage).allSatisfy { if case .handoffOffer = $0.message { return false } else { return true } })
        #expect(directives.contains(.deliver(oldPid, [e1])), "held messages go to the process that stays")
        cluster.settle()
        for _ in 0..<20 { cluster.tick(.ms(300)) }
        #expect(cluster.asked.count == 1, "not asked again while the ring is unchanged")
        #expect(cluster.whereis(moving) == [oldPid])
        #expect(cluster.stops[oldPid] == nil)
        #expect(cluster.startOrders.count == 2)
        // The next ring change asks again.
        cluster.addNode("gw-3")
        cluster.connect("gw-1", "gw-3")
        cluster.connect("gw-2", "gw-3")
        cluster.tick()
        #expect(cluster.asked.count == 2)
        #expect(cluster.asked.last?.name == moving)
    }

    @Test func failedAnswerIsRetriedLater() {
        var (cluster, moving, _, oldPid, ask) = Self.setUp()
        guard let ask else { return }
        let e1 = cluster.envelope(from: "gw-1")
        cluster.on("gw-1") { $0.onSend(to: moving, e1, now: $1) }
        let directives = cluster.on("gw-1") { $0.onHandoffAnswer(token: ask.token, answer: .failed("timed out"), now: $1) }
        #expect(directives.contains(.deliver(oldPid, [e1])))
        cluster.settle()
        cluster.tick(.ms(100))
        #expect(cluster.asked.count == 1, "backing off")
        cluster.tick(.ms(200))  // past the 250 ms first retry delay
        #expect(cluster.asked.count == 2)
        guard let retry = cluster.asked.last else { return }
        #expect(retry.name == moving)
        #expect(retry.pid == oldPid)
        cluster.answer(retry, .resume([1]))
        cluster.settle()
        let newPid = cluster.nodes["gw-2"]!.whereis(moving)
        #expect(newPid?.node == cluster.id("gw-2"))
        #expect(cluster.inbox[newPid!] == [.endHandoff([1])])
        #expect(cluster.stops[oldPid] == .handedOff)
        #expect(cluster.inbox[oldPid] == [.message(e1.id)])
    }

    @Test func rejectedOfferKeepsTheProcessAndItsMessages() {
        var (cluster, moving, _, oldPid, ask) = Self.setUp()
        guard let ask else { return }
        cluster.factories = []  // the new owner cannot start it
        cluster.answer(ask, .resume([5]))
        let e1 = cluster.envelope(from: "gw-1")
        cluster.on("gw-1") { $0.onSend(to: moving, e1, now: $1) }
        cluster.settle()
        #expect(cluster.whereis(moving) == [oldPid], "never unknown, never lost")
        #expect(cluster.stops[oldPid] == nil)
        #expect(cluster.inbox[oldPid] == [.message(e1.id)])
        #expect(cluster.undelivered.isEmpty)
    }

    /// A node configured without peers has nowhere to hand off: its drain completes at once.
    /// (One that expects peers keeps its processes and waits — a peer may be restarting; the
    /// simulator's drain-while-partitioned faults cover that.)
    @Test func drainOfALoneNode() {
        var cluster = Cluster(["gw-1"])
        #expect(cluster.register("solo", from: "gw-1", request: 1)?.pid != nil)
        #expect(!cluster.nodes["gw-1"]!.expectsPeers)
        let drain = cluster.on("gw-1") { $0.onDrain(now: $1) }
        #expect(drain.contains { $0.isDrainComplete }, "nothing to wait for")
    }

    @Test func drainCompletesAfterAllHandoffs() {
        var cluster = Cluster(two)
        cluster.handoffPolicy = .resume([42])
        var names: [String] = []
        var excluded = Set<String>()
        for _ in 0..<4 {
            let name = nameOwned(by: "gw-1", among: two, excluding: excluded)
            excluded.insert(name)
            names.append(name)
            #expect(cluster.register(name, from: "gw-2", groups: ["all"], request: RequestID(names.count))?.pid?.node == cluster.id("gw-1"))
        }
        let existing = cluster.newPid(on: "gw-1")
        cluster.on("gw-1") { $0.onRegisterExisting(name: "plain", pid: existing, request: 99, now: $1) }
        let drain = cluster.on("gw-1") { $0.onDrain(now: $1) }
        #expect(!drain.contains { $0.isDrainComplete }, "processes still to hand off")
        #expect(cluster.nodes["gw-1"]!.selfState == .draining)
        cluster.settle()
        #expect(cluster.nodes["gw-2"]!.ring.nodes == ["gw-2"], "the draining node left the ring first")
        #expect(cluster.nodes["gw-1"]!.ring.nodes == ["gw-2"])
        // A draining node starts nothing new itself: its registrations go to the remaining owner.
        let fresh = nameOwned(by: "gw-1", among: two, excluding: excluded)
        #expect(cluster.register(fresh, from: "gw-1", request: 50)?.pid?.node == cluster.id("gw-2"))
        var ticks = 0
        while !cluster.history["gw-1"]!.contains(where: { $0.isDrainComplete }), ticks < 100 {
            cluster.tick()
            ticks += 1
        }
        let history = cluster.history["gw-1"]!
        let completeIndices = history.indices.filter { history[$0].isDrainComplete }
        #expect(completeIndices.count == 1)
        guard let complete = completeIndices.first else { return }
        let handedOff = history.indices.filter { if case .stopProcess(_, .handedOff) = history[$0] { return true } else { return false } }
        #expect(handedOff.count == names.count)
        #expect(handedOff.allSatisfy { $0 < complete }, "drainComplete after every handoff")
        for name in names {
            let pid = cluster.nodes["gw-2"]!.whereis(name)
            #expect(pid?.node == cluster.id("gw-2"), "\(name)")
            #expect(cluster.inbox[pid!]?.first == .endHandoff([42]))
            #expect(cluster.nodes["gw-2"]!.localEntries[name]?.groups == ["all"])
        }
        #expect(cluster.nodes["gw-1"]!.localEntries.keys.sorted() == ["plain"], "only the non-factory name remains")
        #expect(cluster.nodes["gw-1"]!.selfState == .gone)
        #expect(cluster.nodes["gw-2"]!.membership["gw-1"]?.state == .gone)
    }
}

@Suite struct TrackerFailureTests {
    @Test func nodeLossRestartsFactoryNamesOnTheNewOwner() {
        var cluster = Cluster(three)
        let survivors = ["gw-2", "gw-3"]
        var excluded = Set<String>()
        let withState = nameOwned(by: "gw-1", among: three)
        excluded.insert(withState)
        let fresh = nameOwned(by: "gw-1", among: three, excluding: excluded)
        let statePid = cluster.register(withState, from: "gw-2", groups: ["g"], request: 1)!.pid!
        let freshPid = cluster.register(fresh, from: "gw-3", groups: ["g", "h"], request: 2)!.pid!
        let plain = cluster.newPid(on: "gw-1")
        cluster.on("gw-1") { $0.onRegisterExisting(name: "plain", pid: plain, request: 3, now: $1) }
        cluster.on("gw-1") { $0.onGroup("g", pid: plain, join: true, request: 4, now: $1) }
        // The process checkpoints its state: it goes to the name's ring successor.
        let successor = HashRing(nodes: survivors).owner(of: withState)!
        let checkpoint = cluster.on("gw-1") { $0.onCheckpoint(pid: statePid, state: [9, 9], now: $1) }
        #expect(checkpoint.compactMap(\.sentMessage).map(\.to) == [cluster.id(successor)])
        cluster.settle()
        #expect(cluster.nodes["gw-2"]!.members(of: "g").count == 3)
        let before = cluster.startOrders.count

        cluster.crash("gw-1")
        let starts = cluster.startOrders[before...]
        #expect(starts.count == 2, "one restart per factory name, none for the plain name")
        let stateStart = starts.first { $0.order.name == withState }
        #expect(stateStart?.node == successor)
        #expect(stateStart?.order.reason == .recover(state: [9, 9]))
        let freshStart = starts.first { $0.order.name == fresh }
        #expect(freshStart?.node == HashRing(nodes: survivors).owner(of: fresh))
        #expect(freshStart?.order.reason == .restart)
        #expect(freshStart?.order.factory == worker)

        let newState = cluster.nodes["gw-2"]!.whereis(withState)
        let newFresh = cluster.nodes["gw-2"]!.whereis(fresh)
        #expect(newState != nil && newState != statePid)
        #expect(newFresh != nil && newFresh != freshPid)
        #expect(cluster.whereis(withState) == [newState])
        #expect(cluster.whereis(fresh) == [newFresh])
        #expect(cluster.whereis("plain") == [nil])
        #expect(cluster.inbox[newState!]?.first == .endHandoff([9, 9]))
        for node in cluster.nodes.values {
            #expect(Set(node.members(of: "g")) == [newState!, newFresh!], "groups kept, the plain name's memberships gone")
            #expect(node.members(of: "h") == [newFresh!])
            #expect(!node.hasOrphan(withState) && !node.hasOrphan(fresh))
        }
        for _ in 0..<10 { cluster.tick() }
        #expect(cluster.startOrders.count == before + 2, "no second copy")
        #expect(cluster.nodes.values.allSatisfy { $0.inFlight == 0 })
    }

    /// gw-1 and gw-2, apart, each registered a name gw-2 owns (the loser's state is [4, 2]);
    /// they have just connected (`settle`: and exchanged what that causes).
    static func twoCopiesMeeting(settle: Bool = true) -> (Cluster, String, loser: ProcessID, winner: ProcessID) {
        var cluster = Cluster(debug: false)
        cluster.addNode("gw-1")
        cluster.addNode("gw-2")
        let name = nameOwned(by: "gw-2", among: two)
        let loser = cluster.register(name, from: "gw-1", request: 1)!.pid!
        let winner = cluster.register(name, from: "gw-2", request: 2)!.pid!
        cluster.conflictState = [4, 2]
        if settle {
            cluster.connect("gw-1", "gw-2")
        } else {
            let (one, other) = (cluster.id("gw-1"), cluster.id("gw-2"))
            cluster.on("gw-1") { $0.onPeerConnected(other, address: "gw-2:7946", now: $1) }
            cluster.on("gw-2") { $0.onPeerConnected(one, address: "gw-1:7946", now: $1) }
        }
        return (cluster, name, loser, winner)
    }

    /// Two sides of a partition each registered the name; when they meet, the copy on the ring
    /// owner wins, receives the loser's state, and the loser dies.
    @Test func healedPartitionKeepsOneCopy() {
        let (meeting, name, loser, winner) = Self.twoCopiesMeeting()
        var cluster = meeting
        #expect(loser.node == cluster.id("gw-1"))
        #expect(winner.node == cluster.id("gw-2"))
        for _ in 0..<5 { cluster.tick() }
        #expect(cluster.whereis(name) == [winner])
        #expect(cluster.stops[loser] == .die)
        #expect(cluster.inbox[winner] == [.resolveConflict([4, 2])])
        #expect(cluster.nodes.values.allSatisfy { $0.registry.contested.isEmpty && $0.inFlight == 0 })
        #expect(cluster.asked.isEmpty, "resolved by the conflict rule, not by a handoff")
    }

    /// A conflict yield written on a connection that the shell then replaced (same peer, same
    /// incarnation: no down/up) is lost. `onPeerReconnected` sends it again at once, rather than
    /// after `requestTimeout` (5 s): the slow heals of the partition runs.
    @Test func lostYieldIsResentOnReconnect() {
        let (meeting, name, loser, winner) = Self.twoCopiesMeeting(settle: false)
        var cluster = meeting
        let lost = cluster.tick(5, losing: 1) { if case .conflictYield = $0 { true } else { false } }
        #expect(lost == 1)
        for _ in 0..<10 { cluster.tick() }
        #expect(cluster.stops[loser] == nil, "still waiting for the lost yield's answer")
        #expect(cluster.nodes.values.allSatisfy { !$0.registry.contested.isEmpty })
        let peer = cluster.id("gw-2")
        cluster.on("gw-1") { $0.onPeerReconnected(peer, now: $1) }
        cluster.settle()
        #expect(cluster.whereis(name) == [winner])
        #expect(cluster.stops[loser] == .die)
        #expect(cluster.inbox[winner] == [.resolveConflict([4, 2])])
        cluster.tick()
        #expect(cluster.nodes.values.allSatisfy { $0.registry.contested.isEmpty && $0.inFlight == 0 })
    }

    /// A register request, or its reply, lost on a replaced connection: re-sent on the new one
    /// at once (not failed at `requestTimeout`); the owner answers a request it already carried
    /// out with the same reply, so the caller sees `registered`, and the process starts once.
    @Test func lostRegistrationIsResentOnReconnect() {
        for losesReply in [false, true] {
            var cluster = Cluster(two)
            let name = nameOwned(by: "gw-2", among: two)
            cluster.on("gw-1") { $0.onRegister(name: name, factory: worker, request: 9, now: $1) }
            let lost = cluster.tick(2, losing: 1) { message in
                switch message {
                case .registerRequest: !losesReply
                case .registerReply: losesReply
                default: false
                }
            }
            #expect(lost == 1)
            #expect(cluster.registration("gw-1", 9) == nil, "waiting for the lost \(losesReply ? "reply" : "request")")
            let peer = cluster.id("gw-2")
            cluster.on("gw-1") { $0.onPeerReconnected(peer, now: $1) }
            cluster.settle()
            let pid = cluster.nodes["gw-2"]!.whereis(name)
            #expect(pid != nil && cluster.registration("gw-1", 9) == .registered(pid!), "\(String(describing: cluster.registration("gw-1", 9)))")
            #expect(cluster.startOrders.filter { $0.order.name == name }.count == 1, "started once")
            #expect(cluster.nodes.values.allSatisfy { $0.inFlight == 0 })
        }
    }

    /// A handoff offer lost the same way is offered again on the new connection (not after
    /// `handoffOfferTimeout`); the receiver starts the process once.
    @Test func lostHandoffOfferIsResentOnReconnect() {
        var cluster = Cluster(["gw-1"])
        cluster.handoffPolicy = .resume([7])
        let name = nameOwned(by: "gw-2", among: two)
        let old = cluster.register(name, from: "gw-1", request: 1)!.pid!
        cluster.addNode("gw-2")
        cluster.connect("gw-1", "gw-2")
        let lost = cluster.tick(5, losing: 1) { if case .handoffOffer = $0 { true } else { false } }
        #expect(lost == 1)
        #expect(cluster.stops[old] == nil)
        let peer = cluster.id("gw-2")
        cluster.on("gw-1") { $0.onPeerReconnected(peer, now: $1) }
        cluster.settle()
        let moved = cluster.nodes["gw-2"]!.whereis(name)
        #expect(moved?.node == peer)
        #expect(cluster.whereis(name) == [moved])
        #expect(cluster.stops[old] == .handedOff)
        #expect(cluster.inbox[moved!]?.first == .endHandoff([7]))
        // A second reconnect with nothing in flight re-sends nothing that starts a process.
        let starts = cluster.startOrders.count
        cluster.on("gw-1") { $0.onPeerReconnected(peer, now: $1) }
        cluster.settle()
        for _ in 0..<5 { cluster.tick() }
        #expect(cluster.startOrders.count == starts)
        #expect(cluster.nodes.values.allSatisfy { $0.inFlight == 0 })
    }

    @Test func remoteRequestTimesOut() {
        var cluster = Cluster(two)
        let name = nameOwned(by: "gw-2", among: two)
        cluster.on("gw-1") { $0.onRegister(name: name, factory: worker, request: 1, now: $1) }
        #expect(cluster.queue.count == 1)
        cluster.queue.removeAll()  // the request is lost; the peers stay connected
        for _ in 0..<49 { cluster.tick(.ms(100)) }
        #expect(cluster.registration("gw-1", 1) == nil)
        cluster.tick(.ms(100))
        #expect(cluster.registration("gw-1", 1) == .failed(.timeout))
        #expect(cluster.startOrders.isEmpty)
    }

    /// Both sides of a partition registered the name, and the owner of the healed ring is a
    /// third node: after the dust settles exactly one process runs it, on that owner.
    @Test func healedPartitionWithAThirdOwnerConverges() {
        var cluster = Cluster()
        cluster.handoffPolicy = .resume([8])
        cluster.conflictState = [5]
        for node in three { cluster.addNode(node) }
        let name = nameOwned(by: "gw-3", among: three)
        let a = cluster.register(name, from: "gw-1", request: 1)!.pid!
        let b = cluster.register(name, from: "gw-2", request: 2)!.pid!
        #expect(a.node == cluster.id("gw-1") && b.node == cluster.id("gw-2"))
        cluster.connect("gw-1", "gw-2")
        cluster.connect("gw-1", "gw-3")
        cluster.connect("gw-2", "gw-3")
        for _ in 0..<40 { cluster.tick(.ms(100)) }
        checkConverged(cluster, names: [name])
        #expect(cluster.stops[a] != nil && cluster.stops[b] != nil, "both partition copies stopped")
    }

    /// A node restarts with a new incarnation: its factory names were restarted elsewhere and
    /// come back to it as their ring owner.
    @Test func restartedNodeGetsItsNamesBack() {
        var cluster = Cluster(three)
        cluster.handoffPolicy = .resume([6])
        var names: [String] = []
        for (i, owner) in (three + three).enumerated() {
            names.append(nameOwned(by: owner, among: three, prefix: "r\(i)"))
            _ = cluster.register(names.last!, from: three[(i + 1) % 3], request: RequestID(i + 1))
        }
        checkConverged(cluster, names: names)
        cluster.crash("gw-1")
        checkConverged(cluster, names: names)
        cluster.addNode("gw-1", incarnation: 2)
        cluster.connect("gw-1", "gw-2")
        cluster.connect("gw-1", "gw-3")
        for _ in 0..<20 { cluster.tick(.ms(100)) }
        checkConverged(cluster, names: names)
        #expect(names.filter { cluster.nodes["gw-1"]!.whereis($0)?.node == NodeID(name: "gw-1", incarnation: 2) }.count == 2)
    }

    /// Static quorum: the minority side stops its processes and refuses
    /// registrations; the majority restarts them; after healing one copy runs on the owner.
    @Test func minorityStopsItsProcessesUnderStaticQuorum() {
        var cluster = Cluster()
        cluster.strategy = StaticQuorumRingStrategy(quorumSize: 2)
        cluster.handoffPolicy = .restart
        cluster.addNode("gw-1")
        let alone = cluster.register("early", from: "gw-1", request: 1)
        #expect(alone == .failed(.noNodeAvailable), "one node is below the quorum")
        cluster.addNode("gw-2")
        cluster.addNode("gw-3")
        cluster.connect("gw-1", "gw-2")
        cluster.connect("gw-1", "gw-3")
        cluster.connect("gw-2", "gw-3")
        let name = nameOwned(by: "gw-1", among: three)
        let pid = cluster.register(name, from: "gw-2", request: 2)!.pid!
        #expect(pid.node == cluster.id("gw-1"))
        // gw-1 is cut off from both others (their connections close on both sides).
        let gw1 = cluster.id("gw-1")
        for other in ["gw-2", "gw-3"] {
            let peer = cluster.id(other)
            cluster.on("gw-1") { $0.onPeerDisconnected(peer, now: $1) }
            cluster.on(other) { $0.onPeerDisconnected(gw1, now: $1) }
        }
        cluster.settle()
        for _ in 0..<3 { cluster.tick() }
        #expect(cluster.stops[pid] == .die, "the minority stops it")
        #expect(cluster.nodes["gw-1"]!.whereis(name) == nil)
        #expect(cluster.register("late", from: "gw-1", request: 3) == .failed(.noNodeAvailable))
        let restarted = cluster.nodes["gw-2"]!.whereis(name)
        #expect(restarted != nil && restarted != pid, "the majority restarts it")
        #expect(restarted?.node.name == HashRing(nodes: ["gw-2", "gw-3"]).owner(of: name))
        // Healing: one copy, on the owner of the full ring.
        cluster.connect("gw-1", "gw-2")
        cluster.connect("gw-1", "gw-3")
        for _ in 0..<20 { cluster.tick(.ms(100)) }
        checkConverged(cluster, names: [name])
    }

    @Test func silentPeerIsDeclaredDownAfterTheFailureTimeout() {
        var cluster = Cluster(two)
        let name = nameOwned(by: "gw-2", among: two)
        let pid = cluster.register(name, from: "gw-1", request: 1)!.pid!
        // gw-2 goes silent without its connection closing: only gw-1 is ticked.
        cluster.nodes["gw-2"] = nil
        var restarted = false
        for _ in 0..<40 {
            cluster.now += .ms(100)
            cluster.on("gw-1") { $0.onTick(now: $1) }
            cluster.queue.removeAll { if case .message(_, let to, _) = $0 { return to.name == "gw-2" } else { return false } }
            cluster.settle()
            if cluster.nodes["gw-1"]!.whereis(name).map({ $0 != pid }) == true { restarted = true; break }
        }
        #expect(restarted)
        #expect(cluster.now <= .seconds(100) + .ms(2500))
        #expect(cluster.nodes["gw-1"]!.ring.nodes == ["gw-1"])
        #expect(cluster.startOrders.last?.order.reason == .restart)
    }
}

@Suite struct TrackerOperatorTests {
    @Test func dumpReportsNodesRingAndRegistry() throws {
        var (cluster, moving, staying, _, _) = TrackerHandoffTests.setUp()
        let remote = nameOwned(by: "gw-2", among: two, excluding: [moving])
        _ = cluster.register(remote, from: "gw-1", request: 9)
        let dump = cluster.nodes["gw-1"]!.dump()
        #expect(dump.node == "gw-1")
        #expect(dump.incarnation == 1)
        #expect(dump.state == "up")
        #expect(dump.strategy == "ring")
        #expect(dump.hashVersion == HashRing.hashVersion)
        #expect(dump.protocolVersion == SwarmProtocol.version)
        #expect(dump.ringNodes == two)
        #expect(dump.nodes.map(\.name) == two)
        #expect(dump.nodes.allSatisfy { $0.state == "up" && $0.reachable && $0.connected && $0.inRing })
        #expect(abs(dump.nodes.map(\.ringShare).reduce(0, +) - 1) < 1e-9)
        #expect(dump.registrySize == 3)
        #expect(dump.localNames == 2)
        #expect(dump.nodes.first { $0.name == "gw-1" }?.names == 2)
        #expect(dump.nodes.first { $0.name == "gw-2" }?.names == 1)
        let peer = dump.nodes.first { $0.name == "gw-2" }
        #expect(peer?.synced == true)
        #expect(peer?.appliedSeq == cluster.nodes["gw-2"]!.dump().ownSeq)
        #expect(dump.handoffs.map(\.name) == [moving])
        #expect(dump.handoffs.first?.phase == "asking")
        #expect(dump.contestedNames == 0)
        #expect(!dump.draining)
        #expect(dump.stats.processesStarted == 2)
        #expect(cluster.nodes["gw-1"]!.localEntries[staying] != nil)
    }

    @Test func debugEmitsTraces() {
        for debug in [false, true] {
            var cluster = Cluster(two, debug: debug)
            let name = nameOwned(by: "gw-2", among: two)
            cluster.on("gw-1") { $0.onRegister(name: name, factory: worker, request: 1, now: $1) }
            cluster.settle()
            let traces = cluster.history.values.flatMap { $0 }.filter(\.isTrace)
            if debug {
                #expect(traces.contains { if case .trace(let text) = $0 { return text.hasPrefix("[gw-1] register \(name)") } else { return false } })
                #expect(traces.contains { if case .trace(let text) = $0 { return text.hasPrefix("[gw-2] started \(name)") } else { return false } })
            } else {
                #expect(traces.isEmpty)
            }
        }
    }
}

/// Convergence (ARCHITECTURE.md, “Replication”): every node has the same ring and view, and every factory name runs
/// exactly once, on its ring owner.
func checkConverged(_ cluster: Cluster, names: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(cluster.violations.isEmpty, "\(cluster.violations)", sourceLocation: sourceLocation)
    let nodes = cluster.nodes.values.sorted { $0.me < $1.me }
    let ring = nodes[0].ring
    for node in nodes {
        #expect(node.ring == ring, "\(node.me) ring \(node.ring.nodes) vs \(ring.nodes)", sourceLocation: sourceLocation)
        #expect(node.registry.view == nodes[0].registry.view, "\(node.me) view differs", sourceLocation: sourceLocation)
        #expect(node.inFlight == 0, "\(node.me): \(node.inFlightDescription)", sourceLocation: sourceLocation)
    }
    for name in names {
        let copies = cluster.running.filter { $0.value == name }.map(\.key)
        #expect(copies.count == 1, "\(name) runs as \(copies)", sourceLocation: sourceLocation)
        guard let pid = copies.first else { continue }
        #expect(pid.node.name == ring.owner(of: name), "\(name) on \(pid.node), owner \(ring.owner(of: name) ?? "none")", sourceLocation: sourceLocation)
        #expect(cluster.whereis(name) == [pid], "\(name)", sourceLocation: sourceLocation)
    }
}
