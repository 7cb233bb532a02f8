import Foundation
import SwarmJSON

/// What one kind of simulated device looks like and how it behaves, read from
/// `devices/profiles/NAME.json` (format in `devices/README.md`).
public struct DeviceProfile: Sendable, Hashable {
    /// Profile name (the file name without `.json`).
    public var name: String
    /// Birth metadata.
    public var model: String
    public var firmware: String
    /// Groups announced in the birth message.
    public var groups: [String]
    /// MQTT keep-alive in seconds (at least 5).
    public var keepAliveSeconds: Int = 30
    /// Telemetry: shape and rate.
    public var telemetry: Telemetry
    /// Reported state: the initial document and optional periodic updates.
    public var reported: Reported
    /// Behaviour per command name.
    public var commands: [String: CommandBehavior]
    /// Behaviour for a command not listed in `commands`.
    public var unknownCommand: CommandBehavior

    public struct Telemetry: Sendable, Hashable {
        /// Seconds between two telemetry messages of one device (0 = none).
        public var interval: Double
        /// QoS of telemetry publishes.
        public var qos: Int
        /// Pad each payload (with a `pad` string member) to at least this many bytes. 0 = no padding.
        public var payloadBytes: Int
        /// The generated members besides `seq` and `ts`.
        public var fields: [String: FieldGenerator]
    }

    public struct Reported: Sendable, Hashable {
        /// The reported document published after each connect.
        public var initial: JSONValue
        /// Seconds between periodic reported-state patches of `fields` (0 = none).
        public var interval: Double
        /// Members regenerated for each periodic patch.
        public var fields: [String: FieldGenerator]
    }

    /// How a device answers a command.
    public struct CommandBehavior: Sendable, Hashable {
        /// Whether the device answers at all (false: never answers, for timeout tests).
        public var respond: Bool = true
        /// Delay before the answer, in milliseconds.
        public var delayMilliseconds: Int = 0
        /// The `ok` member of the reply.
        public var ok: Bool = true
        /// Extra members merged into the reply object.
        public var reply: [String: JSONValue] = [:]

        public init(respond: Bool = true, delayMilliseconds: Int = 0, ok: Bool = true, reply: [String: JSONValue] = [:]) {
            self.respond = respond
            self.delayMilliseconds = delayMilliseconds
            self.ok = ok
            self.reply = reply
        }
    }
}

/// How one generated value (telemetry or reported field) changes from message to message.
public enum FieldGenerator: Sendable, Hashable {
    /// Always the same value.
    case constant(JSONValue)
    /// Uniformly random in `min...max`, rounded to `decimals`.
    case uniform(min: Double, max: Double, decimals: Int)
    /// A random walk from `start`, at most `step` per message, clamped to `min...max`.
    case walk(start: Double, step: Double, min: Double, max: Double, decimals: Int)
    /// `start`, `start + step`, ... (an integer counter, e.g. an energy meter).
    case counter(start: Int64, step: Int64)
    /// One of `values`, chosen at random.
    case choice([JSONValue])
    /// true with `probability`.
    case bool(probability: Double)

    static func parse(_ value: JSONValue, source: String, path: String) throws -> FieldGenerator {
        var reader = try ObjectReader(value, source: source, path: path)
        let type = try reader.requiredString("type")
        let generator: FieldGenerator
        switch type {
        case "constant":
            guard let constant = reader.value("value") else { throw reader.fail("value", "missing (required for type constant)") }
            generator = .constant(constant)
        case "uniform":
            let min = try reader.double("min") ?? 0
            let max = try reader.double("max") ?? 1
            guard min <= max else { throw reader.fail("max", "must be at least min (\(min))") }
            generator = .uniform(min: min, max: max, decimals: try decimals(&reader))
        case "walk":
            let min = try reader.double("min") ?? -1e9
            let max = try reader.double("max") ?? 1e9
            guard min <= max else { throw reader.fail("max", "must be at least min (\(min))") }
            let start = try reader.double("start") ?? (min + max) / 2
            let step = try reader.double("step") ?? 1
            guard step >= 0 else { throw reader.fail("step", "must not be negative") }
            generator = .walk(start: start, step: step, min: min, max: max, decimals: try decimals(&reader))
        case "counter":
            generator = .counter(start: Int64(try reader.int("start") ?? 0), step: Int64(try reader.int("step") ?? 1))
        case "choice":
            guard let values = reader.value("values")?.arrayValue, !values.isEmpty else {
                throw reader.fail("values", "expected a non-empty array")
            }
            generator = .choice(values)
        case "bool":
            let probability = try reader.double("probability") ?? 0.5
            guard (0...1).contains(probability) else { throw reader.fail("probability", "must be between 0 and 1") }
            generator = .bool(probability: probability)
        default:
            throw reader.fail("type", "unknown field type \"\(type)\" (constant, uniform, walk, counter, choice, bool)")
        }
        try reader.rejectUnknownKeys()
        return generator
    }

    private static func decimals(_ reader: inout ObjectReader) throws -> Int {
        let decimals = try reader.int("decimals") ?? 2
        guard (0...9).contains(decimals) else { throw reader.fail("decimals", "must be between 0 and 9") }
        return decimals
    }
}

