import Foundation
import SwarmCore
import SwarmJSON
import SwarmNode
import Testing

@testable import Gateway
@testable import MQTT

/// The event stream across in-process nodes on a real Mosquitto: every node's log is the same
/// events in the same order, `seq` per device has no gap, a cursor resumes on another node, and
/// the numbering continues when a device's host stops without a drain.
@Suite("Event stream across a cluster", .serialized)
struct EventClusterTests {
    /// Every event in `member`'s log after `cursor`.
    static func log(_ member: Member, after cursor: EventKey = .zero, filter: EventFilter = .all) async throws -> [DeviceEvent] {
        var result: [DeviceEvent] = []
        var cursor = cursor
        while true {
            guard case .events(let events, let next) = try await member.gateway.events.read(after: cursor, filter: filter, limit: 500) else {
                Issue.record("cursor \(cursor) expired on \(member.name)")
                return result
            }
            result += events
            if next == cursor { return result }
            cursor = next
        }
    }

    /// `seq` of each device in `events`, in order.
    static func sequences(_ events: [DeviceEvent]) -> [String: [Int64]] {
        var result: [String: [Int64]] = [:]
        for event in events { result[event.device, default: []].append(event.seq) }
        return result
    }

    static func telemetryCount(_ events: [DeviceEvent]) -> Int { events.filter { $0.type == .telemetry }.count }

    @Test("3 nodes: every node's log holds every event once, in the same order; seq per device runs 1, 2, 3… without a gap; a cursor resumes on another node")
    func sameOrderEverywhere() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                let ids = (0..<9).map { "ev-\($0)" }
                try await withDevices(ids, broker: broker) { devices in
                    let start = EventKey.zero
                    for round in 1...20 {
                        for device in devices { try await device.telemetry(["seq": .int(Int64(round)), "t": .int(Int64(round))]) }
                        if round % 5 == 0 { for device in devices { try await device.report(["round": .int(Int64(round))]) } }
                    }
                    let complete = await eventually(timeout: .seconds(30)) {
                        for member in members {
                            let log = (try? await Self.log(member, after: start)) ?? []
                            if Self.telemetryCount(log) < 180 || log.filter({ $0.type == .reported }).count < 36 { return false }
                        }
                        return true
                    }
                    try #require(complete, "not every node released the 180 telemetry and 36 reported events")
                    let logs = try await members.asyncMap { try await Self.log($0, after: start) }
                    let stats = members.map { "\($0.name): \($0.gateway.events.stats)" }.joined(separator: "\n")
                    #expect(logs[0].map(\.key) == logs[1].map(\.key) && logs[1].map(\.key) == logs[2].map(\.key), "the same events in the same order on every node\n\(stats)")
                    #expect(Self.telemetryCount(logs[0]) == 180)
                    for (device, seqs) in Self.sequences(logs[0]) {
                        #expect(seqs == Array(seqs.first!...(seqs.first! + Int64(seqs.count) - 1)), "\(device): \(seqs)")
                    }
                    // Per device: created first, online, its telemetry (in the order the owner got it:
                    // shared subscriptions spread a device's messages over the nodes) and reported.
                    let first = logs[0].filter { $0.device == "ev-0" }
                    #expect(first.first?.type == .lifecycle && first.contains { $0.type == .presence }, "\(first.prefix(3).map(\.type))")
                    let values = first.filter { $0.type == .telemetry }.compactMap { try? JSONValue.parse($0.json)["data"]?["t"]?.intValue }
                    #expect(values.sorted() == Array(1...20))
                    #expect(first.filter { $0.type == .reported }.count == 4)
                    // A consumer that read half on gw-1 resumes on gw-3 with the cursor of its last event.
                    let half = logs[0][logs[0].count / 2]
                    let rest = try await Self.log(members[2], after: half.key)
                    #expect(rest.map(\.key) == logs[0].drop { $0.key <= half.key }.map(\.key))
                    // Filters.
                    let reported = try await Self.log(members[1], after: start, filter: EventFilter(types: [.reported], devices: ["ev-3", "ev-4"]))
                    #expect(reported.count == 8 && reported.allSatisfy { $0.type == .reported && ($0.device == "ev-3" || $0.device == "ev-4") })
                }
            }
        }
    }

    @Test("desired, command and lifecycle events; seq continues after the host stops without a drain")
    func continuesAfterHostLoss() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                let ids = (0..<12).map { "eh-\($0)" }
                try await withDevices(ids, broker: broker) { devices in
                    let start = EventKey.zero
                    for device in devices { try await device.telemetry(["seq": 1, "x": 1]) }
                    #expect(await eventually { Self.telemetryCount((try? await Self.log(members[0], after: start)) ?? []) == 12 })
                    let victim = members[1]
                    let lost = ids.filter { victim.node.whereis($0)?.node == victim.node.id }
                    try #require(!lost.isEmpty)
                    let caller = members[0]
                    for id in lost {
                        _ = try await caller.gateway.patchDesired(id, ["mode": "eco"])
                        _ = try await caller.gateway.command(id, name: "ping", body: ["n": 1])
                    }
                    for device in devices where lost.contains(device.id) { try await device.telemetry(["seq": 2, "x": 2]) }
                    #expect(await eventually { Self.telemetryCount((try? await Self.log(members[0], after: start)) ?? []) == 12 + lost.count })
                    // Stopped at once: no drain, no last checkpoint.
                    await victim.node.shutdown()
                    await victim.gateway.shutdown()
                    let survivors = [members[0], members[2]]
                    for id in lost {
                        #expect(await eventually(timeout: .seconds(20)) { await twinEverywhere(survivors, id) { $0.node != victim.name } })
                    }
                    for device in devices where lost.contains(device.id) { try await device.telemetry(["seq": 3, "x": 3]) }
                    let expected = 12 + 2 * lost.count
                    #expect(await eventually(timeout: .seconds(20)) {
                        await survivors.asyncAllSatisfy { Self.telemetryCount((try? await Self.log($0, after: start)) ?? []) == expected }
                    })
                    let log = try await Self.log(members[2], after: start)
                    for id in lost {
                        let events = log.filter { $0.device == id }
                        let seqs = events.map(\.seq)
                        #expect(seqs == Array(seqs.first!...(seqs.first! + Int64(seqs.count) - 1)), "\(id): \(seqs)")
                        let types = events.map(\.type)
                        #expect(types.contains(.desired) && types.contains(.command), "\(id): \(types)")
                        let desired = try #require(events.first { $0.type == .desired })
                        #expect(try JSONValue.parse(desired.json)["data"] == ["patch": ["mode": "eco"], "version": 1])
                        let command = try #require(events.first { $0.type == .command })
                        #expect(try JSONValue.parse(command.json)["data"] == ["name": "ping", "status": "answered"])
                    }
                    // Deleted: the last event.
                    let gone = ids.first { !lost.contains($0) }!
                    try await caller.gateway.delete(gone)
                    #expect(await eventually {
                        (try? await Self.log(members[2], after: start))?.last { $0.device == gone }?.type == .lifecycle
                    })
                }
            }
        }
    }
}

