import Foundation
import SwarmJSON
import Testing

@testable import Gateway

@Suite("Gateway pure logic")
struct UnitTests {
    @Test("device ids: [A-Za-z0-9._:-]{1,128}")
    func deviceIDs() {
        for good in ["a", "dev-1", "A.b_c:d-9", String(repeating: "x", count: 128)] {
            #expect(DeviceID.isValid(good), "\(good)")
        }
        for bad in ["", "a/b", "a+b", "a#", "dev 1", "é", String(repeating: "x", count: 129), "$SYS", "a\u{0}"] {
            #expect(!DeviceID.isValid(bad), "\(bad)")
        }
    }

    @Test("topic parsing with the default and a custom prefix")
    func topics() throws {
        let topics = DeviceTopics()
        #expect(try topics.parse("devices/d1/status").get() == ("d1", .status))
        #expect(try topics.parse("devices/d1/telemetry").get() == ("d1", .telemetry))
        #expect(try topics.parse("devices/d1/state/reported").get() == ("d1", .reported))
        for bad in ["devices/d1", "devices/d1/state", "devices/d1/state/desired", "devices/d1/down", "devices//status",
                    "other/d1/status", "devices/d1/status/x", "devices/d1/commands/reboot", "devices"] {
            if case .success = topics.parse(bad) { Issue.record("accepted \(bad)") }
        }
        #expect(topics.parse("devices//status").failure == .badID)
        #expect(topics.parse("devices/a b/status").failure == .badID)
        #expect(topics.parse("devices/\(String(repeating: "x", count: 129))/telemetry").failure == .badID)
        #expect(topics.parse("devices/d1/nope").failure == .badTopic)

        let custom = DeviceTopics(prefix: "/site/a/")
        #expect(custom.prefix == "site/a")
        #expect(try custom.parse("site/a/d-2/telemetry").get() == ("d-2", .telemetry))
        #expect(custom.parse("devices/d-2/telemetry").failure == .badTopic)
        #expect(custom.sharedFilters(group: "g") == [
            "$share/g/site/a/+/status", "$share/g/site/a/+/telemetry", "$share/g/site/a/+/state/reported", "$share/g/site/a/+/replies/+",
        ])
        #expect(custom.reply("x", node: "gw-1") == "site/a/x/replies/gw-1")
        #expect(custom.parseReply("site/a/x/replies/gw-1")! == ("x", "gw-1"))
        #expect(topics.parseReply("devices/d1/replies/gw_2")! == ("d1", "gw_2"))
        for bad in ["devices/d1/replies", "devices/d1/replies/", "devices/d1/replies/a/b", "devices/a b/replies/n", "other/d1/replies/n"] {
            #expect(topics.parseReply(bad) == nil, "accepted \(bad)")
        }
        #expect(topics.parse("devices/d1/replies/gw-1").failure == .badTopic, "replies are not device ingress")
        #expect(custom.desired("x") == "site/a/x/state/desired")
        #expect(custom.command("x", "reboot") == "site/a/x/commands/reboot")
        #expect(custom.down("x") == "site/a/x/down")
    }

    @Test("JSON parse, size limit and deterministic serialization")
    func json() throws {
        let value = try JSONValue.parse(#"{"b": [1, 2.5, "x", null, true], "a": {"z": 1, "y": -3}}"#)
        #expect(value.jsonText == #"{"a":{"y":-3,"z":1},"b":[1,2.5,"x",null,true]}"#)
        #expect(try JSONValue.parse(value.serialized()) == value)
        #expect(JSONValue.string("q\"\\\n\u{1}").jsonText == #""q\"\\\n\u0001""#)
        #expect(try JSONValue.parse(JSONValue.string("q\"\\\n\u{1}é").serialized()) == .string("q\"\\\n\u{1}é"))
        #expect(throws: JSONPayloadError.self) { try JSONValue.parse("{nope") }
        #expect(throws: JSONPayloadError.self) { try JSONValue.parse([]) }
        #expect(throws: JSONPayloadError.oversized(10, limit: 9)) { try JSONValue.parse(Array("[1,2,3,4,5]".utf8.prefix(10)), limit: 9) }
        let encoded = try JSONEncoder().encode(value)
        #expect(try JSONDecoder().decode(JSONValue.self, from: encoded) == value)
        #expect(JSONValue.int(1).sameValue(.double(1.0)))
        #expect(!JSONValue.int(1).sameValue(.string("1")))
        #expect(value.value(atPath: "a.y") == .int(-3))
        #expect(value.value(atPath: "a.q") == nil)
    }

    @Test("RFC 7386 merge patch: the appendix examples")
    func mergePatch() throws {
        let cases: [(String, String, String)] = [
            (#"{"a":"b"}"#, #"{"a":"c"}"#, #"{"a":"c"}"#),
            (#"{"a":"b"}"#, #"{"b":"c"}"#, #"{"a":"b","b":"c"}"#),
            (#"{"a":"b"}"#, #"{"a":null}"#, #"{}"#),
            (#"{"a":"b","b":"c"}"#, #"{"a":null}"#, #"{"b":"c"}"#),
            (#"{"a":["b"]}"#, #"{"a":"c"}"#, #"{"a":"c"}"#),
            (#"{"a":"c"}"#, #"{"a":["b"]}"#, #"{"a":["b"]}"#),
            (#"{"a":{"b":"c"}}"#, #"{"a":{"b":"d","c":null}}"#, #"{"a":{"b":"d"}}"#),
            (#"{"a":[{"b":"c"}]}"#, #"{"a":[1]}"#, #"{"a":[1]}"#),
            (#"["a","b"]"#, #"["c","d"]"#, #"["c","d"]"#),
            (#"{"a":"b"}"#, #"["c"]"#, #"["c"]"#),
            (#"{"a":"foo"}"#, "null", "null"),
            (#"{"a":"foo"}"#, #""bar""#, #""bar""#),
            (#"{"e":null}"#, #"{"a":1}"#, #"{"a":1,"e":null}"#),
            (#"[1,2]"#, #"{"a":"b","c":null}"#, #"{"a":"b"}"#),
            (#"{}"#, #"{"a":{"bb":{"ccc":null}}}"#, #"{"a":{"bb":{}}}"#),
        ]
        for (target, patch, expected) in cases {
            let result = try JSONValue.parse(target).mergePatched(with: try JSONValue.parse(patch))
            #expect(result == (try JSONValue.parse(expected)), "\(target) + \(patch)")
        }
    }

    @Test("delta: desired members that differ from reported, recursively")
    func delta() throws {
        let desired = try JSONValue.parse(#"{"led":"on","rate":5,"cfg":{"a":1,"b":2},"new":true}"#)
        let reported = try JSONValue.parse(#"{"led":"off","rate":5.0,"cfg":{"a":1,"b":3},"extra":1}"#)
        #expect(JSONValue.delta(desired: desired, reported: reported) == (try JSONValue.parse(#"{"led":"on","cfg":{"b":2},"new":true}"#)))
        #expect(JSONValue.delta(desired: reported, reported: reported) == .emptyObject)
        #expect(JSONValue.delta(desired: .emptyObject, reported: reported) == .emptyObject)
    }

    @Test("sequence tracking: gaps, reordering, duplicates, late arrivals, births")
    func sequence() {
        var tracker = SequenceTracker()
        var counters = DeviceCounters()
        for seq: Int64 in [3, 1, 2] { tracker.observe(seq, counters: &counters) }
        // Below the first number seen: out of order, never a gap or a duplicate.
        #expect(counters.seqGaps == 0 && counters.seqOutOfOrder == 2 && counters.seqDuplicates == 0)
        for seq: Int64 in [5, 6] { tracker.observe(seq, counters: &counters) }
        #expect(counters.seqGaps == 1 && counters.seqDuplicates == 0)
        tracker.observe(4, counters: &counters)  // late arrival fills the gap
        #expect(counters.seqGaps == 0 && counters.seqOutOfOrder == 3)
        tracker.observe(6, counters: &counters)
        tracker.observe(2, counters: &counters)
        #expect(counters.seqDuplicates == 2 && counters.seqGaps == 0)
        tracker.observe(10, counters: &counters)
        tracker.observe(8, counters: &counters)
        #expect(counters.seqGaps == 2)
        // A jump across word boundaries; gaps inside the window can still be filled.
        tracker.observe(500, counters: &counters)
        #expect(counters.seqGaps == 491)
        for seq: Int64 in [11, 70, 129, 130, 499] { tracker.observe(seq, counters: &counters) }
        #expect(counters.seqGaps == 486 && counters.seqDuplicates == 2)
        tracker.observe(8, counters: &counters)
        tracker.observe(70, counters: &counters)
        #expect(counters.seqDuplicates == 4)
        // Beyond the window: late, nothing changes.
        tracker.observe(3000, counters: &counters)
        #expect(counters.seqGaps == 486 + 2499)
        tracker.observe(1000, counters: &counters)
        #expect(counters.seqLate == 1 && tracker.highest == 3000)
        tracker.observe(2000, counters: &counters)  // inside the window: fills a gap
        #expect(counters.seqGaps == 486 + 2498 && counters.seqLate == 1)
        tracker.observe(2000, counters: &counters)
        #expect(counters.seqDuplicates == 5)

        // A birth: the next number decides whether the numbering restarted.
        var session = SequenceTracker()
        var c = DeviceCounters()
        for seq: Int64 in [1, 2, 4] { session.observe(seq, counters: &c) }
        session.sessionStarted()  // a birth that arrives after telemetry of its own session
        session.observe(3, counters: &c)  // fills the gap: a reordered arrival, not a restart
        #expect(c.seqGaps == 0 && session.highest == 4 && c.seqDuplicates == 0)
        session.sessionStarted()
        session.observe(2, counters: &c)  // a duplicate of this session, not a restart
        #expect(c.seqDuplicates == 1 && session.highest == 4)
        session.sessionStarted()
        session.observe(1, counters: &c)  // 1 again after a birth: restarted
        session.observe(2, counters: &c)
        session.observe(3, counters: &c)
        #expect(c.seqDuplicates == 1 && c.seqGaps == 0 && session.highest == 3)
        session.reset()
        session.observe(0, counters: &c)
        session.observe(1, counters: &c)
        #expect(c.seqGaps == 0 && c.seqDuplicates == 1 && session.highest == 1)
    }

    /// Regression (fuzz-device): `{"seq":-1}` then `{"seq":9223372036854775807}` from one device
    /// overflowed `seq - highest` and trapped, killing the gateway node, and then every node that
    /// restarted the device from its checkpoint.
    @Test("sequence tracking: extreme and negative numbers never overflow")
    func sequenceExtremes() {
        var tracker = SequenceTracker()
        var counters = DeviceCounters()
        tracker.observe(-1, counters: &counters)
        tracker.observe(.max, counters: &counters)
        #expect(tracker.highest == .max && counters.seqGaps == .max)
        tracker.observe(.min, counters: &counters)  // 2^64 - 1 below the highest: late
        #expect(counters.seqLate == 1 && tracker.highest == .max)
        tracker.observe(.max - 1, counters: &counters)  // inside the window: fills a gap
        #expect(counters.seqGaps == .max - 1 && counters.seqOutOfOrder == 1)

        var low = SequenceTracker()
        var c = DeviceCounters()
        low.observe(.min, counters: &c)
        low.observe(0, counters: &c)
        low.observe(.max, counters: &c)  // gaps saturate instead of overflowing
        #expect(c.seqGaps == .max && low.highest == .max)

        var birth = SequenceTracker()
        var b = DeviceCounters()
        birth.observe(1, counters: &b)
        birth.sessionStarted()
        birth.observe(.min, counters: &b)  // the restart check computes highest - seq too
        #expect(b.seqLate == 1 && birth.highest == 1)
    }

    @Test("the sequence window's bitmap shifts across words")
    func bitWindow() {
        var window = BitWindow()
        window[0] = true
        window[63] = true
        window.shift(by: 1)
        #expect(window[1] && window[64] && !window[0] && !window[63])
        window.shift(by: 130)
        #expect(window[131] && window[194])
        window.shift(by: 900)
        #expect(window.words.allSatisfy { $0 == 0 })
        window.set(1..<5000)
        #expect(window[1] && window[1023] && !window[0])
    }

    @Test("ingress validation: plain and JSON status, objects only, size limit")
    func validation() {
        func check(_ kind: DeviceTopics.Kind, _ text: String, limit: Int = 1000) -> Result<String, GatewayCounters.Reject> {
            DeviceGateway.validatePayload(kind: kind, payload: Array(text.utf8), limit: limit).map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(check(.status, "online") == .success(#"{"status":"online"}"#))
        #expect(check(.status, " offline\n") == .success(#"{"status":"offline"}"#))
        #expect(check(.status, #""offline""#) == .success(#"{"status":"offline"}"#))
        #expect(check(.status, #"{"status":"online","model":"m"}"#) == .success(#"{"status":"online","model":"m"}"#))
        #expect(check(.status, #"{"status":"sleeping"}"#) == .failure(.badShape))
        #expect(check(.status, "maybe") == .failure(.malformed))
        #expect(check(.telemetry, #"{"seq":1,"t":2}"#) == .success(#"{"seq":1,"t":2}"#))
        #expect(check(.telemetry, "[1]") == .failure(.badShape))
        #expect(check(.telemetry, "{") == .failure(.malformed))
        #expect(check(.reported, "3") == .failure(.badShape))
        #expect(check(.reported, #"{"a":"\#(String(repeating: "x", count: 100))"}"#, limit: 50) == .failure(.oversized))
    }

    @Test("device messages survive their binary encoding")
    func messages() throws {
        let messages: [DeviceMessage] = [
            .ingress(kind: .telemetry, broker: "127.0.0.1:1883", receivedAt: 1_700_000_000_123, retained: true, payload: Array(#"{"t":1}"#.utf8)),
            .twin, .patchDesired(["a": 1, "b": ["c": nil]], ifVersions: nil), .patchDesired(["a": 2], ifVersions: [3, 4]),
            .group("g-1", join: true), .group("g", join: false),
            .query(fields: nil, where: nil), .query(fields: ["reported.x", "online"], where: nil),
            .query(fields: nil, where: "tags.site = 'paris'"), .route(command: "reboot"),
            .commandOutcome(command: "reboot", answered: false), .down([0, 1, 2]),
            .patchTags(["site": "lab", "old": nil]), .provision(tags: nil, groups: []), .provision(tags: ["a": 1], groups: ["g1", "g2"]), .delete,
        ]
        for message in messages {
            #expect(try DeviceMessage(decoding: message.encoded()) == message, "\(message)")
        }
        for message: NodeMessage in [
            .reply(key: [1, 2], payload: [3]), .tombstone(id: "d", set: true), .search(where: nil, after: nil, limit: 101),
            .search(where: "online", after: "dev-9", limit: 1),
        ] {
            #expect(try NodeMessage(decoding: message.encoded()) == message, "\(message)")
        }
        let page = DeviceIndex.Page(ids: ["a", "b:c"], matched: 12)
        #expect(try NodeMessage.decodePage(NodeMessage.encode(page)) == page)
        #expect(throws: (any Error).self) { try DeviceMessage(decoding: [99]) }
        #expect(throws: (any Error).self) { try DeviceMessage(decoding: Array(DeviceMessage.down([1, 2]).encoded().dropLast())) }
    }

    @Test("ingress state change: births name new groups, old statuses are ignored, telemetry keeps the newest, reported merges")
    func applyIngress() {
        var state = DeviceState(id: "d")
        state.groups.insert("lamps")
        let birth: JSONValue = ["status": "online", "model": "x1", "groups": ["lamps", "floor-2", "floor-2", "bad group", 7]]
        #expect(state.applyIngress(.status, birth, broker: "b1", receivedAt: 100, retained: false) == ["floor-2"])
        #expect(state.online && state.connectedAt == 100 && state.statusAt == 100 && state.broker == "b1")
        #expect(state.metadata == ["model": "x1"], "status and groups are not metadata")
        // A retained birth replayed to a node that subscribes later is not a new session.
        _ = state.applyIngress(.status, birth, broker: "b1", receivedAt: 120, retained: true)
        #expect(state.connectedAt == 100)
        // The will of an earlier session arriving late through another node changes nothing.
        #expect(state.applyIngress(.status, ["status": "offline"], broker: "b2", receivedAt: 90, retained: false).isEmpty)
        #expect(state.online && state.statusAt == 120)
        _ = state.applyIngress(.telemetry, ["seq": 2, "t": 20], broker: "b1", receivedAt: 130, retained: false)
        _ = state.applyIngress(.telemetry, ["seq": 1, "t": 10], broker: "b1", receivedAt: 131, retained: false)
        #expect(state.telemetry == ["t": 20], "an older reading does not overwrite a newer one")
        #expect(state.counters.telemetry == 2 && state.counters.seqOutOfOrder + state.counters.seqLate == 1)
        _ = state.applyIngress(.reported, ["fw": "1.2", "led": ["on": true]], broker: "b1", receivedAt: 140, retained: false)
        _ = state.applyIngress(.reported, ["led": ["on": false], "fw": nil], broker: "b1", receivedAt: 141, retained: false)
        #expect(state.reported == ["led": ["on": false]])
        #expect(state.counters.messages == 7 && state.lastSeen == 141)
        _ = state.applyIngress(.status, ["status": "offline"], broker: "b1", receivedAt: 150, retained: false)
        #expect(!state.online && state.counters.statusChanges == 4)
    }

    @Test("state merge after a conflict keeps the newest of each part")
    func merge() {
        var a = DeviceState(id: "d")
        a.version = 3
        a.desired = ["x": 1]
        a.lastSeen = 100
        a.reported = ["r": "a"]
        a.groups = ["all", "g1"]
        a.counters.telemetry = 5
        var b = DeviceState(id: "d")
        b.version = 2
        b.desired = ["x": 0]
        b.lastSeen = 200
        b.reported = ["r": "b"]
        b.groups = ["all", "g2"]
        b.statusAt = 150
        b.online = true
        b.counters.telemetry = 9
        a.merge(b)
        #expect(a.version == 3 && a.desired == ["x": 1])
        #expect(a.reported == ["r": "b"] && a.lastSeen == 200 && a.online)
        #expect(a.groups == ["all", "g1", "g2"])
        #expect(a.counters.telemetry == 9)
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
