import SwarmCore

#if canImport(Glibc)
import Glibc
#endif

/// Core micro-benchmark (not a test): ring lookups/s and applied remote changes/s on one core.
enum CoreBenchmark {
    static func nowNanos() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    /// Applies `changes` in batches of 64 (a replication message's size) and returns seconds.
    static func timedApply(_ changes: [SequencedChange], to registry: inout Registry, from origin: NodeID, ring: HashRing) -> Double {
        let start = nowNanos()
        var index = 0
        while index < changes.count {
            let batch = Array(changes[index..<min(index + 64, changes.count)])
            _ = registry.apply(batch, from: origin, owner: { ring.owner(of: $0) })
            index += 64
        }
        return Double(nowNanos() - start) / 1e9
    }

    static func run() {
        let ring = HashRing(nodes: (0..<3).map { "gw-\($0)@127.0.0.1:\(7946 + $0)" })
        let names = (0..<100_000).map { "device-\($0)" }
        var sink = 0
        for round in 0..<3 {
            let start = nowNanos()
            let lookups = 5_000_000
            for i in 0..<lookups {
                if let owner = ring.owner(of: names[i % names.count]) { sink &+= owner.utf8.count }
            }
            let elapsed = Double(nowNanos() - start) / 1e9
            print("ring lookups (3 nodes × 128 points, 100k names): \(Int(Double(lookups) / elapsed)) lookups/s [round \(round + 1)]")
        }
        // Applied remote changes: one origin streams upserts into a replica.
        let origin = NodeID(name: "gw-1@127.0.0.1:7947", incarnation: 7)
        let changes = (0..<1_000_000).map { i in
            SequencedChange(
                seq: UInt64(i + 1),
                change: .upsert(RegistryEntry(name: names[i % names.count] + "-\(i / names.count)", pid: ProcessID(node: origin, local: UInt64(i)), factory: FactorySpec(kind: "device"), groups: ["all"], version: UInt64(i + 1))))
        }
        for round in 0..<6 {
            let reserved = round >= 3
            var registry = Registry()
            registry.applySnapshot(from: origin, seq: 0, entries: [], owner: { ring.owner(of: $0) })
            if reserved { registry.reserveCapacity(changes.count, for: origin) }
            let elapsed = timedApply(changes, to: &registry, from: origin, ring: ring)
            sink &+= registry.count
            print("registry: applied remote changes (batches of 64, 1M new names, group 'all', \(reserved ? "capacity reserved" : "tables growing")): \(Int(Double(changes.count) / elapsed)) changes/s [round \(round + 1)]")
        }
        // Steady state: 100k names registered; a stream of re-registrations (new process for an
        // existing name: remove + upsert), group changes and new names, table size stable.
        let live = 100_000
        var steady: [SequencedChange] = []
        steady.reserveCapacity(1_100_000)
        var seq: UInt64 = 0
        var current: [RegistryEntry] = (0..<live).map { i in
            RegistryEntry(name: names[i], pid: ProcessID(node: origin, local: UInt64(i)), factory: FactorySpec(kind: "device"), groups: ["all"], version: 0)
        }
        for i in 0..<1_000_000 {
            let slot = (i &* 7919) % live
            var entry = current[slot]
            seq += 1
            switch i % 4 {
            case 0:
                steady.append(SequencedChange(seq: seq, change: .remove(name: entry.name, pid: entry.pid)))
                entry.pid = ProcessID(node: origin, local: UInt64(live + i))
                seq += 1
                steady.append(SequencedChange(seq: seq, change: .upsert(entry)))
            case 1:
                entry.groups = entry.groups.count == 1 ? ["all", "g\(i % 8)"] : ["all"]
                steady.append(SequencedChange(seq: seq, change: .upsert(entry)))
            default:
                entry.version = seq
                steady.append(SequencedChange(seq: seq, change: .upsert(entry)))
            }
            current[slot] = entry
        }
        for round in 0..<3 {
            var registry = Registry()
            let initial = (0..<live).map { i in
                RegistryEntry(name: names[i], pid: ProcessID(node: origin, local: UInt64(i)), factory: FactorySpec(kind: "device"), groups: ["all"], version: 0)
            }
            registry.applySnapshot(from: origin, seq: 0, entries: initial, owner: { ring.owner(of: $0) })
            let elapsed = timedApply(steady, to: &registry, from: origin, ring: ring)
            sink &+= registry.count
            print("registry: applied remote changes (batches of 64, steady state: 100k names, re-registrations, group changes, updates): \(Int(Double(steady.count) / elapsed)) changes/s [round \(round + 1)]")
        }
        print("(sink \(sink))")
    }
}
