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
            let start = nowNanos()
            var index = 0
            while index < changes.count {
                let batch = Array(changes[index..<min(index + 64, changes.count)])
                _ = registry.apply(batch, from: origin, owner: { ring.owner(of: $0) })
                index += 64
            }
            let elapsed = Double(nowNanos() - start) / 1e9
            sink &+= registry.count
            print("registry: applied remote changes (batches of 64, 1M new names, group 'all', \(reserved ? "capacity reserved" : "tables growing")): \(Int(Double(changes.count) / elapsed)) changes/s [round \(round + 1)]")
        }
        print("(sink \(sink))")
    }
}
