import Foundation

/// A `HOST:PORT` address (`[v6]:PORT` for IPv6 literals).
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; `allowZero` admits port 0 (listen addresses: any free port).
    public static func parse(_ text: String, allowZero: Bool = false) throws(ValueError) -> HostPort {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let host: String
        let portText: Substring
        if trimmed.hasPrefix("[") {
            guard let close = trimmed.firstIndex(of: "]") else { throw ValueError("\"\(text)\" is not HOST:PORT: unclosed [") }
            host = String(trimmed[trimmed.index(after: trimmed.startIndex)..<close])
            let rest = trimmed[trimmed.index(after: close)...]
            guard rest.hasPrefix(":") else { throw ValueError("\"\(text)\" is not HOST:PORT: missing :PORT") }
            portText = rest.dropFirst()
        } else {
            guard let colon = trimmed.lastIndex(of: ":") else { throw ValueError("\"\(text)\" is not HOST:PORT: missing :PORT") }
            host = String(trimmed[..<colon])
            portText = trimmed[trimmed.index(after: colon)...]
            if host.contains(":") { throw ValueError("\"\(text)\" is not HOST:PORT: write IPv6 addresses as [ADDRESS]:PORT") }
        }
        guard !host.isEmpty else { throw ValueError("\"\(text)\" is not HOST:PORT: missing host") }
        guard host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_" || $0 == "%" }) else {
            throw ValueError("\"\(text)\" is not HOST:PORT: bad character in host \"\(host)\"")
        }
        guard let port = Int(portText) else { throw ValueError("\"\(text)\" is not HOST:PORT: port \"\(portText)\" is not a number") }
        let range = allowZero ? 0...65535 : 1...65535
        guard range.contains(port) else {
            throw ValueError("\"\(text)\" is not HOST:PORT: port \(port) is out of range \(range.lowerBound)-65535")
        }
        return HostPort(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A secret string (cluster secret, API token, broker password). Its `description` never shows
/// the value, so configurations can be logged.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The secret itself. Do not log it.
    public let value: String
    public init(_ value: String) { self.value = value }
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

/// One MQTT broker the gateway connects to: `mqtt://USER:PASS@HOST:PORT` or `mqtts://...`
/// (TLS; default port 8883, plain default 1883). User name and password are percent-decoded.
public struct BrokerEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var tls: Bool
    public var host: String
    public var port: Int
    public var username: String?
    public var password: Secret?

    public init(tls: Bool = false, host: String, port: Int, username: String? = nil, password: Secret? = nil) {
        self.tls = tls
        self.host = host
        self.port = port
        self.username = username
        self.password = password
    }

    public static func parse(_ text: String) throws(ValueError) -> BrokerEndpoint {
        let shown = redacted(text)
        func fail(_ why: String) -> ValueError {
            ValueError("\"\(shown)\" is not a broker URL: \(why) (expected mqtt://USER:PASS@HOST:PORT or mqtts://USER:PASS@HOST:PORT)")
        }
        var tls = false
        var rest: Substring
        if text.hasPrefix("mqtt://") {
            rest = text.dropFirst(7)
        } else if text.hasPrefix("mqtts://") {
            tls = true
            rest = text.dropFirst(8)
        } else {
            throw fail("the scheme must be mqtt:// or mqtts://")
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.contains("/") else { throw fail("no path allowed") }
        var username: String?
        var password: Secret?
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let userPart = userInfo.firstIndex(of: ":").map { userInfo[..<$0] } ?? userInfo
            guard let user = String(userPart).removingPercentEncoding, !user.isEmpty else { throw fail("empty or badly encoded user name") }
            username = user
            if let colon = userInfo.firstIndex(of: ":") {
                guard let pass = String(userInfo[userInfo.index(after: colon)...]).removingPercentEncoding else {
                    throw fail("badly encoded password")
                }
                password = Secret(pass)
            }
        }
        let defaultPort = tls ? 8883 : 1883
        let hasPort = rest.hasPrefix("[") ? rest.contains("]:") : rest.contains(":")
        let address: HostPort
        do {
            address = try HostPort.parse(hasPort ? String(rest) : "\(rest):\(defaultPort)")
        } catch {
            throw fail(error.message)
        }
        return BrokerEndpoint(tls: tls, host: address.host, port: address.port, username: username, password: password)
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        var text = tls ? "mqtts://" : "mqtt://"
        if let username {
            text += username
            if password != nil { text += ":***" }
            text += "@"
        }
        return text + HostPort(host: host, port: port).description
    }

    static func redacted(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text.range(of: "@", options: .backwards),
            scheme.upperBound < at.lowerBound,
            let colon = text[scheme.upperBound..<at.lowerBound].firstIndex(of: ":")
        else { return text }
        return String(text[...colon]) + "***" + String(text[at.lowerBound...])
    }
}

