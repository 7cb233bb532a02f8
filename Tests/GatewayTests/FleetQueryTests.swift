import SwarmJSON
import Testing

@testable import Gateway

@Suite("Fleet search: the where language")
struct FleetQueryTests {
    /// A thermostat in `lab`, online, with tags, reported, desired and telemetry.
    static var thermostat: DeviceIndex.Entry {
        var state = DeviceState(id: "th-7")
        state.online = true
        state.groups = ["all", "lab"]
        state.version = 4
        state.reportedVersion = 9
        state.lastSeen = 1_767_225_600_000  // 2026-01-01T00:00:00Z
        state.metadata = ["model": "T-1000", "firmware": "2.1.0"]
        state.telemetry = ["temp": .double(21.5), "humidity": .int(40), "door": .null]
        state.reported = ["battery": ["level": .int(77), "charging": .bool(false)], "mode": "eco", "features": ["wifi", "ble"]]
        state.desired = ["mode": "comfort"]
        state.tags = ["site": "paris", "floor": .int(3), "floor level": "top", "owner's": "ann"]
        return DeviceIndex.Entry(state)
    }

    static func matches(_ text: String, _ entry: DeviceIndex.Entry = thermostat) throws -> Bool {
        try FleetQuery.parse(text).matches(entry)
    }

    @Test("paths, literals and every comparison operator")
    func comparisons() throws {
        let holds = [
            "id = 'th-7'", "online", "online = true", "not online = false", "version = 4", "reportedVersion > 8",
            "metadata.model = 'T-1000'", "telemetry.temp > 21", "telemetry.temp >= 21.5", "telemetry.temp < 22",
            "telemetry.temp <= 21.5", "telemetry.humidity = 40.0", "telemetry.humidity != 41", "reported.battery.level >= 77",
            "reported.battery.charging = false", "reported.mode = 'eco'", "desired.mode != reported.mode", "tags.site = 'paris'",
            "tags.floor = 3", "tags.'floor level' = 'top'", "tags.'owner''s' = 'ann'", "'paris' = tags.site",
            "tags.missing = null", "tags.missing != 'x'", "telemetry.door = null", "lastSeen >= '2026-01-01'", "lastSeen < '2026-01-02'",
            "metadata.firmware > '2.0'", "-1 < 0", "1.5e1 = 15", "tags.site == 'paris'", "tags.site <> 'rome'", "id = 'th-7' OR FALSE",
        ]
        for text in holds {
            #expect(try Self.matches(text), "\(text)")
        }
        let fails = [
            "id = 'th-8'", "not online", "online = false", "version != 4", "telemetry.temp > 21.5", "telemetry.temp < 21.5",
            "tags.site = 'Paris'", "tags.floor = '3'", "tags.site > 3", "tags.site < 3", "tags.missing > 0", "tags.missing = 'x'",
            "reported.battery > 1", "reported.battery.level.x = 1", "tags.missing < tags.other", "telemetry.door != null",
            "connectedAt > '2000'", "reported.mode", "tags.floor",
        ]
        for text in fails {
            #expect(try !Self.matches(text), "\(text)")
        }
    }

    @Test("and, or, not, parentheses, exists and in")
    func logic() throws {
        let holds = [
            "online and tags.site = 'paris'", "online and (tags.site = 'rome' or tags.floor = 3)", "not (tags.site = 'rome')",
            "not not online", "tags.site = 'rome' or online", "exists(tags.site)", "not exists(tags.nope)", "exists(reported.battery)",
            "not exists(telemetry.door)", "exists(tags)", "'lab' in groups", "'all' in groups", "not 'ops' in groups", "'ble' in reported.features",
            "tags.site in reported.features or 'wifi' in reported.features", "online and tags.floor >= 3 and not 'ops' in groups",
            "((((online))))", "tags.site = 'rome' and false or true",  // and binds tighter than or
            "EXISTS(tags.site) AND 'lab' IN groups",
        ]
        for text in holds {
            #expect(try Self.matches(text), "\(text)")
        }
        let fails = [
            "online and tags.site = 'rome'", "not online or tags.floor = 2", "exists(tags.nope)", "'ops' in groups",
            "'x' in reported.features", "'eco' in reported.mode", "'x' in tags.missing", "tags.site = 'rome' and (false or true)",
            "not (online and 'lab' in groups)",
        ]
        for text in fails {
            #expect(try !Self.matches(text), "\(text)")
        }
    }

    @Test("the same answers on a twin's JSON")
    func twinJSON() throws {
        var state = DeviceState(id: "th-7")
        state.online = true
        state.groups = ["all", "lab"]
        state.tags = ["site": "paris"]
        state.reported = ["battery": ["level": .int(77)]]
        let twin = state.twin(node: "gw-1").json
        for text in ["online and 'lab' in groups", "tags.site = 'paris'", "reported.battery.level > 50", "id = 'th-7'", "version = 0"] {
            #expect(try FleetQuery.parse(text).matches(twin: twin), "\(text)")
            #expect(try FleetQuery.parse(text).matches(DeviceIndex.Entry(state)), "\(text)")
        }
        #expect(try !FleetQuery.parse("'ops' in groups").matches(twin: twin))
    }

