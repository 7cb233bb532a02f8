import Foundation

/// A raw configuration value as read from one source, before it is checked against its key.
///
/// Configuration files give JSON values; environment variables and flags give strings, which the
/// key's type parses (comma-separated for lists).
enum ConfigValue: Sendable, Hashable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([ConfigValue])
    case object([String: ConfigValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([ConfigValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: ConfigValue].self))
        }
    }

    /// The JSON type name, for error messages.
    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// Where a configuration value came from. Precedence, lowest first: defaults, the configuration
/// file, environment variables, command-line flags.
public enum ConfigSource: Sendable, Hashable, CustomStringConvertible {
    case defaultValue
    /// The configuration file at this path.
    case file(String)
    /// The environment variable of this name.
    case environment(String)
    /// The command-line flag of this name (`--node-name`).
    case flag(String)

    public var description: String {
        switch self {
        case .defaultValue: "the default"
        case .file(let path): "config file \(path)"
        case .environment(let name): "environment variable \(name)"
        case .flag(let name): "flag \(name)"
        }
    }
}

/// A configuration error: names the key, the source it came from, and what is wrong.
///
///     configuration error: clusterListen (from flag --cluster-listen): "127.0.0.1:99999" is not
///     HOST:PORT: port 99999 is out of range 0-65535
public struct GatewayConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The configuration key (file key spelling), for example `clusterListen`. For an unknown
    /// key, the key as written.
    public var key: String
    /// Where the bad value came from (nil for rules that involve several keys).
    public var source: ConfigSource?
    /// What is wrong.
    public var message: String

    public init(key: String, source: ConfigSource?, message: String) {
        self.key = key
        self.source = source
        self.message = message
    }

    public var description: String {
        if let source {
            return "configuration error: \(key) (from \(source)): \(message)"
        }
        return "configuration error: \(key): \(message)"
    }
}