/// Log levels, as swift-log names them.
public enum GatewayLogLevel: String, Sendable, Hashable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

/// What is wrong with one value (the loader adds the key and the source).
public struct ValueError: Error, Sendable, Hashable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// Where a node keeps its durable state: the embedded SQLite file in its data directory (the
/// default), or a PostgreSQL database shared by every node.
public enum StoreLocation: Sendable, Hashable, CustomStringConvertible {
    /// `sqlite`: `gateway.sqlite` in ``GatewayConfiguration/dataDirectory``.
    case sqlite
    /// `postgresql://USER:PASS@HOST:PORT/DB[?sslmode=disable|prefer|require]`.
    case postgresql(PostgresEndpoint)

    public static func parse(_ text: String) throws(ValueError) -> StoreLocation {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.lowercased() == "sqlite" { return .sqlite }
        if trimmed.hasPrefix("postgresql://") || trimmed.hasPrefix("postgres://") { return .postgresql(try PostgresEndpoint.parse(trimmed)) }
        throw ValueError("\"\(BrokerEndpoint.redacted(trimmed))\" is not a store: use sqlite, or postgresql://USER:PASS@HOST:PORT/DATABASE")
    }

    public var description: String {
        switch self {
        case .sqlite: return "sqlite"
        case .postgresql(let endpoint): return endpoint.description
        }
    }
}

/// A PostgreSQL (or wire-compatible) database: `postgresql://USER:PASS@HOST:PORT/DB`, default port
/// 5432, user name and password percent-decoded, `?sslmode=disable|prefer|require` (default
/// `disable`).
public struct PostgresEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String
    public var password: Secret?
    public var database: String
    /// `disable`, `prefer` or `require`.
    public var sslMode: String

    public init(host: String, port: Int = 5432, username: String, password: Secret? = nil, database: String, sslMode: String = "disable") {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.sslMode = sslMode
    }

    public static func parse(_ text: String) throws(ValueError) -> PostgresEndpoint {
        let shown = BrokerEndpoint.redacted(text)
        func fail(_ why: String) -> ValueError {
            ValueError("\"\(shown)\" is not a PostgreSQL URL: \(why) (expected postgresql://USER:PASS@HOST:PORT/DATABASE)")
        }
        guard let scheme = text.range(of: "://") else { throw fail("no scheme") }
        var rest = text[scheme.upperBound...]
        var sslMode = "disable"
        if let question = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: question)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, parts[0] == "sslmode" else { throw fail("unknown parameter \"\(pair)\" (only sslmode is known)") }
                guard ["disable", "prefer", "require"].contains(parts[1]) else { throw fail("sslmode must be disable, prefer or require") }
                sslMode = parts[1]
            }
            rest = rest[..<question]
        }
        guard let at = rest.lastIndex(of: "@") else { throw fail("missing USER@") }
        let userInfo = rest[..<at]
        rest = rest[rest.index(after: at)...]
        let userPart = userInfo.firstIndex(of: ":").map { userInfo[..<$0] } ?? userInfo
        guard let user = String(userPart).removingPercentEncoding, !user.isEmpty else { throw fail("empty or badly encoded user name") }
        var password: Secret?
        if let colon = userInfo.firstIndex(of: ":") {
            guard let pass = String(userInfo[userInfo.index(after: colon)...]).removingPercentEncoding else { throw fail("badly encoded password") }
            password = Secret(pass)
        }
        guard let slash = rest.firstIndex(of: "/") else { throw fail("missing /DATABASE") }
        let database = String(rest[rest.index(after: slash)...])
        guard !database.isEmpty, !database.contains("/") else { throw fail("missing or bad database name") }
        let hostPart = rest[..<slash]
        let hasPort = hostPart.hasPrefix("[") ? hostPart.contains("]:") : hostPart.contains(":")
        let address: HostPort
        do {
            address = try HostPort.parse(hasPort ? String(hostPart) : "\(hostPart):5432")
        } catch {
            throw fail(error.message)
        }
        return PostgresEndpoint(host: address.host, port: address.port, username: user, password: password, database: database, sslMode: sslMode)
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        var text = "postgresql://\(username)"
        if password != nil { text += ":***" }
        text += "@\(HostPort(host: host, port: port))/\(database)"
        if sslMode != "disable" { text += "?sslmode=\(sslMode)" }
        return text
    }
}
