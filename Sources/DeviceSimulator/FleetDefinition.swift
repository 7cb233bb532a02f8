import Foundation
import SwarmJSON

/// A fleet file (`devices/fleet-demo.json`): how many devices of which profile, their ids, and
/// run defaults that command-line flags override. Format in `devices/README.md`.
public struct FleetDefinition: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        /// Profile name (`profiles/NAME.json`).
        public var profile: String
        /// Devices of this profile.
        public var count: Int
        /// Id pattern: `{n}` is the 1-based index within the entry, `{n:4}` the same zero-padded
        /// to 4 digits, `{profile}` the profile name. Default `{profile}-{n:5}`.
        public var idPattern: String
    }

    public var name: String
    public var entries: [Entry]
    /// Where profiles live; relative paths are relative to the fleet file. Default `profiles`.
    public var profilesDirectory: String
    /// Run defaults (nil: the command's own default).
    public var broker: String?
    public var durationSeconds: Double?
    public var abruptFraction: Double?
    public var connectRate: Double?

    /// Parses a fleet document; `source` is the file path (relative profile directories are
    /// resolved against its folder).
    public static func parse(_ value: JSONValue, source: String) throws -> FleetDefinition {
        var reader = try ObjectReader(value, source: source)
        let name = try reader.string("name") ?? URL(fileURLWithPath: source).deletingPathExtension().lastPathComponent
        var directory = try reader.string("profilesDirectory") ?? "profiles"
        if !directory.hasPrefix("/") {
            directory = URL(fileURLWithPath: source).deletingLastPathComponent().appendingPathComponent(directory).path
        }
        let broker = try reader.string("broker")
        if let broker { _ = try BrokerURL.parse(broker, source: "\(source): broker") }
        let duration = try reader.double("durationSeconds")
        if let duration, duration < 0 { throw reader.fail("durationSeconds", "must not be negative") }
        let abrupt = try reader.double("abruptFraction")
        if let abrupt, !(0...1).contains(abrupt) { throw reader.fail("abruptFraction", "must be between 0 and 1") }
        let connectRate = try reader.double("connectRate")
        if let connectRate, connectRate <= 0 { throw reader.fail("connectRate", "must be positive") }
        guard let list = reader.value("devices") else { throw reader.fail("devices", "missing (required)") }
        guard let array = list.arrayValue, !array.isEmpty else { throw reader.fail("devices", "expected a non-empty array") }
        var entries: [Entry] = []
        for (index, element) in array.enumerated() {
            var entry = try ObjectReader(element, source: source, path: "devices[\(index)]")
            let profile = try entry.requiredString("profile")
            let count = try entry.int("count") ?? 1
            guard count >= 0 else { throw entry.fail("count", "must not be negative") }
            let pattern = try entry.string("idPattern") ?? "{profile}-{n:5}"
            _ = try DeviceIDPattern(pattern, source: "\(source): devices[\(index)].idPattern")
            try entry.rejectUnknownKeys()
            entries.append(Entry(profile: profile, count: count, idPattern: pattern))
        }
        try reader.rejectUnknownKeys()
        return FleetDefinition(
            name: name, entries: entries, profilesDirectory: directory, broker: broker,
            durationSeconds: duration, abruptFraction: abrupt, connectRate: connectRate
        )
    }

    /// Reads and parses a fleet file.
    public static func load(path: String) throws -> FleetDefinition {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SimulatorConfigError("fleet file \(path) does not exist or cannot be read")
        }
        let value: JSONValue
        do { value = try JSONValue.parse(Array(data)) } catch {
            throw SimulatorConfigError("\(path): not valid JSON")
        }
        return try parse(value, source: path)
    }

    /// Total devices in the file.
    public var totalCount: Int { entries.reduce(0) { $0 + $1.count } }

    /// The devices to simulate: every entry's devices with their ids and profiles. With `count`,
    /// the total is scaled to `count`, keeping the entries' proportions (largest remainder).
    /// Loads each profile once from ``profilesDirectory``. Throws for an unknown profile, an
    /// invalid or duplicate device id.
    public func expand(count: Int? = nil) throws -> [DeviceSpec] {
        var profiles: [String: DeviceProfile] = [:]
        for entry in entries where profiles[entry.profile] == nil {
            profiles[entry.profile] = try DeviceProfile.load(named: entry.profile, directory: profilesDirectory)
        }
        let counts = try Self.scale(entries.map(\.count), to: count ?? totalCount)
        var specs: [DeviceSpec] = []
        specs.reserveCapacity(counts.reduce(0, +))
        var seen: Set<String> = []
        for (entry, entryCount) in zip(entries, counts) where entryCount > 0 {
            let pattern = try DeviceIDPattern(entry.idPattern, source: "idPattern")
            for index in 1...entryCount {
                let id = pattern.id(index: index, profile: entry.profile)
                guard DeviceSpec.isValidID(id) else {
                    throw SimulatorConfigError(
                        "idPattern \"\(entry.idPattern)\" produced the invalid device id \"\(id)\" (allowed: [A-Za-z0-9._:-]{1,128})")
                }
                guard seen.insert(id).inserted else {
                    throw SimulatorConfigError("idPattern \"\(entry.idPattern)\" produced the duplicate device id \"\(id)\"")
                }
                specs.append(DeviceSpec(id: id, profile: profiles[entry.profile]!))
            }
        }
        return specs
    }

    /// Splits `total` over entries proportionally to `weights` (largest remainder).
    static func scale(_ weights: [Int], to total: Int) throws -> [Int] {
        guard total >= 0 else { throw SimulatorConfigError("--count must not be negative") }
        let sum = weights.reduce(0, +)
        guard sum > 0 else {
            if total == 0 { return weights.map { _ in 0 } }
            throw SimulatorConfigError("the fleet has no devices to scale to \(total)")
        }
        if total == sum { return weights }
        let exact = weights.map { Double($0) * Double(total) / Double(sum) }
        var counts = exact.map { Int($0.rounded(.down)) }
        let order = exact.indices.sorted { (exact[$0] - Double(counts[$0])) > (exact[$1] - Double(counts[$1])) }
        var missing = total - counts.reduce(0, +)
        for index in order where missing > 0 {
            counts[index] += 1
            missing -= 1
        }
        return counts
    }
}

