import Foundation
import Gateway
import HTTPTypes
import Hummingbird
import NIOCore
import SwarmCore
import SwarmJSON
import SwarmNode
import Synchronization

/// `GET /v1/events` (Server-Sent Events) and the webhook routes (docs/gateway.md, “Events”).
extension GatewayAPI {
    static let lastEventID = HTTPField.Name("Last-Event-ID")!

    func addEventRoutes(to router: Router<BasicRequestContext>) {
        let gateway = self.gateway

        router.get("/v1/events") { request, _ -> Response in
            let filter = try Self.eventFilter(request)
            let hub = gateway.events
            let cursor: EventKey
            // Last-Event-ID first: a browser's EventSource reconnects to the same URL with it.
            if let text = request.headers[Self.lastEventID] ?? request.uri.queryParameters["after"].map(String.init) {
                guard let parsed = EventKey(cursor: text) else {
                    throw APIError(.badRequest, code: "invalidCursor", "a cursor is the id of an event, {time}-{device} (got \(text.prefix(100)))")
                }
                cursor = parsed
            } else {
                cursor = hub.head
            }
            let horizon = hub.horizon
            if cursor < horizon {
                throw APIError(
                    .gone, code: "cursorExpired",
                    "events after \(cursor) are no longer kept on \(gateway.node.id.name) (retention \(hub.settings.retention)); the oldest cursor served is \(horizon)",
                    details: ["horizon": .string(horizon.description)])
            }
            let heartbeat = hub.settings.heartbeat
            let node = gateway.node.id.name
            self.metrics.eventStreams.add(1, ordering: .relaxed)
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"],
                body: ResponseBody { writer in
                    defer { self.metrics.eventStreams.subtract(1, ordering: .relaxed) }
                    try await Self.stream(hub: hub, from: cursor, filter: filter, heartbeat: heartbeat, node: node, writer: &writer)
                    try await writer.finish(nil)
                })
        }

        router.post("/v1/webhooks") { request, _ -> Response in
            guard let body = try await self.jsonBody(request) else { throw APIError.invalidJSON("a webhook body {\"url\", \"secret\", \"types\"?, \"group\"?} is required") }
            let (url, types, group, query, secret) = try Self.webhookBody(body)
            let status = try await gateway.createWebhook(url: url, types: types, group: group, where: query, secret: secret)
            return try .json(encoding: status, status: .created)
        }

        router.get("/v1/webhooks") { _, _ -> Response in
            let list = await gateway.webhooks()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let items = try list.map { try JSONValue.parse(Array(encoder.encode($0))) }
            return .json(["webhooks": .array(items), "count": .int(Int64(items.count))])
        }

        router.get("/v1/webhooks/:id") { _, context -> Response in
            let id = try Self.parameter(context, "id")
            guard let status = try await gateway.webhook(id) else { throw Self.unknownWebhook(id) }
            return try .json(encoding: status)
        }

