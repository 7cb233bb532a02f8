import AsyncHTTPClient
import Gateway
import NIOCore
import NIOHTTP1

/// Webhook POSTs over `swift-server/async-http-client`: one client (connection pool, HTTP/1.1
/// keep-alive and HTTP/2, TLS through the system's trust store) per node, shared by every sink
/// that node drives. The response body is read (at most 64 KiB) and dropped.
public final class HTTPWebhookTransport: WebhookTransport {
    private let client: HTTPClient

    public init() {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60))
        configuration.redirectConfiguration = .disallow
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func post(url: String, body: [UInt8], headers: [(String, String)], timeout: Duration) async throws -> Int {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000))
        _ = try? await response.body.collect(upTo: 64 * 1024)
        return Int(response.status.code)
    }

    public func shutdown() async {
        try? await client.shutdown()
    }
}
