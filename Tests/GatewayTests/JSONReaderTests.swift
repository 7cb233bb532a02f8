import Foundation
import MQTT
import SwarmJSON
import Testing

@testable import Gateway

@Suite("JSON reader and ingress lane (pure)")
struct JSONReaderTests {
    /// Texts both modes must refuse.
    static let refused: [String] = [
        "", " ", "{", "}", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":1}x", "1 2", "01", "-", "1.", ".5", "1e", "1e+",
        "+1", "0x10", "NaN", "Infinity", "tru", "nul", "\"abc", "\"a\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\ud800\\u0041\"", "\"tab\there\"", "'a'", "1e400", "-1e400", String(repeating: "[", count: 513) + String(repeating: "]", count: 513),
        "{\"a\":[1,2}", "[1 2]", "\u{feff}{}",
    ]

    @Test("parse and scan accept exactly the same texts, and scan reports the top-level kind")
    func agreement() throws {
        for text in Self.refused {
            #expect(throws: JSONReader.Failure.self, "parse accepted \(text.prefix(40))") { try JSONReader.parse(Array(text.utf8)) }
            #expect(throws: JSONReader.Failure.self, "scan accepted \(text.prefix(40))") { try JSONReader.scan(Array(text.utf8)) }
        }
        // Invalid UTF-8 inside a string: a lone continuation byte, an overlong form, a surrogate, a truncated sequence.
        for bad: [UInt8] in [[0x80], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0xF5, 0x80, 0x80, 0x80]] {
            let bytes = [UInt8(ascii: "\"")] + bad + [UInt8(ascii: "\"")]
            #expect(throws: JSONReader.Failure.self) { try JSONReader.parse(bytes) }
            #expect(throws: JSONReader.Failure.self) { try JSONReader.scan(bytes) }
        }
        let accepted: [(String, JSONReader.Kind)] = [
            ("null", .null), (" true ", .bool), ("\n-0.5e-3\t", .number), ("\"\\u00e9\\ud83d\\ude00\\n\"", .string), ("[]", .array),
            ("{}", .object), (#"{"a":[1,{"b":null}],"c":"\u00e9"}"#, .object), ("9223372036854775808", .number),
            (String(repeating: "[", count: 512) + String(repeating: "]", count: 512), .array),
        ]
        for (text, kind) in accepted {
            #expect(try JSONReader.scan(Array(text.utf8)) == kind, "\(text.prefix(40))")
            _ = try JSONReader.parse(Array(text.utf8))
        }
    }

    @Test("values: integers that fit Int64 are .int, other numbers .double; escapes decoded; the last repeated key wins")
    func values() throws {
        #expect(try JSONValue.parse("[0, -7, 9223372036854775807, -9223372036854775808, 9223372036854775808, 1.0, 1e2, -0.25]")
            == [0, -7, .int(.max), .int(.min), .double(9_223_372_036_854_775_808), .double(1), .double(100), -0.25])
        #expect(try JSONValue.parse(#""a\"\\\/\b\f\n\r\t\u0041\u00e9\ud83d\ude00""#) == .string("a\"\\/\u{8}\u{c}\n\r\tAé😀"))
        #expect(try JSONValue.parse(#"{"k":1,"k":2}"#) == ["k": 2])
        #expect(try JSONValue.parse("  {\"a\" : [ true , false , null ] }  ") == ["a": [true, false, nil]])
        // Serialization round trip of what the parser built.
        let value = try JSONValue.parse(#"{"seq":42,"ts":1764115200000,"t":21.5,"s":"x\u0001y","n":[1,[2,{}]]}"#)
        #expect(try JSONValue.parse(value.serialized()) == value)
    }

