import PropertyBased
import Testing

@testable import SwarmCore

/// A small deterministic generator (SplitMix64) for building scenarios from one seed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &self) < p }
}

/// Per-origin change streams of overlapping names, with the table each origin holds after
/// every prefix of its stream (the model the replicas are checked against).
struct ChangeScenario {
    static let namePool = ["n0", "n1", "n2", "n3", "n4", "n5"]
    static let groupPool = ["g0", "g1", "g2"]
    /// o4 is on the ring but announces nothing: names it owns are decided by the pid tie-break.
    static let ring = HashRing(nodes: ["o1", "o2", "o3", "o4"])
    static func owner(_ name: String) -> String? { ring.owner(of: name) }

    var origins: [NodeID]
    var streams: [String: [SequencedChange]] = [:]
    /// tables[origin][k]: the origin's entries after its first k changes.
    var tables: [String: [[String: RegistryEntry]]] = [:]

    init(seed: UInt64, changesPerOrigin: Int) {
        var rng = SplitMix(seed: seed)
        origins = [NodeID(name: "o1", incarnation: 7), NodeID(name: "o2", incarnation: 3), NodeID(name: "o3", incarnation: 1)]
        for origin in origins {
            var table: [String: RegistryEntry] = [:]
            var history = [table]
            var stream: [SequencedChange] = []
            var nextLocal: UInt64 = 1
            for seq in 1...UInt64(changesPerOrigin) {
                let change: RegistryChange
                if table.isEmpty || rng.chance(0.65) {
                    let name = Self.namePool.randomElement(using: &rng)!
                    let groups = Self.groupPool.filter { _ in rng.chance(0.4) }
                    var pid = ProcessID(node: origin, local: nextLocal)
                    if let current = table[name], rng.chance(0.5) {
                        pid = current.pid  // a group change of the same process
                    } else {
                        nextLocal += 1
                    }
                    let factory = rng.chance(0.5) ? FactorySpec(kind: "worker", arguments: [UInt8(seq & 0xff)]) : nil
                    let entry = RegistryEntry(name: name, pid: pid, factory: factory, groups: groups, version: seq)
                    table[name] = entry
                    change = .upsert(entry)
                } else if rng.chance(0.85) {
                    let victim = table.values.sorted { $0.name < $1.name }.randomElement(using: &rng)!
                    table[victim.name] = nil
                    change = .remove(name: victim.name, pid: victim.pid)
                } else {
                    // A remove of a process that no longer holds the name: a no-op.
                    let name = Self.namePool.randomElement(using: &rng)!
                    change = .remove(name: name, pid: ProcessID(node: origin, local: 9999))
                }
                stream.append(SequencedChange(seq: seq, change: change))
                history.append(table)
            }
            streams[origin.name] = stream
            tables[origin.name] = history
        }
    }

    /// The expected view computed from the final tables with the documented rule, independently
    /// of `Registry`: the claimant hosted on the ring owner wins, else the smaller pid.
    var expected: (view: [String: RegistryEntry], contested: [String: Set<RegistryEntry>], groups: [String: [String: ProcessID]]) {
        var claimants: [String: [RegistryEntry]] = [:]
        for origin in origins {
            for entry in tables[origin.name]!.last!.values { claimants[entry.name, default: []].append(entry) }
        }
        var view: [String: RegistryEntry] = [:]
        var contested: [String: Set<RegistryEntry>] = [:]
        var groups: [String: [String: ProcessID]] = [:]
        for (name, all) in claimants {
            let owner = Self.owner(name)
            let winner = all.min { a, b in
                let aOwner = a.host == owner
                let bOwner = b.host == owner
                if aOwner != bOwner { return aOwner }
                return a.pid < b.pid
            }!
            view[name] = winner
            if all.count > 1 { contested[name] = Set(all) }
            for group in winner.groups { groups[group, default: [:]][name] = winner.pid }
        }
        return (view, contested, groups)
    }
}

/// Registry state that must not depend on delivery order. Claimant lists are compared as
/// sets: their order records arrival order, which is not part of the replicated state.
struct RegistryState: Equatable, CustomStringConvertible {
    var view: [String: RegistryEntry]
    var contested: [String: Set<RegistryEntry>]
    var groups: [String: [String: ProcessID]]

    init(_ registry: Registry) {
        view = registry.view
        contested = registry.contested.mapValues { Set($0) }
        groups = registry.groupIndex
    }