    @Test("bad expressions name the position of the error")
    func errors() {
        let cases: [(String, Int, String)] = [
            ("", 1, "ends where a condition"),
            ("online and", 11, "ends where a condition"),
            ("tags.site = ", 13, "ends after '='"),
            ("tags.site = 'paris", 13, "not closed"),
            ("tags.site = \"paris\"", 13, "single quotes"),
            ("colour = 'red'", 1, "unknown path 'colour'"),
            ("id.x = 1", 3, "has no members"),
            ("tags. = 1", 6, "member name was expected"),
            ("online online", 8, "after a complete expression"),
            ("(online", 8, "missing ')'"),
            ("(online and (tags.a = 1)", 25, "missing ')' for the '(' at position 1"),
            ("online)", 7, "after a complete expression"),
            ("exists tags.a", 8, "'exists' must be followed by '('"),
            ("exists(1)", 8, "takes a path"),
            ("'g' in 'groups'", 8, "followed by a path"),
            ("tags.a ! 1", 8, "'!' must be part of '!='"),
            ("tags.a = 1x", 10, "must not run into letters"),
            ("tags.a = -", 10, "number was expected"),
            ("tags.a = 1.", 10, "digits after its '.'"),
            ("tags.a = and", 10, "'and' where a path or a value"),
            ("tags.a = = 1", 10, "'=' where a path or a value"),
            ("tags.a @ 1", 8, "unexpected character '@'"),
            ("tags.'' = 1", 6, "quoted member must not be empty"),
            ("tags.'é' = 'ü' and x", 20, "unknown path 'x'"),
        ]
        for (text, position, message) in cases {
            do {
                _ = try FleetQuery.parse(text)
                Issue.record("accepted '\(text)'")
            } catch {
                #expect(error.position == position, "'\(text)': \(error)")
                #expect(error.message.contains(message), "'\(text)': \(error)")
            }
        }
        let deep = String(repeating: "(", count: 200) + "online" + String(repeating: ")", count: 200)
        #expect(throws: FleetQueryError.self) { try FleetQuery.parse(deep) }
        let negations = String(repeating: "not ", count: 100) + "online"
        #expect(throws: FleetQueryError.self) { try FleetQuery.parse(negations) }
        #expect(throws: FleetQueryError.self) { try FleetQuery.parse(String(repeating: "online or ", count: 500) + "online") }
        #expect((try? FleetQuery.parse(String(repeating: "(", count: 60) + "online" + String(repeating: ")", count: 60))) != nil)
    }

    @Test("pages: the smallest ids above a cursor, merged across nodes, each once")
    func pages() throws {
        let index = DeviceIndex()
        var all: [String] = []
        for number in 0..<2_000 {
            var state = DeviceState(id: "dev-\(String(number, radix: 36))")
            state.tags = ["n": .int(Int64(number))]
            index.update(DeviceIndex.Entry(state))
            if number % 3 == 0 { all.append(state.id) }
        }
        // Every third device is tagged (the language has no modulo); two more devices are not.
        let thirds = DeviceIndex()
        for id in all {
            var state = DeviceState(id: id)
            state.tags = ["third": true]
            thirds.update(DeviceIndex.Entry(state))
        }
        for id in ["zz-1", "zz-2"] { thirds.update(DeviceIndex.Entry(DeviceState(id: id))) }
        let third = try FleetQuery.parse("tags.third")
        var seen: [String] = []
        var cursor: String?
        repeat {
            let page = thirds.search(third, after: cursor, limit: 71)
            #expect(page.matched == all.count)
            let merged = DeviceIndex.merge([page], limit: 70)
            seen += merged.ids
            cursor = merged.more ? merged.ids.last : nil
        } while cursor != nil
        #expect(seen == all.sorted())
        #expect(index.search(nil, after: nil, limit: 5).ids == Array(index.search(nil, after: nil, limit: 5000).ids.prefix(5)))
        #expect(index.search(nil, after: nil, limit: 5000).ids.count == 2_000)
        #expect(DeviceIndex.smallest(["d", "b", "a", "c", "e", "f", "g", "h", "i", "j"], 2) == ["a", "b"])
        let shuffled = (0..<500).map { "x\($0)" }.shuffled()
        #expect(DeviceIndex.smallest(shuffled, 7) == Array(shuffled.sorted().prefix(7)))
        // Two nodes, one device on both (a handoff in flight): listed once.
        let a = DeviceIndex.Page(ids: ["a", "c", "e"], matched: 3)
        let b = DeviceIndex.Page(ids: ["b", "c", "d"], matched: 4)
        let merged = DeviceIndex.merge([a, b], limit: 4)
        #expect(merged.ids == ["a", "b", "c", "d"])
        #expect(merged.more)
        #expect(merged.matched == 7)
        #expect(!DeviceIndex.merge([a, b], limit: 5).more)
    }

    @Test("a stopping copy removes only its own entry")
    func owners() {
        let index = DeviceIndex()
        final class Owner {}
        let first = Owner()
        let second = Owner()
        index.update(DeviceIndex.Entry(DeviceState(id: "d"), owner: ObjectIdentifier(first)))
        index.update(DeviceIndex.Entry(DeviceState(id: "d"), owner: ObjectIdentifier(second)))
        index.remove("d", owner: ObjectIdentifier(first))
        #expect(index.count == 1)
        index.remove("d", owner: ObjectIdentifier(second))
        #expect(index.count == 0)
    }
}
