import Foundation
import GatewayConfig

/// A broker address `mqtt://[USER[:PASS]@]HOST[:PORT]` or `mqtts://...` (TLS, default port 8883).
///
/// User name and password are percent-decoded. In the simulator the placeholder `{id}` in either
/// is replaced by each device's id, so a broker with the strict per-device ACL
/// (`config/mosquitto.acl.example`, `pattern write devices/%u/telemetry`, …) can be used with
/// `mqtt://{id}:secret-{id}@host:1883`.
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

    /// Parses `text` with the gateway's broker-URL grammar (``BrokerEndpoint``, one parser for
    /// both); `source` names where it came from (for example `--broker`) in errors.
    public static func parse(_ text: String, source: String = "broker") throws -> BrokerURL {
        do {
            let endpoint = try BrokerEndpoint.parse(text)
            return BrokerURL(tls: endpoint.tls, host: endpoint.host, port: endpoint.port, username: endpoint.username, password: endpoint.password?.value)
        } catch {
            throw SimulatorConfigError("\(source): \(error.message)")
        }
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        BrokerEndpoint(tls: tls, host: host, port: port, username: username, password: password.map(Secret.init)).description
    }

    /// The user name for device `id` (`{id}` substituted).
    public func username(for id: String) -> String? { username?.replacingOccurrences(of: "{id}", with: id) }
    /// The password for device `id` (`{id}` substituted).
    public func password(for id: String) -> String? { password?.replacingOccurrences(of: "{id}", with: id) }
}
