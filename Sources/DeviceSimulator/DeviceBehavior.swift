import Foundation
import SwarmJSON

/// The device side of the device contract (docs/gateway.md, “Device contract”) for one simulated device, without any I/O: what it
/// publishes (birth, telemetry, reported state, command replies) and how it reacts to what it
/// receives (desired state, commands, broadcasts). The connection layer (``FleetRunner``) feeds
/// it messages and publishes what it returns; tests drive it directly.
///
/// Topics (prefix `devices` by default):
/// - `devices/{id}/status` retained: birth `{"status":"online","model","firmware","groups"}`;
///   the will and the clean-exit message are `{"status":"offline"}`.
/// - `devices/{id}/telemetry`: `{"seq":n,"ts":unix-ms, ...profile fields}`, `seq` from 1 per run.
/// - `devices/{id}/state/reported`: merge patches; the profile's initial document after each connect.
/// - `devices/{id}/state/desired` (subscribed): `{"version":n,"state":{..}}`; a version above the
///   last applied one is applied and the state is reported back as a patch.
/// - `devices/{id}/commands/+` (subscribed): answered per the profile on the MQTT 5 response topic.
/// - `devices/{id}/down` (subscribed): counted.
public struct DeviceBehavior: Sendable {
    public let id: String
    public private(set) var profile: DeviceProfile
    public let topics: DeviceTopics

    /// Last telemetry sequence number sent (0 before the first).
    public private(set) var telemetrySeq: Int64 = 0
    /// The reported state as this device knows it (initial document plus every patch it sent).
    public private(set) var reported: JSONValue
    /// The highest desired version applied (-1: none yet).
    public private(set) var desiredVersion: Int64 = -1
    /// Broadcasts received on `down`.
    public private(set) var broadcastsReceived = 0
    private var generators: GeneratorState
    private var random: SplitMix64

    public init(spec: DeviceSpec, prefix: String = "devices", seed: UInt64? = nil) {
        id = spec.id
        profile = spec.profile
        topics = DeviceTopics(prefix: prefix, id: spec.id)
        reported = spec.profile.reported.initial
        random = SplitMix64(seed: seed ?? Self.stableHash(spec.id))
        generators = GeneratorState()
    }

    /// Replaces the profile's telemetry payload size (`--payload-size`).
    public mutating func overridePayloadBytes(_ bytes: Int) { profile.telemetry.payloadBytes = bytes }

    /// The retained birth message payload.
    public var birthPayload: [UInt8] {
        JSONValue.object([
            "status": "online",
            "model": .string(profile.model),
            "firmware": .string(profile.firmware),
            "groups": .array(profile.groups.map { .string($0) }),
        ]).serialized()
    }

    /// The will / clean-exit payload.
    public static let offlinePayload: [UInt8] = JSONValue.object(["status": "offline"]).serialized()

    /// The next telemetry payload (`seq` incremented).
    public mutating func nextTelemetry(unixMilliseconds: Int64) -> [UInt8] {
        telemetrySeq += 1
        var members: [String: JSONValue] = ["seq": .int(telemetrySeq), "ts": .int(unixMilliseconds)]
        for (name, generator) in profile.telemetry.fields {
            members[name] = generators.next(name, generator, &random)
        }
        var payload = JSONValue.object(members).serialized()
        let target = profile.telemetry.payloadBytes
        if target > payload.count {
            // `,"pad":""` adds 9 bytes; fill the rest with 'x'.
            let fill = max(0, target - payload.count - 9)
            members["pad"] = .string(String(repeating: "x", count: fill))
            payload = JSONValue.object(members).serialized()
        }
        return payload
    }

    /// The reported document to publish after a connect.
    public var fullReported: [UInt8] { reported.serialized() }

    /// A periodic reported-state patch of the profile's reported fields (nil when it has none).
    public mutating func nextReportedPatch() -> [UInt8]? {
        guard !profile.reported.fields.isEmpty else { return nil }
        var patch: [String: JSONValue] = [:]
        for (name, generator) in profile.reported.fields {
            patch[name] = generators.next("reported." + name, generator, &random)
        }
        reported = reported.mergePatched(with: .object(patch))
        return JSONValue.object(patch).serialized()
    }