    init(view: [String: RegistryEntry], contested: [String: Set<RegistryEntry>], groups: [String: [String: ProcessID]]) {
        self.view = view
        self.contested = contested
        self.groups = groups
    }

    var description: String {
        "view=\(view.values.sorted { $0.name < $1.name }) contested=\(contested.keys.sorted()) groups=\(groups)"
    }
}

/// Delivers every origin's stream in order, interleaving origins at random and re-delivering
/// already applied changes now and then. Every outcome is checked.
func deliverInterleaved(_ scenario: ChangeScenario, to registry: inout Registry, from start: [String: Int] = [:], rng: inout SplitMix) {
    var cursor = start
    var remaining = scenario.origins.filter { (cursor[$0.name] ?? 0) < scenario.streams[$0.name]!.count }
    while !remaining.isEmpty {
        let origin = remaining.randomElement(using: &rng)!
        let stream = scenario.streams[origin.name]!
        let index = cursor[origin.name] ?? 0
        let outcome = registry.apply(stream[index], from: origin, owner: ChangeScenario.owner)
        #expect(outcome == .applied, "\(origin) seq \(stream[index].seq)")
        cursor[origin.name] = index + 1
        if index + 1 == stream.count { remaining.removeAll { $0 == origin } }
        if rng.chance(0.25) {
            // A duplicate delivery of something this replica already applied.
            let delivered = scenario.origins.filter { (cursor[$0.name] ?? 0) > 0 }
            let dupOrigin = delivered.randomElement(using: &rng)!
            let dup = scenario.streams[dupOrigin.name]![Int.random(in: 0..<cursor[dupOrigin.name]!, using: &rng)]
            #expect(registry.apply(dup, from: dupOrigin, owner: ChangeScenario.owner) == .duplicate)
        }
    }
}

@Suite struct RegistryTests {
    static func trackedReplica(_ scenario: ChangeScenario) -> Registry {
        var registry = Registry()
        for origin in scenario.origins { registry.track(origin: origin, synced: true, owner: ChangeScenario.owner) }
        return registry
    }

    @Test func replicaConvergenceRegardlessOfDeliveryOrder() async {
        await propertyCheck(count: 60, input: Gen.uint64(in: 0...UInt64.max), Gen.int(in: 1...40)) { seed, length in
            let scenario = ChangeScenario(seed: seed, changesPerOrigin: length)
            let (view, contested, groups) = scenario.expected
            let expected = RegistryState(view: view, contested: contested, groups: groups)

            var rngA = SplitMix(seed: seed ^ 0xaaaa)
            var rngB = SplitMix(seed: seed ^ 0x5555)
            var a = Self.trackedReplica(scenario)
            var b = Self.trackedReplica(scenario)
            deliverInterleaved(scenario, to: &a, rng: &rngA)
            deliverInterleaved(scenario, to: &b, rng: &rngB)
            #expect(RegistryState(a) == RegistryState(b))
            #expect(RegistryState(a) == expected)
            #expect(a.count == view.count)
            for (name, entry) in view {
                #expect(a.whereis(name) == entry.pid)
                #expect(Set(a.claimants(of: name)) == (contested[name] ?? [entry]))
            }
            for origin in scenario.origins {
                #expect(a.replica(of: origin.name)?.entries == scenario.tables[origin.name]!.last!)
                #expect(a.replica(of: origin.name)?.appliedSeq == UInt64(length))
            }

            // Snapshots of the final tables, applied in any order, give the same state.
            var c = Registry()
            var rngC = SplitMix(seed: seed ^ 0x1234)
            for origin in scenario.origins.shuffled(using: &rngC) {
                let entries = Array(scenario.tables[origin.name]!.last!.values).shuffled(using: &rngC)
                c.applySnapshot(from: origin, seq: UInt64(length), entries: entries, owner: ChangeScenario.owner)
            }
            #expect(RegistryState(c) == expected)

            // A snapshot of a prefix, then the rest of the stream: the same state again.
            var d = Registry()
            var start: [String: Int] = [:]
            for origin in scenario.origins {
                let k = Int.random(in: 0...length, using: &rngC)
                start[origin.name] = k
                d.applySnapshot(from: origin, seq: UInt64(k), entries: Array(scenario.tables[origin.name]![k].values), owner: ChangeScenario.owner)
            }
            deliverInterleaved(scenario, to: &d, from: start, rng: &rngC)
            #expect(RegistryState(d) == expected)
        }
    }

