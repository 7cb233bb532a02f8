import SwarmJSON
/// An error in a profile or fleet file (or a command-line value standing in for one). The
/// message names the file and the JSON path of the bad key, for example
/// `devices/profiles/meter.json: telemetry.qos: must be 0, 1 or 2, got 3`.
public struct SimulatorConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Reads one JSON object member by member, remembering the path for error messages and
/// rejecting keys nobody asked for (a misspelt key is an error, not a silent default).
struct ObjectReader {
    let source: String
    let path: String
    let members: [String: JSONValue]
    private(set) var used: Set<String> = []

    init(_ value: JSONValue, source: String, path: String = "") throws {
        guard case .object(let members) = value else {
            throw SimulatorConfigError("\(source): \(path.isEmpty ? "top level" : path): expected an object, got \(value.typeName)")
        }
        self.source = source
        self.path = path
        self.members = members
    }

    func fail(_ key: String, _ message: String) -> SimulatorConfigError {
        SimulatorConfigError("\(source): \(keyPath(key)): \(message)")
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : path + "." + key }

    mutating func value(_ key: String) -> JSONValue? {
        used.insert(key)
        return members[key]
    }

    mutating func string(_ key: String) throws -> String? {
        guard let value = value(key) else { return nil }
        guard let string = value.stringValue else { throw fail(key, "expected a string, got \(value.typeName)") }
        return string
    }

    mutating func requiredString(_ key: String) throws -> String {
        guard let string = try string(key) else { throw fail(key, "missing (required)") }
        return string
    }

    mutating func double(_ key: String) throws -> Double? {
        guard let value = value(key) else { return nil }
        guard let number = value.doubleValue else { throw fail(key, "expected a number, got \(value.typeName)") }
        return number
    }

    mutating func int(_ key: String) throws -> Int? {
        guard let value = value(key) else { return nil }
        guard let number = value.intValue, let int = Int(exactly: number) else {
            throw fail(key, "expected an integer, got \(value.typeName == "number" ? "\(value)" : value.typeName)")
        }
        return int
    }

    mutating func bool(_ key: String) throws -> Bool? {
        guard let value = value(key) else { return nil }
        guard let bool = value.boolValue else { throw fail(key, "expected true or false, got \(value.typeName)") }
        return bool
    }

    mutating func strings(_ key: String) throws -> [String]? {
        guard let value = value(key) else { return nil }
        guard let array = value.arrayValue else { throw fail(key, "expected an array of strings, got \(value.typeName)") }
        return try array.enumerated().map { index, element in
            guard let string = element.stringValue else {
                throw fail("\(key)[\(index)]", "expected a string, got \(element.typeName)")
            }
            return string
        }
    }

    mutating func object(_ key: String) throws -> ObjectReader? {
        guard let value = value(key) else { return nil }
        return try ObjectReader(value, source: source, path: keyPath(key))
    }

    /// Throws for the first member that no accessor asked for.
    func rejectUnknownKeys() throws {
        if let unknown = members.keys.sorted().first(where: { !used.contains($0) }) {
            throw fail(unknown, "unknown key")
        }
    }
}
