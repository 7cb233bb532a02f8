import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import SwarmJSON
import Synchronization
import Testing

// Event-stream test helpers shared by GatewayHTTPTests and (through a link to this file)
// SwarmGatewayTests: a Server-Sent Events reader and a webhook receiver, both real HTTP.

/// One Server-Sent Events message.
struct SSEMessage: Sendable, Hashable {
    var id: String?
    var event: String?
    var data: String?
    var json: JSONValue? { data.flatMap { try? JSONValue.parse($0) } }
}

/// Reads `GET {path}` on `port` as Server-Sent Events until `done(messages)` holds (or
/// `timeout`), then closes the connection. Returns the status and the messages (comments left out).
func readEvents(
    port: Int, _ path: String, headers: [(String, String)] = [], timeout: Duration = .seconds(30), until done: @escaping @Sendable ([SSEMessage]) -> Bool
) async throws -> (status: Int, contentType: String?, messages: [SSEMessage], comments: Int) {
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    let prepared = request
    let result = Locked<(status: Int, contentType: String?, messages: [SSEMessage], comments: Int)>((0, nil, [], 0))
    do {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let response = try await client.execute(prepared, timeout: .seconds(Int64(timeout.components.seconds) + 5))
                result.withLock {
                    $0.status = Int(response.status.code)
                    $0.contentType = response.headers.first(name: "content-type")
                }
                var text = ""
                for try await chunk in response.body {
                    text += String(buffer: chunk)
                    while let range = text.range(of: "\n\n") {
                        let block = String(text[..<range.lowerBound])
                        text = String(text[range.upperBound...])
                        var message = SSEMessage()
                        var comment = false
                        for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                            if line.hasPrefix(":") { comment = true } else if line.hasPrefix("id: ") { message.id = String(line.dropFirst(4)) } else if line.hasPrefix("data: ") {
                                message.data = String(line.dropFirst(6))
                            } else if line.hasPrefix("event: ") {
                                message.event = String(line.dropFirst(7))
                            }
                        }
                        let finished = result.withLock { state -> Bool in
                            if message.data != nil { state.messages.append(message) } else if comment { state.comments += 1 }
                            return done(state.messages)
                        }
                        if finished { return }
                    }
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
            }
            try await group.next()
            group.cancelAll()
        }
    } catch {
        try? await client.shutdown()
        if result.withLock({ $0.status }) != 0 { return result.withLock { $0 } }
        throw error
    }
    try? await client.shutdown()
    return result.withLock { $0 }
}

/// A value behind a lock, shareable between tasks.
final class Locked<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func withLock<T>(_ body: (inout Value) -> T) -> T { value.withLock { body(&$0) } }
}

/// A webhook receiver: a real HTTP server that answers 500 to the first `failures` POSTs, then
/// 200, and records every body with its signature header.
final class WebhookReceiver: Sendable {
    struct Delivery: Sendable {
        var body: [UInt8]
        var signature: String?
        var webhook: String?
    }

    let failures: Int
    private let state = Mutex<(attempts: Int, accepted: [Delivery], port: Int?)>((0, [], nil))

    init(failures: Int) { self.failures = failures }

    var attempts: Int { state.withLock { $0.attempts } }
    var accepted: [Delivery] { state.withLock { $0.accepted } }

    /// The events of every accepted batch, in delivery order.
    var events: [JSONValue] {
        accepted.flatMap { (try? JSONValue.parse($0.body))?.arrayValue ?? [] }
    }

    func run(_ body: @Sendable (Int) async throws -> Void) async throws {
        let router = Router()
        router.post("/hook") { request, _ -> Response in
            let buffer = try await request.body.collect(upTo: 16 * 1024 * 1024)
            let delivery = Delivery(
                body: Array(buffer.readableBytesView), signature: request.headers[HTTPField.Name("X-Swarm-Signature")!],
                webhook: request.headers[HTTPField.Name("X-Swarm-Webhook")!])
            let accept = self.state.withLock { state -> Bool in
                state.attempts += 1
                guard state.attempts > self.failures else { return false }
                state.accepted.append(delivery)
                return true
            }
            return Response(status: accept ? .ok : .internalServerError)
        }
        let ports = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in ports.continuation.yield(channel.localAddress?.port ?? 0) },
            logger: { var logger = Logger(label: "test.receiver"); logger.logLevel = .critical; return logger }())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            var iterator = ports.stream.makeAsyncIterator()
            let port = try #require(await iterator.next())
            var failure: (any Error)?
            do { try await body(port) } catch { failure = error }
            group.cancelAll()
            _ = try? await group.next()
            if let failure { throw failure }
        }
    }
}