    // MARK: The conflict rule

    static let nodeA = NodeID(name: "a", incarnation: 1)
    static let nodeB = NodeID(name: "b", incarnation: 1)

    @Test func ringOwnerWinsOverSmallerPid() {
        let small = RegistryEntry(name: "x", pid: ProcessID(node: Self.nodeA, local: 1), factory: nil)
        let large = RegistryEntry(name: "x", pid: ProcessID(node: Self.nodeB, local: 99), factory: nil)
        #expect(small.pid < large.pid)
        #expect(Registry.prefers(large, over: small, owner: "b"))
        #expect(!Registry.prefers(small, over: large, owner: "b"))
        #expect(Registry.prefers(small, over: large, owner: "a"))
        // Neither on the owner, or no owner: the smaller pid wins.
        #expect(Registry.prefers(small, over: large, owner: "c"))
        #expect(!Registry.prefers(large, over: small, owner: "c"))
        #expect(Registry.prefers(small, over: large, owner: nil))
        #expect(!Registry.prefers(large, over: small, owner: nil))
        // Both on the owner (two lives of one host): the smaller pid wins.
        let sameHost = RegistryEntry(name: "x", pid: ProcessID(node: NodeID(name: "b", incarnation: 2), local: 1), factory: nil)
        #expect(Registry.prefers(large, over: sameHost, owner: "b"))
        #expect(!Registry.prefers(sameHost, over: large, owner: "b"))
    }

    @Test func viewFollowsTheRuleAndRerankFollowsTheRing() {
        let a = RegistryEntry(name: "x", pid: ProcessID(node: Self.nodeA, local: 5), factory: nil, groups: ["ga"])
        let b = RegistryEntry(name: "x", pid: ProcessID(node: Self.nodeB, local: 1), factory: nil, groups: ["gb"])
        var owner = "b"
        var registry = Registry()
        registry.track(origin: Self.nodeA, synced: true) { _ in owner }
        registry.track(origin: Self.nodeB, synced: true) { _ in owner }
        #expect(registry.apply(SequencedChange(seq: 1, change: .upsert(a)), from: Self.nodeA) { _ in owner } == .applied)
        #expect(registry.whereis("x") == a.pid)
        #expect(registry.members(of: "ga") == [a.pid])
        #expect(registry.apply(SequencedChange(seq: 1, change: .upsert(b)), from: Self.nodeB) { _ in owner } == .applied)
        #expect(registry.whereis("x") == b.pid)
        #expect(Set(registry.claimants(of: "x")) == [a, b])
        #expect(registry.members(of: "ga").isEmpty, "only the winner's groups are indexed")
        #expect(registry.members(of: "gb") == [b.pid])
        owner = "a"
        registry.rerank { _ in owner }
        #expect(registry.whereis("x") == a.pid)
        #expect(registry.members(of: "ga") == [a.pid])
        #expect(registry.members(of: "gb").isEmpty)
        // The winner goes: the other claimant takes the name, no longer contested.
        #expect(registry.apply(SequencedChange(seq: 2, change: .remove(name: "x", pid: a.pid)), from: Self.nodeA) { _ in owner } == .applied)
        #expect(registry.whereis("x") == b.pid)
        #expect(registry.contested.isEmpty)
        #expect(registry.members(of: "gb") == [b.pid])
        // Dropping an origin removes its entries from the view.
        let dropped = registry.drop(origin: "b") { _ in owner }
        #expect(dropped == [b])
        #expect(registry.whereis("x") == nil)
        #expect(registry.groupIndex.isEmpty)
    }

