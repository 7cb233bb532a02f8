import DeviceSimulator
import Foundation
import SwarmJSON
import Testing

/// Profiles, fleet files, broker URLs and the pure device behaviour.
@Suite("Profiles, fleets and behaviour")
struct DefinitionTests {
    func profileError(_ json: String) -> String? {
        do {
            _ = try DeviceProfile.parse(try JSONValue.parse(json), name: "p", source: "p.json")
            return nil
        } catch let error as SimulatorConfigError {
            return error.message
        } catch {
            return "\(error)"
        }
    }

    @Test("profile errors name the file and the key")
    func profileErrors() {
        #expect(profileError(#"{"firmware":"1"}"#) == "p.json: model: missing (required)")
        #expect(profileError(#"{"model":"m","firmware":"1","colour":"red"}"#) == "p.json: colour: unknown key")
        #expect(profileError(#"{"model":"m","firmware":"1","telemetry":{"qos":3}}"#) == "p.json: telemetry.qos: must be 0, 1 or 2, got 3")
        #expect(profileError(#"{"model":"m","firmware":"1","telemetry":{"fields":{"x":{"type":"gauss"}}}}"#)?
            .hasPrefix("p.json: telemetry.fields.x.type: unknown field type \"gauss\"") == true)
        #expect(profileError(#"{"model":"m","firmware":"1","telemetry":{"fields":{"seq":{"type":"counter"}}}}"#)?
            .hasPrefix("p.json: telemetry.fields.seq: reserved") == true)
        #expect(profileError(#"{"model":"m","firmware":"1","telemetry":{"intervalMs":10,"ratePerSecond":1}}"#)?
            .contains("not both") == true)
        #expect(profileError(#"{"model":"m","firmware":"1","groups":"a"}"#) == "p.json: groups: expected an array of strings, got string")
        #expect(profileError(#"{"model":"m","firmware":"1","commands":{"x":{"delayMs":"soon"}}}"#) == "p.json: commands.x.delayMs: expected an integer, got string")
        #expect(profileError(#"{"name":"q","model":"m","firmware":"1"}"#)?.contains("does not match the file name") == true)
        #expect(profileError(#"{"model":"m","firmware":"1"}"#) == nil)
    }

    @Test("the shipped profiles and demo fleet load, and scale to 10,000 devices")
    func shippedFiles() throws {
        let fleet = try FleetDefinition.load(path: Self.repoRoot + "/devices/fleet-demo.json")
        #expect(fleet.totalCount == 1000)
        let specs = try fleet.expand()
        #expect(specs.count == 1000)
        #expect(Set(specs.map(\.id)).count == 1000)
        #expect(specs.allSatisfy { DeviceSpec.isValidID($0.id) })
        #expect(Set(specs.map(\.profile.name)) == ["thermostat", "meter", "tracker"])
        let scaled = try fleet.expand(count: 10_000)
        #expect(scaled.count == 10_000)
        #expect(scaled.filter { $0.profile.name == "meter" }.count == 3000)
        #expect(try fleet.expand(count: 7).count == 7)
    }

    @Test("fleet errors: unknown profile, bad id pattern, duplicate ids, bad values")
    func fleetErrors() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory + "/profiles", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(#"{"model":"m","firmware":"1"}"#.utf8).write(to: URL(fileURLWithPath: directory + "/profiles/basic.json"))
        func fleetError(_ json: String) -> String? {
            let path = directory + "/fleet.json"
            do {
                try Data(json.utf8).write(to: URL(fileURLWithPath: path))
                _ = try FleetDefinition.load(path: path).expand()
                return nil
            } catch let error as SimulatorConfigError {
                return error.message.replacingOccurrences(of: directory + "/", with: "")
            } catch {
                return "\(error)"
            }
        }
        #expect(fleetError(#"{"devices":[{"profile":"basic","count":2}]}"#) == nil)
        #expect(fleetError(#"{"devices":[{"profile":"heater"}]}"#)
            == "unknown profile \"heater\": profiles/heater.json does not exist (known profiles: basic)")
        #expect(fleetError(#"{"devices":[{"profile":"basic","idPattern":"dev"}]}"#)?.contains("has no {n} placeholder") == true)
        #expect(fleetError(#"{"devices":[{"profile":"basic","idPattern":"dev/{n}"}]}"#)?.contains("invalid device id \"dev/1\"") == true)
        #expect(fleetError(#"{"devices":[{"profile":"basic","idPattern":"d{n}","count":2},{"profile":"basic","idPattern":"d{n}"}]}"#)?
            .contains("duplicate device id \"d1\"") == true)
        #expect(fleetError(#"{"devices":[{"profile":"basic","idPattern":"d{x}"}]}"#)?.contains("unknown placeholder {x}") == true)
        #expect(fleetError(#"{"devices":[]}"#) == "fleet.json: devices: expected a non-empty array")
        #expect(fleetError(#"{"devices":[{"profile":"basic"}],"abruptFraction":2}"#) == "fleet.json: abruptFraction: must be between 0 and 1")
        #expect(fleetError(#"{"devices":[{"profile":"basic"}],"broker":"tcp://x"}"#)?.contains("the scheme must be mqtt:// or mqtts://") == true)
        #expect(fleetError("{nope") == "fleet.json: not valid JSON")
    }

    @Test("broker URLs: credentials, defaults, TLS, errors, redaction")
    func brokerURLs() throws {
        let url = try BrokerURL.parse("mqtt://gw:s%40cret@broker.local:1884")
        #expect(url == BrokerURL(tls: false, host: "broker.local", port: 1884, username: "gw", password: "s@cret"))
        #expect(url.description == "mqtt://gw:***@broker.local:1884")
        #expect(try BrokerURL.parse("mqtts://h").port == 8883)
        #expect(try BrokerURL.parse("mqtt://h").port == 1883)
        #expect(try BrokerURL.parse("mqtt://[::1]:1999").host == "::1")
        let perDevice = try BrokerURL.parse("mqtt://{id}:pw-{id}@127.0.0.1:1883")
        #expect(perDevice.username(for: "d7") == "d7")
        #expect(perDevice.password(for: "d7") == "pw-d7")
        for bad in ["http://h:1", "mqtt://h:0", "mqtt://h:70000", "mqtt://h:x", "mqtt://", "mqtt://h/path"] {
            #expect(throws: SimulatorConfigError.self) { try BrokerURL.parse(bad) }
        }
        // The password never shows in the error.
        do {
            _ = try BrokerURL.parse("mqtt://u:topsecret@h:99999")
            Issue.record("expected an error")
        } catch let error as SimulatorConfigError {
            #expect(!error.message.contains("topsecret"))
        }
    }

    @Test("merge patch follows RFC 7386")
    func mergePatch() throws {
        let target: JSONValue = ["a": "b", "c": ["d": "e", "f": "g"]]
        let patch: JSONValue = ["a": "z", "c": ["f": nil]]
        #expect(target.mergePatched(with: patch) == ["a": "z", "c": ["d": "e"]])
        #expect(JSONValue.object([:]).mergePatched(with: ["a": ["bb": ["ccc": nil]]]) == ["a": ["bb": [:]]])
        #expect(JSONValue.array([1]).mergePatched(with: ["a": 1]) == ["a": 1])
        #expect(try JSONValue.parse(#"{"b":[1,2.5,true,null,"x\"y"],"a":1}"#).description == #"{"a":1,"b":[1,2.5,true,null,"x\"y"]}"#)
    }

    @Test("behaviour: birth, seq, padding, desired versions, commands")
    func behaviour() throws {
        var device = DeviceBehavior(spec: DeviceSpec(id: "x-1", profile: try testProfile(payloadBytes: 120)))
        #expect(try JSONValue.parse(device.birthPayload)["status"] == "online")
        let first = device.nextTelemetry(unixMilliseconds: 5)
        let second = device.nextTelemetry(unixMilliseconds: 6)
        #expect(try JSONValue.parse(first)["seq"] == 1)
        #expect(try JSONValue.parse(second)["seq"] == 2)
        #expect(first.count == 120 && second.count == 120)
        guard case .applied(let version, let patch) = device.onDesired(Array(#"{"version":1,"state":{"mode":"off"}}"#.utf8)) else {
            Issue.record("not applied")
            return
        }
        #expect(version == 1)
        #expect(try JSONValue.parse(patch) == ["mode": "off"])
        #expect(device.reported == ["mode": "off", "setpoint": 20])
        #expect(device.onDesired(Array(#"{"version":1,"state":{}}"#.utf8)) == .stale(version: 1))
        #expect(device.onDesired(Array(#"{"state":{}}"#.utf8)) == .invalid("missing integer version"))
        #expect(device.onCommand(name: "hang", body: []) == .noReply)
        guard case .reply(let reply, 0) = device.onCommand(name: "get-state", body: []) else {
            Issue.record("no reply")
            return
        }
        #expect(try JSONValue.parse(reply)["reported"] == ["mode": "off", "setpoint": 20])
    }

    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.path + "/Package.swift") { return url.path }
        }
        return FileManager.default.currentDirectoryPath
    }()
}
