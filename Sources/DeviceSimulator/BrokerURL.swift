import Foundation

/// A broker address `mqtt://[USER[:PASS]@]HOST[:PORT]` or `mqtts://...` (TLS, default port 8883).
///
/// User name and password are percent-decoded. In the simulator the placeholder `{id}` in either
/// is replaced by each device's id, so a broker with the per-device ACL `pattern readwrite
/// devices/%u/#` can be used with `mqtt://{id}:secret@host:1883`.
public struct BrokerURL: Sendable, Hashable, CustomStringConvertible {
    public var tls: Bool
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?

    public init(tls: Bool = false, host: String, port: Int, username: String? = nil, password: String? = nil) {
        self.tls = tls
        self.host = host
        self.port = port
        self.username = username
        self.password = password
    }

    /// Parses `text`; `source` names where it came from (for example `--broker`) in errors.
    public static func parse(_ text: String, source: String = "broker") throws -> BrokerURL {
        func fail(_ why: String) -> SimulatorConfigError {
            SimulatorConfigError("\(source): \"\(redacted(text))\" is not a broker URL: \(why) (expected mqtt://USER:PASS@HOST:PORT or mqtts://...)")
        }
        let tls: Bool
        var rest: Substring
        if text.hasPrefix("mqtt://") {
            tls = false
            rest = text.dropFirst(7)
        } else if text.hasPrefix("mqtts://") {
            tls = true
            rest = text.dropFirst(8)
        } else {
            throw fail("the scheme must be mqtt:// or mqtts://")
        }
        if let slash = rest.firstIndex(of: "/") {
            guard rest[slash...] == "/" else { throw fail("no path allowed") }
            rest = rest[..<slash]
        }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                username = String(userInfo[..<colon]).removingPercentEncoding
                password = String(userInfo[userInfo.index(after: colon)...]).removingPercentEncoding
                guard password != nil else { throw fail("bad percent-encoding in the password") }
            } else {
                username = String(userInfo).removingPercentEncoding
            }
            guard let name = username, !name.isEmpty else { throw fail("empty or badly encoded user name") }
        }
        var host = String(rest)
        var port = tls ? 8883 : 1883
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw fail("unclosed [ in the host") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let value = Int(after.dropFirst()) else { throw fail("bad port") }
                port = value
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let value = Int(rest[rest.index(after: colon)...]) else { throw fail("the port is not a number") }
            port = value
        }
        guard !host.isEmpty else { throw fail("missing host") }
        guard (1...65535).contains(port) else { throw fail("port \(port) is out of range 1-65535") }
        return BrokerURL(tls: tls, host: host, port: port, username: username, password: password)
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        var text = tls ? "mqtts://" : "mqtt://"
        if let username {
            text += username
            if password != nil { text += ":***" }
            text += "@"
        }
        text += host.contains(":") ? "[\(host)]" : host
        return text + ":\(port)"
    }

    /// `text` with anything between `://` and `@` after the first `:` replaced by `***`.
    static func redacted(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text.range(of: "@", options: .backwards),
            scheme.upperBound < at.lowerBound,
            let colon = text[scheme.upperBound..<at.lowerBound].firstIndex(of: ":")
        else { return text }
        return String(text[..<text.index(after: colon)]) + "***" + String(text[at.lowerBound...])
    }

    /// The user name for device `id` (`{id}` substituted).
    public func username(for id: String) -> String? { username?.replacingOccurrences(of: "{id}", with: id) }
    /// The password for device `id` (`{id}` substituted).
    public func password(for id: String) -> String? { password?.replacingOccurrences(of: "{id}", with: id) }
}