/// One simulated device: its id and profile.
public struct DeviceSpec: Sendable, Hashable {
    public var id: String
    public var profile: DeviceProfile

    public init(id: String, profile: DeviceProfile) {
        self.id = id
        self.profile = profile
    }

    /// Device ids of the device contract (docs/gateway.md): `[A-Za-z0-9._:-]{1,128}`.
    public static func isValidID(_ id: String) -> Bool {
        let utf8 = id.utf8
        guard (1...128).contains(utf8.count) else { return false }
        return utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "-"):
                true
            default: false
            }
        }
    }
}

/// A parsed id pattern (`thermo-{n:4}`, `{profile}-{n}`).
struct DeviceIDPattern {
    enum Part {
        case literal(String)
        case index(width: Int)
        case profile
    }

    let parts: [Part]

    init(_ pattern: String, source: String) throws {
        var parts: [Part] = []
        var rest = Substring(pattern)
        var sawIndex = false
        while let open = rest.firstIndex(of: "{") {
            if open > rest.startIndex { parts.append(.literal(String(rest[..<open]))) }
            guard let close = rest[open...].firstIndex(of: "}") else {
                throw SimulatorConfigError("\(source): unclosed \"{\" in \"\(pattern)\"")
            }
            let token = rest[rest.index(after: open)..<close]
            if token == "profile" {
                parts.append(.profile)
            } else if token == "n" {
                parts.append(.index(width: 0))
                sawIndex = true
            } else if token.hasPrefix("n:"), let width = Int(token.dropFirst(2)), (1...12).contains(width) {
                parts.append(.index(width: width))
                sawIndex = true
            } else {
                throw SimulatorConfigError("\(source): unknown placeholder {\(token)} in \"\(pattern)\" (use {n}, {n:WIDTH}, {profile})")
            }
            rest = rest[rest.index(after: close)...]
        }
        if !rest.isEmpty { parts.append(.literal(String(rest))) }
        guard sawIndex else { throw SimulatorConfigError("\(source): \"\(pattern)\" has no {n} placeholder, so every id would be the same") }
        self.parts = parts
    }

    func id(index: Int, profile: String) -> String {
        var id = ""
        for part in parts {
            switch part {
            case .literal(let text): id += text
            case .profile: id += profile
            case .index(let width):
                let digits = String(index)
                id += String(repeating: "0", count: max(0, width - digits.count)) + digits
            }
        }
        return id
    }
}