    /// What a desired-state message did.
    public enum DesiredOutcome: Sendable, Equatable {
        /// Applied; publish `patch` on `state/reported`.
        case applied(version: Int64, patch: [UInt8])
        /// Not newer than the last applied version (a retained copy after a reconnect).
        case stale(version: Int64)
        /// Not `{"version": integer, "state": object}`.
        case invalid(String)
    }

    /// Applies a desired-state message: the state's members become reported values (a null
    /// member removes one), and the same patch is reported back.
    public mutating func onDesired(_ payload: [UInt8]) -> DesiredOutcome {
        guard let value = try? JSONValue.parse(payload), let object = value.objectValue else {
            return .invalid("not a JSON object")
        }
        guard let version = object["version"]?.intValue else { return .invalid("missing integer version") }
        guard let state = object["state"], state.objectValue != nil else { return .invalid("missing object state") }
        guard version > desiredVersion else { return .stale(version: version) }
        desiredVersion = version
        reported = reported.mergePatched(with: state)
        return .applied(version: version, patch: state.serialized())
    }

    /// What to do about a command.
    public enum CommandOutcome: Sendable, Equatable {
        /// Publish `payload` to the response topic after `delayMilliseconds`.
        case reply(payload: [UInt8], delayMilliseconds: Int)
        /// The profile says this command is never answered.
        case noReply
    }

    /// The reply to command `name` with request body `body`: `{"ok":..,"command":name,
    /// "device":id,"request":body,...profile reply members}`.
    public func onCommand(name: String, body: [UInt8]) -> CommandOutcome {
        let behavior = profile.commands[name] ?? profile.unknownCommand
        guard behavior.respond else { return .noReply }
        var members = behavior.reply
        members["ok"] = .bool(behavior.ok)
        members["command"] = .string(name)
        members["device"] = .string(id)
        if !body.isEmpty {
            members["request"] = (try? JSONValue.parse(body)) ?? .string(String(decoding: body, as: UTF8.self))
        }
        if name == "get-state" && profile.commands[name] != nil {
            members["reported"] = reported
        }
        return .reply(payload: JSONValue.object(members).serialized(), delayMilliseconds: behavior.delayMilliseconds)
    }

    /// Counts a broadcast on `down`.
    public mutating func onBroadcast() { broadcastsReceived += 1 }

    /// FNV-1a 64 of the id: a per-device seed that is the same on every run.
    static func stableHash(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return hash
    }
}

/// The topics of one device.
public struct DeviceTopics: Sendable, Hashable {
    public let status: String
    public let telemetry: String
    public let reported: String
    public let desired: String
    public let commands: String
    public let down: String
    /// `prefix/id/commands/` (the command name follows).
    public let commandPrefix: String

    public init(prefix: String, id: String) {
        let base = prefix + "/" + id + "/"
        status = base + "status"
        telemetry = base + "telemetry"
        reported = base + "state/reported"
        desired = base + "state/desired"
        commands = base + "commands/+"
        commandPrefix = base + "commands/"
        down = base + "down"
    }
}

/// Per-field generator state (walk positions, counters).
struct GeneratorState: Sendable {
    private var walks: [String: Double] = [:]
    private var counters: [String: Int64] = [:]

    mutating func next(_ key: String, _ generator: FieldGenerator, _ random: inout SplitMix64) -> JSONValue {
        switch generator {
        case .constant(let value):
            return value
        case .uniform(let min, let max, let decimals):
            return .double(Self.round(Double.random(in: min...max, using: &random), decimals))
        case .walk(let start, let step, let min, let max, let decimals):
            let current = walks[key] ?? start
            let next = Swift.min(max, Swift.max(min, current + Double.random(in: -step...step, using: &random)))
            walks[key] = next
            return .double(Self.round(next, decimals))
        case .counter(let start, let step):
            let value = counters[key] ?? start
            counters[key] = value &+ step
            return .int(value)
        case .choice(let values):
            return values[Int.random(in: 0..<values.count, using: &random)]
        case .bool(let probability):
            return .bool(Double.random(in: 0..<1, using: &random) < probability)
        }
    }

    static func round(_ value: Double, _ decimals: Int) -> Double {
        let scale = pow(10, Double(decimals))
        return (value * scale).rounded() / scale
    }
}

/// A small seeded generator (SplitMix64): each device's values repeat from run to run.
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