    @Test("the hand-written checkpoint JSON decodes (JSONDecoder, as handoff and recovery read it) to the same state")
    func checkpointEncoding() throws {
        var state = DeviceState(id: "dev-\"q\"-1")
        #expect(try JSONDecoder().decode(DeviceState.self, from: Data(state.checkpointJSON())) == state)
        state.online = true
        state.statusAt = 1_764_115_200_123
        state.connectedAt = 1_764_115_200_000
        state.lastSeen = 1_764_115_201_000
        state.metadata = ["model": "m-1", "fw": ["major": 1, "tags": ["a", "b\n"]], "ratio": 0.25, "none": nil]
        state.groups = ["all", "floor-1", "z"]
        state.telemetry = ["t": 21.5, "n": -3, "big": .int(.max), "tiny": 1e-7, "s": "é\u{1}"]
        var counters = state.counters
        for seq: Int64 in [1, 2, 5, 4, 4, 3000] { state.sequence.observe(seq, counters: &counters) }
        counters.commandsSent = 7
        counters.downlinks = 2
        state.counters = counters
        state.sequence.restartPossible = true
        state.reported = ["fw": "1.2", "cfg": ["a": [1, 2]]]
        state.desired = ["led": "on"]
        state.version = 4
        state.broker = "127.0.0.1:1883"
        let decoded = try JSONDecoder().decode(DeviceState.self, from: Data(state.checkpointJSON()))
        #expect(decoded == state)
        // The same state as JSONEncoder wrote it (what older nodes send) decodes to the same value.
        #expect(try JSONDecoder().decode(DeviceState.self, from: JSONEncoder().encode(state)) == decoded)
    }

    @Test("ingress lane: QoS 1 telemetry is never shed (full instead); a batch offer queues in order, sheds QoS 0 telemetry and stops at the first full item")
    func laneQoS1Policy() async {
        let lane = IngressLane(capacity: 2)
        func item(_ kind: DeviceTopics.Kind, _ n: UInt8, _ qos: MQTTQoS) -> IngressLane.Item {
            IngressLane.Item(id: "d", kind: kind, message: [n], qos: qos)
        }
        let batch = [
            item(.telemetry, 1, .atLeastOnce), item(.telemetry, 2, .atMostOnce), item(.telemetry, 3, .atMostOnce),
            item(.telemetry, 4, .atLeastOnce), item(.status, 5, .atMostOnce), item(.telemetry, 6, .atLeastOnce),
        ]
        var outcome = lane.offer(batch, from: 0)
        // 1, 2 queued; 3 (QoS 0) shed at the bound; 4 (QoS 1) and 5 (status) queued up to twice
        // the bound; 6 (QoS 1) finds the lane full: the offer stops there.
        #expect(outcome == IngressLane.BatchOffer(next: 5, shed: [.telemetry], full: true, closed: false))
        #expect(lane.count == 4)
        #expect(await lane.take()?.map(\.message) == [[1], [2], [4], [5]])
        outcome = lane.offer(batch, from: outcome.next)
        #expect(outcome == IngressLane.BatchOffer(next: 6))
        #expect(await lane.take()?.map(\.message) == [[6]])
        #expect(lane.offer(item(.telemetry, 7, .atLeastOnce)) == .queued)
        #expect(lane.offer(item(.telemetry, 8, .atLeastOnce)) == .queued)
        #expect(lane.offer(item(.telemetry, 9, .atLeastOnce)) == .queued)
        #expect(lane.offer(item(.telemetry, 10, .atLeastOnce)) == .queued)
        #expect(lane.offer(item(.telemetry, 11, .atLeastOnce)) == .full, "QoS 1 telemetry waits, it is not shed")
        lane.finish()
    }

    @Test("ingress lane: telemetry shed at the bound, status and reported kept up to twice the bound, then full; a take makes room")
    func lanePolicy() async {
        let lane = IngressLane(capacity: 3)
        func item(_ kind: DeviceTopics.Kind, _ n: UInt8) -> IngressLane.Item { IngressLane.Item(id: "d", kind: kind, message: [n]) }
        #expect(lane.offer(item(.telemetry, 1)) == .queued)
        #expect(lane.offer(item(.status, 2)) == .queued)
        #expect(lane.offer(item(.telemetry, 3)) == .queued)
        #expect(lane.offer(item(.telemetry, 4)) == .shed)
        #expect(lane.offer(item(.reported, 5)) == .queued)
        #expect(lane.offer(item(.status, 6)) == .queued)
        #expect(lane.offer(item(.telemetry, 7)) == .shed)
        #expect(lane.offer(item(.status, 8)) == .queued)
        #expect(lane.offer(item(.reported, 9)) == .full)
        #expect(lane.count == 6)
        let batch = await lane.take()
        #expect(batch?.map(\.message) == [[1], [2], [3], [5], [6], [8]])
        await lane.waitForRoom()  // room now: returns at once
        #expect(lane.offer(item(.reported, 9)) == .queued)
        lane.finish()
        #expect(lane.offer(item(.status, 10)) == .closed)
        #expect(await lane.take()?.map(\.message) == [[9]])
        #expect(await lane.take() == nil)
    }
}
