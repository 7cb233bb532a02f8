import Foundation
import Gateway
import GatewayHTTP
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOCore
import ServiceLifecycle
import SwarmCore
import SwarmJSON
import SwarmNode
import Testing

// The cluster, broker and device helpers are shared with GatewayTests: Support.swift here is a
// link to Tests/GatewayTests/Support.swift.

// MARK: - HTTP

/// One node's API server in a test: the member, its server and a keep-alive client to it.
struct APINode: Sendable {
    let member: Member
    let server: GatewayHTTPServer
    let port: Int
    let drained: Inbox<Bool>

    /// A request with a fresh connection (the server's answer, body parsed as JSON when it is).
    func request(
        _ method: HTTPRequest.Method, _ uri: String, body: String? = nil, token: String? = nil, headers: HTTPFields = [:]
    ) async throws -> HTTPAnswer {
        try await request(method, uri, bytes: body.map { Array($0.utf8) }, token: token, headers: headers)
    }

    func request(
        _ method: HTTPRequest.Method, _ uri: String, bytes: [UInt8]?, token: String? = nil, headers: HTTPFields = [:]
    ) async throws -> HTTPAnswer {
        var headers = headers
        if let token { headers[.authorization] = "Bearer \(token)" }
        if bytes != nil, headers[.contentType] == nil { headers[.contentType] = "application/json" }
        let request = TestClient.Request(uri, method: method, authority: "127.0.0.1", headers: headers, body: bytes.map { ByteBuffer(bytes: $0) })
        return try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: .init(timeout: .seconds(20))) { client in
            let response = try await client.execute(request)
            return HTTPAnswer(status: response.status.code, headers: response.headers, body: response.body.map { Array($0.readableBytesView) } ?? [])
        }
    }
}

struct HTTPAnswer: Sendable, CustomStringConvertible {
    let status: Int
    let headers: HTTPFields
    let body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: JSONValue? { try? JSONValue.parse(body) }
    var description: String { "\(status) \(text.prefix(300))" }
    /// The `code` of an error answer.
    var code: String? { json?["code"]?.stringValue }
}

/// Runs a ``GatewayHTTPServer`` (port 0) for every member, in one ServiceGroup, for `body`;
/// stops them (graceful shutdown) afterwards, even on failure.
func withAPI(
    _ members: [Member], token: String? = nil, configure: @escaping @Sendable (inout GatewayHTTPSettings) -> Void = { _ in },
    _ body: @escaping @Sendable ([APINode]) async throws -> Void
) async throws {
    var servers: [(Member, GatewayHTTPServer, Inbox<Bool>)] = []
    for member in members {
        var settings = GatewayHTTPSettings(host: "127.0.0.1", port: 0, apiToken: token)
        settings.logger = quietLogger("test.http.\(member.name)")
        configure(&settings)
        let drained = Inbox<Bool>()
        servers.append((member, GatewayHTTPServer(gateway: member.gateway, settings: settings) { drained.append($0) }, drained))
    }
    let group = ServiceGroup(services: servers.map(\.1), logger: quietLogger("test.services"))
    let all = servers
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var failure: (any Error)?
        do {
            var nodes: [APINode] = []
            for (member, server, drained) in all {
                nodes.append(APINode(member: member, server: server, port: try await server.listeningPort(), drained: drained))
            }
            try await body(nodes)
        } catch {
            failure = error
        }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
        if let failure { throw failure }
    }
}