extension DeviceProfile {
    /// Parses a profile document. `source` names the file in error messages.
    public static func parse(_ value: JSONValue, name: String, source: String) throws -> DeviceProfile {
        var reader = try ObjectReader(value, source: source)
        if let declared = try reader.string("name"), declared != name {
            throw reader.fail("name", "\"\(declared)\" does not match the file name \"\(name)\"")
        }
        let model = try reader.requiredString("model")
        let firmware = try reader.requiredString("firmware")
        let groups = try reader.strings("groups") ?? []
        let keepAlive = try reader.int("keepAliveSeconds") ?? 30
        guard (5...65535).contains(keepAlive) else { throw reader.fail("keepAliveSeconds", "must be between 5 and 65535") }

        var telemetry = Telemetry(interval: 5, qos: 0, payloadBytes: 0, fields: [:])
        if var section = try reader.object("telemetry") {
            telemetry.interval = try interval(&section, default: 5)
            let qos = try section.int("qos") ?? 0
            guard (0...2).contains(qos) else { throw section.fail("qos", "must be 0, 1 or 2, got \(qos)") }
            telemetry.qos = qos
            let bytes = try section.int("payloadBytes") ?? 0
            guard (0...1_000_000).contains(bytes) else { throw section.fail("payloadBytes", "must be between 0 and 1000000") }
            telemetry.payloadBytes = bytes
            telemetry.fields = try fields(&section)
            try section.rejectUnknownKeys()
        }

        var reported = Reported(initial: .object([:]), interval: 0, fields: [:])
        if var section = try reader.object("reported") {
            if let initial = section.value("initial") {
                guard initial.objectValue != nil else { throw section.fail("initial", "expected an object, got \(initial.typeName)") }
                reported.initial = initial
            }
            reported.interval = try interval(&section, default: 0)
            reported.fields = try fields(&section)
            try section.rejectUnknownKeys()
        }

        var commands: [String: CommandBehavior] = [:]
        if let section = try reader.object("commands") {
            for (name, value) in section.members {
                commands[name] = try command(value, source: source, path: section.keyPath(name))
            }
        }
        var unknownCommand = CommandBehavior(ok: false, reply: ["error": "unknown command"])
        if let value = reader.value("unknownCommand") {
            unknownCommand = try command(value, source: source, path: "unknownCommand")
        }
        try reader.rejectUnknownKeys()
        return DeviceProfile(
            name: name, model: model, firmware: firmware, groups: groups, keepAliveSeconds: keepAlive,
            telemetry: telemetry, reported: reported, commands: commands, unknownCommand: unknownCommand
        )
    }

    /// `intervalMs` or `ratePerSecond` (not both); returns seconds, 0 = off.
    private static func interval(_ reader: inout ObjectReader, default defaultSeconds: Double) throws -> Double {
        let milliseconds = try reader.double("intervalMs")
        let rate = try reader.double("ratePerSecond")
        switch (milliseconds, rate) {
        case (.some, .some): throw reader.fail("ratePerSecond", "give either intervalMs or ratePerSecond, not both")
        case (.some(let ms), nil):
            guard ms >= 0 else { throw reader.fail("intervalMs", "must not be negative") }
            return ms / 1000
        case (nil, .some(let rate)):
            guard rate >= 0 else { throw reader.fail("ratePerSecond", "must not be negative") }
            return rate == 0 ? 0 : 1 / rate
        case (nil, nil): return defaultSeconds
        }
    }

    private static func fields(_ reader: inout ObjectReader) throws -> [String: FieldGenerator] {
        guard let section = try reader.object("fields") else { return [:] }
        var result: [String: FieldGenerator] = [:]
        for (name, value) in section.members {
            if name == "seq" || name == "ts" || name == "pad" {
                throw section.fail(name, "reserved member name (seq, ts and pad are generated)")
            }
            result[name] = try FieldGenerator.parse(value, source: section.source, path: section.keyPath(name))
        }
        return result
    }

    private static func command(_ value: JSONValue, source: String, path: String) throws -> CommandBehavior {
        var reader = try ObjectReader(value, source: source, path: path)
        var behavior = CommandBehavior()
        behavior.respond = try reader.bool("respond") ?? true
        let delay = try reader.int("delayMs") ?? 0
        guard (0...3_600_000).contains(delay) else { throw reader.fail("delayMs", "must be between 0 and 3600000") }
        behavior.delayMilliseconds = delay
        behavior.ok = try reader.bool("ok") ?? true
        if let reply = reader.value("reply") {
            guard let members = reply.objectValue else { throw reader.fail("reply", "expected an object, got \(reply.typeName)") }
            behavior.reply = members
        }
        try reader.rejectUnknownKeys()
        return behavior
    }

    /// Reads and parses `directory/NAME.json`.
    public static func load(named name: String, directory: String) throws -> DeviceProfile {
        let path = directory + "/" + name + ".json"
        guard let data = FileManager.default.contents(atPath: path) else {
            let known = (try? FileManager.default.contentsOfDirectory(atPath: directory))?
                .filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted() ?? []
            throw SimulatorConfigError(
                "unknown profile \"\(name)\": \(path) does not exist"
                    + (known.isEmpty ? "" : " (known profiles: \(known.joined(separator: ", ")))"))
        }
        let value: JSONValue
        do { value = try JSONValue.parse(Array(data)) } catch {
            throw SimulatorConfigError("\(path): not valid JSON")
        }
        return try parse(value, name: name, source: path)
    }
}