    @Test func groupListingCountsDistinctProcessesAndDropsEmptyGroups() {
        let one = ProcessID(node: Self.nodeA, local: 1)
        let two = ProcessID(node: Self.nodeA, local: 2)
        var registry = Registry()
        registry.track(origin: Self.nodeA, synced: true) { _ in "a" }
        let changes: [RegistryEntry] = [
            RegistryEntry(name: "p", pid: one, factory: nil, groups: ["lamps", "all"]),
            RegistryEntry(name: "q", pid: one, factory: nil, groups: ["lamps"]),  // same process, second name
            RegistryEntry(name: "r", pid: two, factory: nil, groups: ["all"]),
        ]
        for (seq, entry) in changes.enumerated() {
            #expect(registry.apply(SequencedChange(seq: UInt64(seq + 1), change: .upsert(entry)), from: Self.nodeA) { _ in "a" } == .applied)
        }
        #expect(registry.groups().map { "\($0.group)=\($0.members)" } == ["all=2", "lamps=1"])
        #expect(registry.apply(SequencedChange(seq: 4, change: .remove(name: "p", pid: one)), from: Self.nodeA) { _ in "a" } == .applied)
        #expect(registry.apply(SequencedChange(seq: 5, change: .remove(name: "q", pid: one)), from: Self.nodeA) { _ in "a" } == .applied)
        #expect(registry.groups().map { "\($0.group)=\($0.members)" } == ["all=1"], "a group without members is not listed")
    }

    // MARK: Sequencing

    @Test func gapDuplicateAndUnknownOrigin() {
        let entry = { (name: String, local: UInt64, seq: UInt64) in
            SequencedChange(seq: seq, change: .upsert(RegistryEntry(name: name, pid: ProcessID(node: Self.nodeA, local: local), factory: nil, version: seq)))
        }
        var registry = Registry()
        // Unknown origin: ignored.
        #expect(registry.apply(entry("x", 1, 1), from: Self.nodeA) { _ in nil } == .ignored)
        #expect(registry.whereis("x") == nil)
        // Tracked but waiting for a snapshot: ignored.
        registry.track(origin: Self.nodeA, synced: false) { _ in nil }
        #expect(registry.apply(entry("x", 1, 1), from: Self.nodeA) { _ in nil } == .ignored)
        registry.applySnapshot(from: Self.nodeA, seq: 0, entries: []) { _ in nil }
        #expect(registry.apply(entry("x", 1, 1), from: Self.nodeA) { _ in nil } == .applied)
        #expect(registry.apply(entry("x", 1, 1), from: Self.nodeA) { _ in nil } == .duplicate)
        // Seq 3 before 2: a gap after 1, and nothing applied.
        #expect(registry.apply(entry("y", 2, 3), from: Self.nodeA) { _ in nil } == .gap(after: 1))
        #expect(registry.whereis("y") == nil)
        #expect(registry.replica(of: "a")?.appliedSeq == 1)
        #expect(registry.apply(entry("z", 3, 2), from: Self.nodeA) { _ in nil } == .applied)
        #expect(registry.apply(entry("y", 2, 3), from: Self.nodeA) { _ in nil } == .applied)
        #expect(registry.whereis("y") != nil)
        // Another incarnation of the same node name: ignored until tracked.
        let reborn = NodeID(name: "a", incarnation: 2)
        #expect(registry.apply(entry("w", 1, 4), from: reborn) { _ in nil } == .ignored)
        // Tracking the new life drops the old life's entries.
        let gone = registry.track(origin: reborn, synced: true) { _ in nil }
        #expect(Set(gone.map(\.name)) == ["x", "y", "z"])
        #expect(registry.count == 0)
        // A stale snapshot (older incarnation) does not replace the new life.
        registry.applySnapshot(from: Self.nodeA, seq: 9, entries: [RegistryEntry(name: "old", pid: ProcessID(node: Self.nodeA, local: 1), factory: nil)]) { _ in nil }
        #expect(registry.whereis("old") == nil)
    }

    @Test func snapshotReportsWhatWentAway() {
        var registry = Registry()
        let pid = { (n: UInt64) in ProcessID(node: Self.nodeA, local: n) }
        registry.applySnapshot(from: Self.nodeA, seq: 2, entries: [
            RegistryEntry(name: "x", pid: pid(1), factory: nil), RegistryEntry(name: "y", pid: pid(2), factory: nil),
        ]) { _ in nil }
        let removed = registry.applySnapshot(from: Self.nodeA, seq: 5, entries: [
            RegistryEntry(name: "y", pid: pid(2), factory: nil), RegistryEntry(name: "x", pid: pid(3), factory: nil),
        ]) { _ in nil }
        #expect(removed.map(\.pid) == [pid(1)])
        #expect(registry.whereis("x") == pid(3))
        // Older than what we hold: ignored.
        let stale = registry.applySnapshot(from: Self.nodeA, seq: 4, entries: []) { _ in nil }
        #expect(stale.isEmpty)
        #expect(registry.count == 2)
    }
}
