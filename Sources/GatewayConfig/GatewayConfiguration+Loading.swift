import Foundation

extension GatewayConfiguration {
    /// Loads the configuration: defaults < `file` < `environment` < `overrides`.
    ///
    /// - Parameters:
    ///   - file: a JSON configuration file; nil uses `environment["SWARM_GATEWAY_CONFIG"]` if set,
    ///     else no file. Members whose name starts with `_` are comments and ignored.
    ///   - environment: usually `ProcessInfo.processInfo.environment`. Every variable starting
    ///     with `SWARM_GATEWAY_` must be a known key (a misspelt one is an error).
    ///   - overrides: command-line flags that were given, keyed by file key (`clusterListen`) or
    ///     flag name (`--cluster-listen` / `cluster-listen`). Lists are comma-separated.
    ///   - listOverrides: repeatable flags (`--broker A --broker B`), same keys, one element per
    ///     occurrence (no comma splitting, so a password may contain a comma). A key in both
    ///     dictionaries is an error.
    /// - Throws: ``GatewayConfigError`` naming the key and source of the first problem.
    public static func load(
        file: String? = nil,
        environment: [String: String] = [:],
        overrides: [String: String] = [:],
        listOverrides: [String: [String]] = [:]
    ) throws(GatewayConfigError) -> GatewayConfiguration {
        var layers: [(ConfigSource, [String: ConfigValue])] = []

        if let path = file ?? environment[configFileVariable] {
            layers.append((.file(path), try readFile(path)))
        }

        var environmentLayer: [String: (String, ConfigValue)] = [:]
        for (name, value) in environment where name.hasPrefix("SWARM_GATEWAY_") && name != configFileVariable {
            guard let key = keys.first(where: { $0.environmentVariable == name }) else {
                throw GatewayConfigError(key: name, source: .environment(name), message: "unknown configuration variable\(suggestion(for: name, among: keys.map(\.environmentVariable)))")
            }
            environmentLayer[key.name] = (name, .string(value))
        }

        var flagLayer: [String: (String, ConfigValue)] = [:]
        for (name, value) in overrides {
            guard let key = key(named: name) else {
                let shown = name.hasPrefix("--") ? name : (name.contains("-") ? "--" + name : name)
                throw GatewayConfigError(key: shown, source: .flag(shown), message: "unknown option\(suggestion(for: name, among: keys.map(\.name) + keys.map(\.flag)))")
            }
            flagLayer[key.name] = (key.flag, .string(value))
        }
        for (name, values) in listOverrides {
            guard let key = key(named: name) else {
                let shown = name.hasPrefix("--") ? name : "--" + name
                throw GatewayConfigError(key: shown, source: .flag(shown), message: "unknown option\(suggestion(for: name, among: keys.map(\.name) + keys.map(\.flag)))")
            }
            guard flagLayer[key.name] == nil else {
                throw GatewayConfigError(key: key.name, source: .flag(key.flag), message: "given both as a single value and as a list")
            }
            flagLayer[key.name] = (key.flag, .array(values.map { .string($0) }))
        }

        var configuration = GatewayConfiguration()
        var sources: [String: ConfigSource] = [:]
        var embeddedSet = false
        for key in keys {
            let chosen: (ConfigSource, ConfigValue)?
            if let (flag, value) = flagLayer[key.name] {
                chosen = (.flag(flag), value)
            } else if let (variable, value) = environmentLayer[key.name] {
                chosen = (.environment(variable), value)
            } else if let layer = layers.last, let value = layer.1[key.name] {
                chosen = (layer.0, value)
            } else {
                chosen = nil
            }
            guard let (source, value) = chosen else { continue }
            sources[key.name] = source
            do {
                try configuration.apply(key, value)
            } catch {
                throw GatewayConfigError(key: key.name, source: source, message: error.message)
            }
            if key.name == "embeddedBroker" { embeddedSet = true }
        }
        if !embeddedSet { configuration.embeddedBroker = configuration.brokers.isEmpty }
        try configuration.validateTogether(sources)
        return configuration
    }

