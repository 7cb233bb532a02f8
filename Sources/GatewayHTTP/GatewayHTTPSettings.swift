import Logging

/// Configuration of one node's backend HTTP API (``GatewayHTTPServer``).
public struct GatewayHTTPSettings: Sendable {
    /// Address to listen on. Default `127.0.0.1`.
    public var host = "127.0.0.1"
    /// Port to listen on; 0 picks a free port (read it back with
    /// ``GatewayHTTPServer/listeningPort()``). Default 8080.
    public var port = 8080
    /// The bearer token every `/v1` request must carry (`Authorization: Bearer <token>`); nil or
    /// empty: no authentication. `/metrics`, `/healthz` and `/readyz` are always open. The token is
    /// never logged.
    public var apiToken: String?
    /// Largest accepted request body in bytes (larger: 413). Default 256 KiB.
    public var maxBodyBytes = 256 * 1024
    /// Largest `timeout` query parameter accepted in milliseconds (larger: 400). Default 60 000.
    public var maxTimeoutMillis = 60_000
    /// Logger of the HTTP layer (and of Hummingbird).
    public var logger = Logger(label: "swarm.gateway.http")

    /// Defaults: `127.0.0.1:8080`, no token, 256 KiB bodies.
    public init(host: String = "127.0.0.1", port: Int = 8080, apiToken: String? = nil) {
        self.host = host
        self.port = port
        self.apiToken = apiToken
    }
}