extension EventClusterTests {
    @Test("a queued command's life as command events: queued while the device is offline, sent at its birth, answered")
    func queuedCommandEvents() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker) { members in
                _ = try await members[0].gateway.provision("qc-1")
                let receipt = try await members[0].gateway.queueCommand("qc-1", name: "reboot", body: ["at": 1], ttl: .seconds(60))
                try await withDevices(["qc-1"], broker: broker) { _ in
                    let statuses = await eventually {
                        let log = (try? await Self.log(members[1], filter: EventFilter(types: [.command], devices: ["qc-1"]))) ?? []
                        return log.compactMap { try? JSONValue.parse($0.json)["data"]?["status"]?.stringValue } == ["queued", "sent", "answered"]
                    }
                    #expect(statuses)
                    let log = try await Self.log(members[1], filter: EventFilter(devices: ["qc-1"]))
                    #expect(log.first?.type == .lifecycle, "created when provisioned: \(log.map(\.type))")
                    let answered = try #require(log.last { $0.type == .command })
                    let data = try JSONValue.parse(answered.json)["data"]
                    #expect(data?["id"]?.stringValue == receipt.id && data?["name"] == "reboot" && data?["reply"]?["ok"] == true)
                    let seqs = log.map(\.seq)
                    #expect(seqs == Array(1...Int64(seqs.count)), "\(seqs)")
                }
            }
        }
    }
}

extension Array where Element: Sendable {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