        router.delete("/v1/webhooks/:id") { _, context -> Response in
            let id = try Self.parameter(context, "id")
            guard try await gateway.deleteWebhook(id) else { throw Self.unknownWebhook(id) }
            return Response(status: .noContent)
        }
    }

    static func unknownWebhook(_ id: String) -> APIError {
        APIError(.notFound, code: "unknownWebhook", "no webhook \(id.prefix(100))")
    }

    /// The stream: events after `cursor` as `id: <key>` + `data: <event JSON>` messages, a
    /// comment every `heartbeat` of silence (with the cursor as an `id:` when a filter skipped
    /// events meanwhile, so a reconnect does not start further back), until the client goes
    /// or the node stops. Memory per stream: one read (at most 256 events); a client slower
    /// than the stream reads further and further behind, from the store once memory has moved
    /// on, and is told `event: error` (`cursorExpired`) when it falls out of the retention
    /// window.
    static func stream(
        hub: EventHub, from cursor: EventKey, filter: EventFilter, heartbeat: Duration, node: String, writer: inout any ResponseBodyWriter
    ) async throws {
        var cursor = cursor
        var announced = cursor
        var lastWrite = ContinuousClock.now
        try await writer.write(ByteBuffer(string: ": swarm-gateway event stream from \(node), after \(cursor)\nretry: 1000\n\n"))
        while !hub.isClosed && !Task.isCancelled {
            switch try await hub.read(after: cursor, filter: filter, limit: 256) {
            case .expired(let horizon):
                let data = JSONValue.object([
                    "code": "cursorExpired", "error": .string("the stream fell behind the retention window after \(cursor)"),
                    "horizon": .string(horizon.description),
                ]).serialized()
                var buffer = ByteBuffer(string: "event: error\ndata: ")
                buffer.writeBytes(data)
                buffer.writeString("\n\n")
                try await writer.write(buffer)
                return
            case .events(let events, let next):
                cursor = next
                guard !events.isEmpty else { break }
                var buffer = ByteBuffer()
                buffer.reserveCapacity(events.reduce(0) { $0 + $1.json.count + 64 })
                for event in events {
                    buffer.writeString("id: ")
                    buffer.writeString(event.key.description)
                    buffer.writeString("\ndata: ")
                    buffer.writeBytes(event.json)
                    buffer.writeString("\n\n")
                }
                try await writer.write(buffer)
                announced = events.last!.key
                lastWrite = .now
                continue
            }
            if ContinuousClock.now - lastWrite >= heartbeat {
                try await writer.write(ByteBuffer(string: cursor > announced ? ": heartbeat\nid: \(cursor)\n\n" : ": heartbeat\n\n"))
                announced = cursor
                lastWrite = .now
            }
            let remaining = heartbeat - (ContinuousClock.now - lastWrite)
            _ = await hub.wait(after: cursor, timeout: min(remaining, .seconds(1)))
        }
    }

    /// `types=a,b`, `group=g`, `device=id[,id…]`, `where=EXPR` (the fleet-search language on the event).
    static func eventFilter(_ request: Request) throws -> EventFilter {
        let query = request.uri.queryParameters
        var filter = EventFilter()
        if let types = query["types"] {
            do {
                filter.types = try EventFilter.types(String(types))
            } catch {
                throw APIError(error)
            }
        }
        if let group = query["group"].map(String.init) {
            guard DeviceID.isValid(group) else { throw APIError(GatewayError.invalidName(group)) }
            filter.group = group
        }
        if let devices = query["device"] {
            let ids = devices.split(separator: ",").map(String.init)
            for id in ids where !DeviceID.isValid(id) { throw APIError(GatewayError.invalidName(id)) }
            guard !ids.isEmpty else { throw APIError(GatewayError.invalidName("")) }
            filter.devices = Set(ids)
        }
        if let text = query["where"] {
            do {
                filter.query = try FleetQuery.parse(String(text))
            } catch {
                throw APIError(GatewayError.invalidQuery(error))
            }
        }
        return filter
    }

    /// `{"url", "secret", "types"?, "group"?, "where"?}`.
    static func webhookBody(_ body: JSONValue) throws -> (url: String, types: [String]?, group: String?, where: String?, secret: String) {
        guard case .object(let members) = body else { throw APIError.invalidBody("a webhook body must be a JSON object") }
        if let unknown = members.keys.sorted().first(where: { !["url", "secret", "types", "group", "where"].contains($0) }) {
            throw APIError.invalidBody("unknown member '\(unknown)' in a webhook body (url, secret, types, group, where)")
        }
        guard let url = members["url"]?.stringValue else { throw APIError.invalidBody("'url' (a string) is required") }
        guard let secret = members["secret"]?.stringValue else { throw APIError.invalidBody("'secret' (a string) is required") }
        var types: [String]?
        if let value = members["types"], value != .null {
            guard case .array(let items) = value else { throw APIError.invalidBody("'types' must be an array of event types") }
            types = try items.map { item in
                guard let name = item.stringValue else { throw APIError.invalidBody("'types' must be an array of event types") }
                return name
            }
        }
        var group: String?
        if let value = members["group"], value != .null {
            guard let name = value.stringValue else { throw APIError.invalidBody("'group' must be a string") }
            group = name
        }
        var query: String?
        if let value = members["where"], value != .null {
            guard let text = value.stringValue else { throw APIError.invalidBody("'where' must be a string") }
            query = text
        }
        return (url, types, group, query, secret)
    }
}