    /// Reads a JSON object file; unknown keys are errors.
    static func readFile(_ path: String) throws(GatewayConfigError) -> [String: ConfigValue] {
        let source = ConfigSource.file(path)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw GatewayConfigError(key: "config", source: source, message: "cannot read the file (missing or not readable)")
        }
        let value: ConfigValue
        do {
            value = try JSONDecoder().decode(ConfigValue.self, from: data)
        } catch {
            throw GatewayConfigError(key: "config", source: source, message: "not valid JSON (\(Self.describe(error)))")
        }
        guard case .object(let members) = value else {
            throw GatewayConfigError(key: "config", source: source, message: "the file must hold one JSON object, not \(value.typeName)")
        }
        var result: [String: ConfigValue] = [:]
        for (name, member) in members where !name.hasPrefix("_") {
            guard keys.contains(where: { $0.name == name }) else {
                throw GatewayConfigError(key: name, source: source, message: "unknown key\(suggestion(for: name, among: keys.map(\.name)))")
            }
            result[name] = member
        }
        return result
    }

    private static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            return (context.underlyingError.map { "\($0.localizedDescription)" }) ?? context.debugDescription
        }
        return "\(error)"
    }

    /// `, did you mean "x"?` for the closest known spelling within edit distance 3.
    static func suggestion(for name: String, among candidates: [String]) -> String {
        let normalized = name.lowercased()
        let best = candidates.map { ($0, editDistance(normalized, $0.lowercased())) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= 3 else { return "" }
        return "; did you mean \"\(best.0)\"?"
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = previous
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }

    // MARK: One key

    private mutating func apply(_ key: Key, _ value: ConfigValue) throws(ValueError) {
        switch key.name {
        case "nodeName":
            let name = try Self.string(value)
            guard (1...255).contains(name.utf8.count),
                name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._@:-".contains($0)) })
            else { throw ValueError("\"\(name)\" is not a valid node name (1-255 characters of A-Z a-z 0-9 . _ @ : -)") }
            nodeName = name
        case "clusterListen": clusterListen = try HostPort.parse(try Self.string(value), allowZero: true)
        case "seeds": seeds = try Self.list(value).map { text throws(ValueError) in try HostPort.parse(text) }
        case "dnsDiscovery": dnsDiscovery = try Self.list(value).map { text throws(ValueError) in try HostPort.parse(text) }
        case "httpListen": httpListen = try HostPort.parse(try Self.string(value), allowZero: true)
        case "brokers":
            var parsed: [BrokerEndpoint] = []
            for (index, text) in try Self.list(value).enumerated() {
                do { parsed.append(try BrokerEndpoint.parse(text)) } catch {
                    throw ValueError("entry \(index + 1): \(error.message)")
                }
            }
            brokers = parsed
        case "brokerCAFile": brokerCAFile = try Self.readableFile(value)
        case "brokerAdminUsername":
            let user = try Self.string(value)
            guard !user.isEmpty, user.utf8.count <= 256, !user.contains(where: { $0.isWhitespace || $0 == ":" }) else {
                throw ValueError("\"\(user)\" is not a valid MQTT user name (1-256 characters, no spaces or ':')")
            }
            brokerAdminUsername = user
        case "brokerAdminPassword":
            let password = try Self.string(value)
            guard !password.isEmpty else { throw ValueError("must not be empty") }
            brokerAdminPassword = Secret(password)
        case "clusterTLSCertificate": clusterTLSCertificate = try Self.readableFile(value)
        case "clusterTLSKey": clusterTLSKey = try Self.readableFile(value)
        case "clusterTLSCA": clusterTLSCA = try Self.readableFile(value)
        case "clusterSecret":
            let secret = try Self.string(value)
            guard !secret.isEmpty else { throw ValueError("must not be empty") }
            guard secret.utf8.count >= 16 else { throw ValueError("must be at least 16 bytes (got \(secret.utf8.count))") }
            clusterSecret = Secret(secret)
        case "apiToken":
            let token = try Self.string(value)
            guard !token.isEmpty else { throw ValueError("must not be empty (leave it out for no token)") }
            guard token.count >= 8 else { throw ValueError("must be at least 8 characters") }
            guard !token.contains(where: \.isWhitespace) else { throw ValueError("must not contain whitespace") }
            apiToken = Secret(token)
        case "topicPrefix":
            let prefix = try Self.string(value)
            guard !prefix.isEmpty, !prefix.contains(where: { "/+#".contains($0) }), !prefix.hasPrefix("$"), prefix.utf8.count <= 64 else {
                throw ValueError("\"\(prefix)\" is not a valid topic prefix (one topic level: no /, +, #, not starting with $)")
            }
            topicPrefix = prefix
        case "shareGroup":
            let group = try Self.string(value)
            guard !group.isEmpty, group.utf8.count <= 64, group.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                throw ValueError("\"\(group)\" is not a valid share group name (letters, digits, - and _)")
            }
            shareGroup = group
        case "heartbeatInterval": heartbeatInterval = try Self.duration(value)
        case "failureTimeout": failureTimeout = try Self.duration(value)
        case "drainTimeout": drainTimeout = try Self.duration(value)
        case "logLevel":
            let text = try Self.string(value).lowercased()
            guard let level = GatewayLogLevel(rawValue: text) else {
                throw ValueError("\"\(text)\" is not a log level (\(GatewayLogLevel.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            logLevel = level
        case "allowNodes": allowNodes = try Self.nodePatterns(value)
        case "denyNodes": denyNodes = try Self.nodePatterns(value)
        case "maxPayloadBytes":
            let bytes = try Self.integer(value)
            guard (1...268_435_455).contains(bytes) else { throw ValueError("\(bytes) is out of range 1-268435455") }
            maxPayloadBytes = bytes
        case "ingressLaneCapacity":
            let capacity = try Self.integer(value)
            guard (16...1_048_576).contains(capacity) else { throw ValueError("\(capacity) is out of range 16-1048576") }
            ingressLaneCapacity = capacity
        case "embeddedBroker": embeddedBroker = try Self.boolean(value)
        case "embeddedBrokerPort":
            let port = try Self.integer(value)
            guard (0...65535).contains(port) else { throw ValueError("port \(port) is out of range 0-65535") }
            embeddedBrokerPort = port
        case "dataDirectory":
            let path = try Self.string(value)
            guard !path.isEmpty else { throw ValueError("must not be empty") }
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                throw ValueError("\"\(path)\" exists and is not a directory")
            }
            dataDirectory = path
        case "store": store = try StoreLocation.parse(try Self.string(value))
        case "writeBehindInterval":
            let interval = try Self.duration(value)
            guard interval >= .milliseconds(10), interval <= .seconds(1) else {
                throw ValueError("\(Self.format(interval)) is out of range 10ms-1s")
            }
            writeBehindInterval = interval
        case "eventRetention":
            let retention = try Self.duration(value)
            guard retention >= .seconds(1) else {
                throw ValueError("\(Self.format(retention)) is shorter than 1s")
            }
            eventRetention = retention
        case "eventMaxStored":
            let count = try Self.integer(value)
            guard (1_000...1_000_000_000).contains(count) else { throw ValueError("\(count) is out of range 1000-1000000000") }
            eventMaxStored = count
        case "eventBufferSize":
            let count = try Self.integer(value)
            guard (1_000...10_000_000).contains(count) else { throw ValueError("\(count) is out of range 1000-10000000") }
            eventBufferSize = count
        case "eventsToBroker": eventsToBroker = try Self.boolean(value)
        default:
            preconditionFailure("key \(key.name) is in the table but has no parser")
        }
    }

    /// Rules that involve several keys.
    private func validateTogether(_ sources: [String: ConfigSource]) throws(GatewayConfigError) {
        let tls: [(key: String, path: String?)] = [
            ("clusterTLSCertificate", clusterTLSCertificate), ("clusterTLSKey", clusterTLSKey), ("clusterTLSCA", clusterTLSCA),
        ]
        if let given = tls.first(where: { $0.path != nil }), let missing = tls.first(where: { $0.path == nil }) {
            throw GatewayConfigError(
                key: missing.key, source: nil,
                message: "is required when \(given.key) is set (from \(sources[given.key]!)): cluster TLS takes a certificate, its key and the cluster CA")
        }
        if (!seeds.isEmpty || !dnsDiscovery.isEmpty) && clusterSecret == nil {
            let because = seeds.isEmpty ? "dnsDiscovery" : "seeds"
            throw GatewayConfigError(
                key: "clusterSecret", source: sources["clusterSecret"],
                message: "is required when \(because) is set (from \(sources[because]!)): peers authenticate with it")
        }
        if failureTimeout <= heartbeatInterval {
            throw GatewayConfigError(
                key: "failureTimeout", source: sources["failureTimeout"] ?? .defaultValue,
                message: "\(Self.format(failureTimeout)) must be longer than heartbeatInterval \(Self.format(heartbeatInterval))")
        }
        if heartbeatInterval < .milliseconds(10) {
            throw GatewayConfigError(key: "heartbeatInterval", source: sources["heartbeatInterval"], message: "must be at least 10ms")
        }
        if clusterListen.port != 0 && clusterListen == httpListen {
            throw GatewayConfigError(key: "httpListen", source: sources["httpListen"] ?? .defaultValue, message: "\(httpListen) is also clusterListen")
        }
        if embeddedBroker && !brokers.isEmpty {
            throw GatewayConfigError(
                key: "embeddedBroker", source: sources["embeddedBroker"],
                message: "cannot be true while brokers are configured (\(brokers.count) from \(sources["brokers"]!))")
        }
        if (brokerAdminUsername == nil) != (brokerAdminPassword == nil) {
            let given = brokerAdminUsername == nil ? "brokerAdminPassword" : "brokerAdminUsername"
            let missing = brokerAdminUsername == nil ? "brokerAdminUsername" : "brokerAdminPassword"
            throw GatewayConfigError(
                key: missing, source: nil, message: "is required when \(given) is set (from \(sources[given]!)): the admin login takes both")
        }
        if brokerAdminUsername != nil && brokers.isEmpty {
            throw GatewayConfigError(
                key: "brokerAdminUsername", source: sources["brokerAdminUsername"],
                message: "is for external brokers (brokers); the embedded broker's device logins are always managed")
        }
        if !embeddedBroker && brokers.isEmpty {
            throw GatewayConfigError(key: "brokers", source: nil, message: "no broker: configure brokers, or set embeddedBroker to true")
        }
        if embeddedBroker && embeddedBrokerPort != 0 && [clusterListen.port, httpListen.port].contains(embeddedBrokerPort)
            && ["127.0.0.1", "localhost", "0.0.0.0"].contains(clusterListen.port == embeddedBrokerPort ? clusterListen.host : httpListen.host)
        {
            throw GatewayConfigError(key: "embeddedBrokerPort", source: sources["embeddedBrokerPort"] ?? .defaultValue, message: "port \(embeddedBrokerPort) is already used by clusterListen or httpListen")
        }
    }

    // MARK: Value parsers

    /// A path to a file that exists and is readable now (the contents are checked by the user).
    private static func readableFile(_ value: ConfigValue) throws(ValueError) -> String {
        let path = try string(value)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
            FileManager.default.isReadableFile(atPath: path)
        else { throw ValueError("\"\(path)\" does not exist or is not readable") }
        return path
    }

    private static func string(_ value: ConfigValue) throws(ValueError) -> String {
        guard case .string(let text) = value else { throw ValueError("expected a string, got \(value.typeName)") }
        return text
    }

    /// A JSON array of strings, or a comma-separated string (environment, flags). Empty entries
    /// are dropped, so `""` is the empty list.
    private static func list(_ value: ConfigValue) throws(ValueError) -> [String] {
        switch value {
        case .string(let text):
            return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        case .array(let items):
            var result: [String] = []
            for (index, item) in items.enumerated() {
                guard case .string(let text) = item else { throw ValueError("entry \(index + 1): expected a string, got \(item.typeName)") }
                result.append(text)
            }
            return result
        default:
            throw ValueError("expected an array of strings, got \(value.typeName)")
        }
    }

    private static func integer(_ value: ConfigValue) throws(ValueError) -> Int {
        switch value {
        case .number(let number):
            guard number.rounded() == number, abs(number) < 1e15 else { throw ValueError("expected an integer, got \(number)") }
            return Int(number)
        case .string(let text):
            guard let number = Int(text.trimmingCharacters(in: .whitespaces)) else { throw ValueError("expected an integer, got \"\(text)\"") }
            return number
        default:
            throw ValueError("expected an integer, got \(value.typeName)")
        }
    }

    private static func boolean(_ value: ConfigValue) throws(ValueError) -> Bool {
        switch value {
        case .bool(let flag): return flag
        case .string(let text):
            switch text.lowercased() {
            case "true", "yes", "1", "on": return true
            case "false", "no", "0", "off": return false
            default: throw ValueError("expected true or false, got \"\(text)\"")
            }
        default:
            throw ValueError("expected true or false, got \(value.typeName)")
        }
    }

    /// `250ms`, `1.5s`, `2m`, `1h` (a unit is required).
    private static func duration(_ value: ConfigValue) throws(ValueError) -> Duration {
        guard case .string(let raw) = value else {
            throw ValueError("expected a duration string such as \"1500ms\" or \"30s\", got \(value.typeName)")
        }
        let text = raw.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Double)] = [("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
        for (unit, seconds) in units where text.hasSuffix(unit) {
            let number = text.dropLast(unit.count)
            guard let amount = Double(number), amount.isFinite, amount >= 0 else { break }
            let milliseconds = (amount * seconds * 1000).rounded()
            guard milliseconds <= 86_400_000 else { throw ValueError("\"\(raw)\" is longer than a day") }
            guard milliseconds > 0 else { throw ValueError("\"\(raw)\" must be positive") }
            return .milliseconds(Int64(milliseconds))
        }
        throw ValueError("\"\(raw)\" is not a duration (a number with a unit: ms, s, m or h, e.g. \"1500ms\", \"30s\")")
    }

    /// Node names or `/regex/` patterns (the regex must compile).
    private static func nodePatterns(_ value: ConfigValue) throws(ValueError) -> [String] {
        let patterns = try list(value)
        for pattern in patterns where pattern.count >= 2 && pattern.hasPrefix("/") && pattern.hasSuffix("/") {
            do { _ = try NSRegularExpression(pattern: String(pattern.dropFirst().dropLast())) } catch {
                throw ValueError("\"\(pattern)\" is not a valid regular expression")
            }
        }
        return patterns
    }
}
