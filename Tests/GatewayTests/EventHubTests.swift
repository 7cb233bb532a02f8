import Foundation
import GatewayStore
import GatewayStoreEngines
import SwarmCore
import SwarmJSON
import Testing

@testable import Gateway

/// The event hub on its own (no node): the merge of origins by key under the watermark, late and
/// duplicate events, reads with a cursor from memory and from the store, the retention bounds.
@Suite("Event hub")
struct EventHubTests {
    static let a = NodeID(name: "gw-a", incarnation: 1)
    static let b = NodeID(name: "gw-b", incarnation: 1)
    static let c = NodeID(name: "gw-c", incarnation: 1)

    func hub(_ node: NodeID = a, configure: (inout EventSettings) -> Void = { _ in }) -> EventHub {
        var settings = EventSettings()
        configure(&settings)
        let hub = EventHub(node: node, settings: settings, logger: quietLogger("test.events"))
        hub.openGate()
        // This node's own stable time: its clock (it emitted nothing).
        let taken = hub.takeOutbound()
        hub.releaseLocal(taken.events, stable: taken.stable)
        return hub
    }

    func event(_ time: Int64, _ device: String, _ seq: Int64, origin: NodeID = b, type: EventType = .telemetry) -> DeviceEvent {
        DeviceEvent(key: EventKey(time: time, device: device), seq: seq, type: type, groups: ["all"], origin: origin.name, data: Array(#"{"v":1}"#.utf8))
    }

    func all(_ hub: EventHub, after cursor: EventKey = .zero, filter: EventFilter = .all) async throws -> [DeviceEvent] {
        var result: [DeviceEvent] = []
        var cursor = cursor
        while true {
            guard case .events(let events, let next) = try await hub.read(after: cursor, filter: filter, limit: 7) else {
                Issue.record("expired")
                return result
            }
            result += events
            if next == cursor { return result }
            cursor = next
        }
    }

    @Test("events of several origins are released in key order once every origin in the view promised a later time")
    func watermark() async throws {
        let hub = hub()
        hub.updateView([Self.b, Self.c])
        hub.ingest(origin: Self.b, from: 0, stable: 250, events: [event(100, "d1", 1), event(200, "d1", 2)])
        // c has not been heard from: nothing is released yet.
        #expect(try await all(hub).isEmpty)
        hub.ingest(origin: Self.c, from: 0, stable: 150, events: [event(120, "d2", 1, origin: Self.c)])
        // The local node's stable time is its clock (far above): the watermark is c's 150.
        #expect(try await all(hub).map(\.key.time) == [100, 120])
        hub.ingest(origin: Self.c, from: 150, stable: 300, events: [event(210, "d2", 2, origin: Self.c)])
        #expect(try await all(hub).map(\.key.time) == [100, 120, 200, 210])
        // An event below what was released (its origin was not waited for) is dropped, counted.
        hub.ingest(origin: Self.c, from: 300, stable: 400, events: [event(205, "d3", 1, origin: Self.c)])
        #expect(try await all(hub).count == 4)
        #expect(hub.stats.late == 1)
    }

    @Test("an origin that leaves the view stops holding the release back; what it sent is still released")
    func originLeaves() async throws {
        let hub = hub()
        hub.updateView([Self.b, Self.c])
        hub.ingest(origin: Self.b, from: 0, stable: 500, events: [event(100, "d1", 1), event(400, "d1", 2)])
        hub.ingest(origin: Self.c, from: 0, stable: 200, events: [])
        #expect(try await all(hub).map(\.key.time) == [100])
        hub.updateView([Self.b])
        #expect(try await all(hub).map(\.key.time) == [100, 400])
    }

    @Test("a repeated seq is dropped, a skipped one counted as a gap; emitted events get increasing times per device")
    func sequences() async throws {
        let hub = hub()
        hub.ingest(origin: Self.b, from: 0, stable: 100, events: [event(10, "d1", 1), event(20, "d1", 2), event(30, "d1", 2), event(40, "d1", 5)])
        hub.updateView([Self.b])
        #expect(try await all(hub).map(\.seq) == [1, 2, 5])
        #expect(hub.stats.duplicates == 1 && hub.stats.gaps == 2)
        #expect(hub.lastSequence(of: "d1")?.seq == 5)
        let future = EventHub.nowMicros() + 60_000_000
        let t1 = hub.emit(device: "d9", seq: 1, type: .telemetry, groups: ["all"], data: Array("{}".utf8), after: future)
        let t2 = hub.emit(device: "d9", seq: 2, type: .telemetry, groups: ["all"], data: Array("{}".utf8), after: 0)
        #expect(t1 == future + 1 && t2 == t1 + 1)
        let taken = hub.takeOutbound()
        #expect(taken.events.map(\.seq) == [1, 2] && taken.stable >= t2)
    }

    @Test("a hub seen for the first time gets the backlog: what the origin emitted before it knew that hub")
    func backlog() async throws {
        let origin = hub(Self.a)
        for seq in 1...3 { origin.emit(device: "d1", seq: Int64(seq), type: .telemetry, groups: ["all"], data: Array("{}".utf8), after: 0) }
        let taken = origin.takeOutbound()
        origin.releaseLocal(taken.events, stable: taken.stable)
        // Nobody got that batch. A new hub appears:
        let late = hub(Self.b)
        late.updateView([Self.a])
        let backlog = origin.backlog()
        #expect(backlog.from == 0 && backlog.events.map(\.seq) == [1, 2, 3])
        late.ingest(origin: Self.a, from: backlog.from, stable: backlog.stable, events: backlog.events)
        #expect(try await all(late).map(\.seq) == [1, 2, 3])
    }

    @Test("the event JSON: id, type, device, seq, RFC 3339 time with microseconds, data as given")
    func json() throws {
        let event = DeviceEvent(
            key: EventKey(time: 1_763_640_000_123_456, device: "dev-1"), seq: 7, type: .reported, groups: [], origin: "gw",
            data: Array(#"{"patch":{"a":1},"reportedVersion":3}"#.utf8))
        let value = try JSONValue.parse(event.json)
        #expect(value["id"] == "1763640000123456-dev-1")
        #expect(value["type"] == "reported" && value["device"] == "dev-1" && value["seq"] == 7)
        #expect(value["time"] == "2025-11-20T12:00:00.123456Z")
        #expect(value["data"] == ["patch": ["a": 1], "reportedVersion": 3])
        #expect(EventKey(cursor: "1763640000123456-dev-1") == event.key)
        #expect(EventKey(cursor: "1763640000123456") == EventKey(time: 1_763_640_000_123_456, device: ""))
        #expect(EventKey(cursor: "x-1") == nil && EventKey(cursor: "12-a/b") == nil && EventKey(cursor: "") == nil)
        #expect(RFC3339.string(micros: 0) == "1970-01-01T00:00:00.000000Z")
        #expect(RFC3339.string(micros: 951_782_400_000_001) == "2000-02-29T00:00:00.000001Z")
    }

    @Test("a cursor reads what followed it, filtered; in memory only, the oldest events leave and older cursors are expired")
    func cursorsInMemory() async throws {
        let hub = hub { $0.bufferSize = 10 }
        hub.updateView([Self.b])
        var events: [DeviceEvent] = []
        for index in 1...25 {
            let type: EventType = index % 2 == 0 ? .reported : .telemetry
            events.append(event(Int64(index) * 10, "d\(index % 3)", Int64((index + 2) / 3), type: type))
        }
        hub.ingest(origin: Self.b, from: 0, stable: 1_000, events: events)
        let kept = try await all(hub, after: events[15].key)
        #expect(kept.map(\.key) == events[16...].map(\.key))
        let reported = try await all(hub, after: events[15].key, filter: EventFilter(types: [.reported]))
        #expect(reported.allSatisfy { $0.type == .reported } && reported.count == 4)
        guard case .expired(let horizon) = try await hub.read(after: events[3].key) else {
            Issue.record("an evicted cursor is expired")
            return
        }
        #expect(horizon == events[14].key)
        #expect(hub.removedSince(events[3].key) >= 11)
    }

    @Test("with a store: evicted events are read from it, the size bound and the retention purge move the horizon")
    func store() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("events-\(UInt64.random(in: 0...UInt64.max))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = SQLiteEventStore(directory: directory, logger: quietLogger("test.store"))
        let hub = hub {
            $0.bufferSize = 1000
            $0.store = store
            $0.maxStored = 1500
        }
        try await hub.load()
        hub.updateView([Self.b])
        let base = EventHub.nowMicros() - 10_000_000
        let events = (0..<2000).map { event(base + Int64($0), "d\($0 % 10)", Int64($0 / 10 + 1)) }
        hub.ingest(origin: Self.b, from: 0, stable: base + 10_000, events: events)
        // Up to twice the buffer is kept while not stored: nothing left memory yet.
        #expect(hub.stats.evictedUnstored == 0 && hub.stats.buffered == 2000)
        #expect(await hub.writeOnce(store, purge: false))
        // The next release lets the stored ones go down to the buffer size.
        let extra = event(base + 5_000, "d0", 201)
        hub.ingest(origin: Self.b, from: base + 10_000, stable: base + 10_001, events: [extra])
        #expect(hub.stats.buffered == 1000)
        let fromStore = try await all(hub, after: events[100].key)
        #expect(fromStore.map(\.key) == events[101...].map(\.key) + [extra.key])
        // The size bound: the oldest 501 go, and cursors below them expire.
        #expect(await hub.writeOnce(store, purge: true))
        let summary = try await store.summary()
        #expect(summary.count == 1500 && summary.horizon == events[500].key.stored)
        guard case .expired = try await hub.read(after: events[100].key) else {
            Issue.record("a purged cursor is expired")
            return
        }
        #expect(try await all(hub, after: events[500].key).count == 1500)
        let sequences = try await store.lastSequences()
        #expect(sequences["d3"]?.seq == 200 && sequences["d0"]?.seq == 201)
        // Webhook rows: a newer revision wins, a cursor only moves forward.
        let row = StoredWebhook(id: "wh-1", revision: 1, deleted: false, definition: Array("{}".utf8), cursor: events[10].key.stored)
        try await hub.commit(webhooks: [row])
        var deleted = row
        deleted.revision = 2
        deleted.deleted = true
        deleted.cursor = events[5].key.stored
        try await hub.commit(webhooks: [deleted], cursors: [WebhookCursor(id: "wh-1", cursor: events[20].key.stored)])
        let rows = try await store.webhooks()
        #expect(rows.count == 1 && rows[0].deleted && rows[0].revision == 2 && rows[0].cursor == events[20].key.stored)
        await store.close()

        // Reopened: the horizon, the newest key and the sequences come back.
        let again = SQLiteEventStore(directory: directory, logger: quietLogger("test.store"))
        let restarted = self.hub { $0.store = again }
        try await restarted.load()
        #expect(restarted.horizon == events[500].key)
        #expect(restarted.head == extra.key)
        #expect(restarted.lastSequence(of: "d3")?.seq == 200)
        #expect(try await all(restarted, after: events[1990].key).count == 10)
        await again.close()
    }

    @Test("where= on events: telemetry and patch paths, versions, presence, id and groups; other paths are missing")
    func whereOnEvents() throws {
        func make(_ type: EventType, _ data: String, groups: [String] = ["all", "eu"]) -> DeviceEvent {
            DeviceEvent(key: EventKey(time: 1, device: "d-1"), seq: 1, type: type, groups: groups, origin: "gw", data: Array(data.utf8))
        }
        let telemetry = make(.telemetry, #"{"temp":31.5,"room":{"name":"lab"}}"#)
        let reported = make(.reported, #"{"patch":{"fw":"2.1"},"reportedVersion":4}"#)
        let online = make(.presence, #"{"status":"online"}"#, groups: ["all"])
        func matches(_ text: String, _ event: DeviceEvent) throws -> Bool { try FleetQuery.parse(text).matches(event: event) }
        #expect(try matches("telemetry.temp > 30", telemetry) && !matches("telemetry.temp > 30", reported))
        #expect(try matches("telemetry.room.name = 'lab' and id = 'd-1'", telemetry))
        #expect(try matches("reported.fw = '2.1' and reportedVersion >= 4", reported) && !matches("exists(reported.fw)", telemetry))
        #expect(try matches("'eu' in groups", telemetry) && !matches("'eu' in groups", online))
        #expect(try matches("online", online) && !matches("online", telemetry))
        #expect(try matches("tags.site = null", telemetry), "a path an event does not carry is missing")
        let filter = EventFilter(types: [.telemetry], query: try FleetQuery.parse("telemetry.temp > 30"))
        #expect(filter.matches(telemetry) && !filter.matches(reported))
    }

    @Test("webhook signatures: HMAC-SHA256 of the body, hex")
    func signature() {
        // RFC 4231 test case 2.
        let signature = WebhookSignature.sign(Array("what do ya want for nothing?".utf8), secret: "Jefe")
        #expect(signature == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(WebhookSignature.verify(Array("what do ya want for nothing?".utf8), signature: signature, secret: "Jefe"))
        #expect(!WebhookSignature.verify(Array("what do ya want for nothing!".utf8), signature: signature, secret: "Jefe"))
        let delays = (1...12).map { WebhookProcess.backoff(attempt: $0, base: .milliseconds(100), limit: .seconds(5)) }
        #expect(delays[0] >= .milliseconds(50) && delays[0] <= .milliseconds(150))
        #expect(delays.allSatisfy { $0 <= .milliseconds(7500) } && delays[11] >= .milliseconds(2500))
    }
}
