import Foundation
import Gateway
import GatewayStore
import HTTPTypes
import Hummingbird
import Logging
import SwarmCore
import SwarmJSON
import SwarmNode
import Synchronization

/// The backend HTTP API of one gateway node (`docs/openapi.yaml`): the routes
/// over a ``DeviceGateway`` (and its `SwarmNode`), as a Hummingbird `Router`.
///
/// Every node answers every request: device calls go to the device process wherever it runs.
/// Bodies and answers are JSON; errors are `{"error": "…", "code": "…"}` (``APIError``).
/// `/v1/…` needs `Authorization: Bearer <token>` when ``GatewayHTTPSettings/apiToken`` is set;
/// `/metrics`, `/healthz`, `/readyz` and the dashboard (`/`, `/dashboard/…`, see ``Dashboard``)
/// are open.
///
/// Most users want ``GatewayHTTPServer`` (the `Service`); this type is for embedding the routes
/// in another Hummingbird application.
public final class GatewayAPI: Sendable {
    /// The gateway served.
    public let gateway: DeviceGateway
    /// The settings.
    public let settings: GatewayHTTPSettings

    let metrics = HTTPMetrics()
    let token: [UInt8]?
    let onDrain: @Sendable (Bool) async -> Void
    private let draining = Atomic<Bool>(false)
    private let drainTask = Mutex<Task<Void, Never>?>(nil)

    /// - Parameters:
    ///   - onDrain: called once the drain started by `POST /v1/cluster/drain` has finished
    ///     (``DeviceGateway/drain(timeout:)`` returned; its result is passed). The executable
    ///     uses it to stop its service group (gateway shutdown, node shutdown, process exit).
    public init(gateway: DeviceGateway, settings: GatewayHTTPSettings, onDrain: @escaping @Sendable (Bool) async -> Void = { _ in }) {
        self.gateway = gateway
        self.settings = settings
        self.onDrain = onDrain
        if let token = settings.apiToken, !token.isEmpty { self.token = Array(token.utf8) } else { self.token = nil }
    }

    /// True once `POST /v1/cluster/drain` was accepted.
    public var drainRequested: Bool { draining.load(ordering: .relaxed) }

    /// Waits for the drain started by `POST /v1/cluster/drain` (and its `onDrain` hook) to finish;
    /// returns at once when none was started.
    public func waitForDrain() async {
        let task = drainTask.withLock { $0 }
        await task?.value
    }

    /// Starts the drain of this node (once): the gateway drains (ingress off, device processes
    /// handed over), then `onDrain` runs. Returns false when a drain was already started.
    @discardableResult
    public func startDrain() -> Bool {
        guard !draining.exchange(true, ordering: .relaxed) else { return false }
        let gateway = self.gateway
        let onDrain = self.onDrain
        let logger = settings.logger
        logger.notice("drain of \(gateway.node.id.name) requested over the API")
        let task = Task {
            let drained = await gateway.drain()
            logger.notice("drain of \(gateway.node.id.name) finished: \(drained ? "every process handed over" : "incomplete")")
            await onDrain(drained)
        }
        drainTask.withLock { $0 = task }
        return true
    }

    /// A router with every route and the API middleware (authentication, error mapping, body
    /// limit, request metrics).
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: APIMiddleware(api: self))
        addRoutes(to: router)
        return router
    }

    // MARK: - Routes

    func addRoutes(to router: Router<BasicRequestContext>) {
        let gateway = self.gateway

        router.get("/v1/devices") { request, _ -> Response in
            let (condition, limit, cursor) = try Self.searchParameters(request)
            let timeout = try self.timeout(request)
            let result = try await gateway.search(where: condition, limit: limit, cursor: cursor, timeout: timeout)
            return .json([
                "devices": .array(result.devices.map(JSONValue.string)), "next": result.next.map(JSONValue.string) ?? .null,
                "matched": .int(Int64(result.matched)),
            ])
        }

        router.get("/v1/devices/:id") { _, context -> Response in
            let id = try Self.parameter(context, "id")
            // The device process's bytes as they come (the `DeviceTwin.json` encoding): no decode.
            guard let twin = try await gateway.twinJSON(id) else { throw APIError(GatewayError.unknownDevice(id)) }
            return .twin(twin)
        }

        router.put("/v1/devices/:id") { request, context -> Response in
            let id = try Self.parameter(context, "id")
            let body = try await self.jsonBody(request) ?? .emptyObject
            let (password, tags, groups) = try Self.provisioning(body)
            let result = try await gateway.provision(id, password: password, tags: tags, groups: groups)
            return .twin(result.twin, status: result.created ? .created : .ok)
        }

        router.delete("/v1/devices/:id") { _, context -> Response in
            let id = try Self.parameter(context, "id")
            try await gateway.delete(id)
            return Response(status: .noContent)
        }

        router.patch("/v1/devices/:id/desired") { request, context -> Response in
            let id = try Self.parameter(context, "id")
            let versions = try Self.ifMatch(request)
            guard let patch = try await self.jsonBody(request) else { throw APIError.invalidJSON("a JSON merge patch body is required") }
            guard case .object = patch else { throw APIError.invalidBody("a desired-state patch must be a JSON object") }
            return .twin(try await gateway.patchDesiredJSON(id, patch, ifVersions: versions))
        }

        router.patch("/v1/devices/:id/tags") { request, context -> Response in
            let id = try Self.parameter(context, "id")
            guard let patch = try await self.jsonBody(request) else { throw APIError.invalidJSON("a JSON merge patch body is required") }
            guard case .object = patch else { throw APIError.invalidBody("a tags patch must be a JSON object") }
            return .twin(try await gateway.patchTags(id, patch))
        }

        router.post("/v1/devices/:id/commands/:name") { request, context -> Response in
            let id = try Self.parameter(context, "id")
            let name = try Self.parameter(context, "name")
            let timeout = try self.timeout(request)
            let ttl = try Self.ttl(request)
            let body = try await self.jsonBody(request) ?? .emptyObject
            if let ttl {
                let receipt = try await gateway.queueCommand(id, name: name, body: body, ttl: ttl, timeout: timeout)
                return .json(["id": .string(receipt.id), "status": .string(receipt.status)], status: .accepted)
            }
            let reply = try await gateway.command(id, name: name, body: body, timeout: timeout)
            return .json(["reply": reply])
        }

        router.get("/v1/devices/:id/commands") { _, context -> Response in
            let id = try Self.parameter(context, "id")
            let commands = try await gateway.queuedCommands(id)
            return try .json(encoding: ["commands": commands])
        }

        // `:name` as in the POST route above (one parameter name per position): here a command id.
        router.get("/v1/devices/:id/commands/:name") { _, context -> Response in
            let id = try Self.parameter(context, "id")
            let commandID = try Self.parameter(context, "name")
            return try .json(encoding: try await gateway.queuedCommand(id, commandID: commandID))
        }

        router.put("/v1/devices/:id/groups/:group") { _, context -> Response in
            let id = try Self.parameter(context, "id")
            let group = try Self.parameter(context, "group")
            try await gateway.addToGroup(id, group: group)
            return Response(status: .noContent)
        }

        router.delete("/v1/devices/:id/groups/:group") { _, context -> Response in
            let id = try Self.parameter(context, "id")
            let group = try Self.parameter(context, "group")
            try await gateway.removeFromGroup(id, group: group)
            return Response(status: .noContent)
        }

        router.get("/v1/groups") { _, _ -> Response in
            let groups = gateway.groups().map { entry -> JSONValue in
                ["group": .string(entry.group), "count": .int(Int64(entry.members))]
            }
            return .json(["groups": .array(groups), "count": .int(Int64(groups.count))])
        }

        router.get("/v1/groups/:group") { _, context -> Response in
            let group = try Self.parameter(context, "group")
            let members = try await gateway.groupMembers(group)
            return .json(["group": .string(group), "members": .array(members.map(JSONValue.string)), "count": .int(Int64(members.count))])
        }

        router.post("/v1/groups/:group/publish") { request, context -> Response in
            let group = try Self.parameter(context, "group")
            guard let body = try await self.jsonBody(request) else { throw APIError.invalidJSON("a JSON body to publish is required") }
            let count = try await gateway.publish(group: group, body: body)
            return .json(["group": .string(group), "members": .int(Int64(count))], status: .accepted)
        }

        router.post("/v1/groups/:group/query") { request, context -> Response in
            let group = try Self.parameter(context, "group")
            let timeout = try self.timeout(request)
            var fields: [String]?
            var condition: String?
            if let body = try await self.jsonBody(request) {
                (fields, condition) = try Self.queryBody(body)
            }
            let result = try await gateway.query(group: group, fields: fields, where: condition, timeout: timeout)
            return .json([
                "group": .string(group), "replies": .object(result.replies),
                "missing": .array(result.missing.map(JSONValue.string)), "count": .int(Int64(result.count)),
                "matched": .int(Int64(result.matched)),
            ])
        }

        router.get("/v1/cluster") { _, _ -> Response in
            try .json(encoding: try await gateway.clusterView())
        }

        router.get("/v1/cluster/tracker") { _, _ -> Response in
            let dump: TrackerDump
            do {
                dump = try await gateway.node.dump()
            } catch {
                throw APIError(GatewayError.notRunning)
            }
            return try .json(encoding: dump)
        }

        router.post("/v1/cluster/drain") { _, _ -> Response in
            let started = self.startDrain()
            return .json(
                ["node": .string(gateway.node.id.name), "draining": true, "alreadyDraining": .bool(!started)], status: .accepted)
        }

        router.get("/metrics") { _, _ -> Response in
            let stats = await gateway.stats()
            let view = try? await gateway.clusterView()
            let dump = try? await gateway.node.dump()
            let ready = await gateway.isReady()
            let bytes = self.metrics.exposition(stats: stats, view: view, dump: dump, ready: ready, store: gateway.storeStats, recovery: gateway.recoveryStatus) + self.metrics.eventExposition(gateway.events.stats)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }

        router.get("/healthz") { _, _ -> Response in
            .json(["status": "ok", "node": .string(gateway.node.id.name)])
        }

        addEventRoutes(to: router)
        Dashboard.addRoutes(to: router)

        router.get("/readyz") { _, _ -> Response in
            let readiness = await gateway.readiness()
            guard readiness.ready else {
                throw APIError(.serviceUnavailable, code: readiness.code, "node \(gateway.node.id.name) is not ready: \(readiness.reason)")
            }
            var body: [String: JSONValue] = ["status": "ready", "node": .string(gateway.node.id.name)]
            if let store = gateway.storeStats {
                body["store"] = ["location": .string(store.location), "healthy": .bool(store.healthy), "schemaVersion": .int(Int64(store.schemaVersion))]
            }
            return .json(.object(body))
        }
    }

    // MARK: - Request helpers

    /// A path parameter, percent-decoded (the gateway validates its shape).
    static func parameter(_ context: BasicRequestContext, _ name: String) throws -> String {
        guard let raw = context.parameters.get(name) else { throw APIError.notFound }
        guard raw.contains("%") else { return raw }
        guard let decoded = raw.removingPercentEncoding else { throw APIError(GatewayError.invalidName(raw)) }
        return decoded
    }

    /// The `timeout` query parameter (milliseconds, 1…``GatewayHTTPSettings/maxTimeoutMillis``),
    /// nil when absent.
    func timeout(_ request: Request) throws -> Duration? {
        guard let raw = request.uri.queryParameters["timeout"] else { return nil }
        guard let millis = Int(raw), millis >= 1, millis <= settings.maxTimeoutMillis else {
            throw APIError(
                .badRequest, code: "invalidTimeout",
                "timeout must be an integer number of milliseconds in 1...\(settings.maxTimeoutMillis)")
        }
        return .milliseconds(millis)
    }

    /// The `ttl` query parameter (whole seconds, 1…30 days), nil when absent.
    static func ttl(_ request: Request) throws -> Duration? {
        guard let raw = request.uri.queryParameters["ttl"] else { return nil }
        let limit = DeviceGateway.maxCommandTTL.components.seconds
        guard let seconds = Int64(raw), seconds >= 1, seconds <= limit else {
            throw APIError(.badRequest, code: "invalidTTL", "ttl must be an integer number of seconds in 1...\(limit)")
        }
        return .seconds(seconds)
    }

    /// The body as JSON; nil when empty. 413 over the limit, 400 when not JSON.
    func jsonBody(_ request: Request) async throws -> JSONValue? {
        let buffer = try await request.body.collect(upTo: settings.maxBodyBytes)
        guard buffer.readableBytes > 0 else { return nil }
        let bytes = Array(buffer.readableBytesView)
        // Whitespace only counts as empty.
        guard bytes.contains(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }) else { return nil }
        do {
            return try JSONValue.parse(bytes)
        } catch {
            throw APIError.invalidJSON("the body is not JSON: \(error)")
        }
    }

    /// The versions of an `If-Match` header (`"5"`, `W/"5"`, a list of them); nil when absent or
    /// `*` (any current version).
    static func ifMatch(_ request: Request) throws -> [Int64]? {
        guard let raw = request.headers[.ifMatch] else { return nil }
        var versions: [Int64] = []
        for part in raw.split(separator: ",") {
            var tag = Substring(part.trimmingCharacters(in: .whitespaces))
            if tag == "*" { return nil }
            if tag.hasPrefix("W/") { tag = tag.dropFirst(2) }
            if tag.count >= 2, tag.hasPrefix("\""), tag.hasSuffix("\"") { tag = tag.dropFirst().dropLast() }
            guard let version = Int64(tag), version >= 0 else {
                throw APIError(.badRequest, code: "invalidIfMatch", "If-Match must be a twin's ETag, \"<desired version>\" (got \(raw.prefix(100)))")
            }
            versions.append(version)
        }
        guard !versions.isEmpty, versions.count <= 100 else {
            throw APIError(.badRequest, code: "invalidIfMatch", "If-Match must name 1 to 100 versions")
        }
        return versions
    }

    /// A provisioning body `{"password"?: "...", "tags"?: {..}, "groups"?: [..]}`.
    static func provisioning(_ body: JSONValue) throws -> (password: String?, tags: JSONValue?, groups: [String]) {
        guard case .object(let members) = body else { throw APIError.invalidBody("a provisioning body must be a JSON object") }
        if let unknown = members.keys.sorted().first(where: { !["password", "tags", "groups"].contains($0) }) {
            throw APIError.invalidBody("unknown member '\(unknown)' in a provisioning body (password, tags, groups)")
        }
        var password: String?
        if let value = members["password"], value != .null {
            guard let text = value.stringValue else { throw APIError.invalidBody("'password' must be a string") }
            password = text
        }
        var tags: JSONValue?
        if let value = members["tags"], value != .null {
            guard case .object = value else { throw APIError.invalidBody("'tags' must be a JSON object") }
            tags = value
        }
        var groups: [String] = []
        if let value = members["groups"], value != .null {
            guard case .array(let items) = value else { throw APIError.invalidBody("'groups' must be an array of group names") }
            groups = try items.map { item in
                guard let name = item.stringValue else { throw APIError.invalidBody("'groups' must be an array of group names") }
                return name
            }
        }
        return (password, tags, groups)
    }

    /// `{"fields"?: ["reported.x", …], "where"?: EXPR}` → the fields (nil: whole twins) and the
    /// condition.
    static func queryBody(_ body: JSONValue) throws -> (fields: [String]?, where: String?) {
        guard case .object(let members) = body else { throw APIError.invalidBody("a query body must be a JSON object") }
        if let unknown = members.keys.sorted().first(where: { $0 != "fields" && $0 != "where" }) {
            throw APIError.invalidBody("unknown member '\(unknown)' in a query body (fields, where)")
        }
        var condition: String?
        if let value = members["where"], value != .null {
            guard let text = value.stringValue else { throw APIError.invalidBody("'where' must be a string (a search expression)") }
            condition = text
        }
        guard let fields = members["fields"], fields != .null else { return (nil, condition) }
        guard case .array(let items) = fields else { throw APIError.invalidBody("'fields' must be an array of strings") }
        let names = try items.map { item in
            guard let field = item.stringValue, !field.isEmpty, field.utf8.count <= 256 else {
                throw APIError.invalidBody("'fields' must be an array of non-empty strings")
            }
            return field
        }
        return (names, condition)
    }

    /// The value of `name` in a raw query string, form-decoded: `+` is a space (as browsers'
    /// `URLSearchParams` write it), then percent-decoding (`%2B` is a plus).
    static func formValue(_ query: String?, _ name: String) -> String? {
        guard let query else { return nil }
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts[0] == name else { continue }
            let raw = parts.count > 1 ? String(parts[1]).replacingOccurrences(of: "+", with: " ") : ""
            return raw.removingPercentEncoding ?? raw
        }
        return nil
    }

    /// The fleet-search query parameters: `where` (nil: every device), `limit` (1…1000, default
    /// 100), `cursor` (the `next` of the previous page).
    static func searchParameters(_ request: Request) throws -> (where: String?, limit: Int, cursor: String?) {
        let parameters = request.uri.queryParameters
        var condition: String?
        if let text = formValue(request.uri.query, "where") {
            condition = text.allSatisfy(\.isWhitespace) ? nil : text
        }
        var limit = 100
        if let raw = parameters["limit"] {
            guard let value = Int(raw), (1...DeviceGateway.maxSearchLimit).contains(value) else {
                throw APIError(.badRequest, code: "invalidLimit", "limit must be an integer in 1...\(DeviceGateway.maxSearchLimit)")
            }
            limit = value
        }
        var cursor: String?
        if let raw = parameters["cursor"], !raw.isEmpty {
            guard DeviceID.isValid(raw) else {
                throw APIError(.badRequest, code: "invalidCursor", "cursor must be the 'next' of a previous page")
            }
            cursor = String(raw)
        }
        return (condition, limit, cursor)
    }
}

/// Authentication, body limit, error mapping and request metrics for every route (and for
/// requests that match no route).
struct APIMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    let api: GatewayAPI

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response: Response
        do {
            try check(request)
            response = try await next(request, context)
        } catch {
            let apiError = APIError.from(error)
            if apiError.status.code >= 500 && apiError.code == "internal" {
                api.settings.logger.error("\(request.method) \(request.uri.path): \(error)")
            }
            response = apiError.response()
        }
        api.metrics.record(
            method: request.method.rawValue, route: context.endpointPath ?? "none", status: response.status.code,
            duration: ContinuousClock.now - start)
        return response
    }

    /// Authentication of `/v1` and the declared body size.
    private func check(_ request: Request) throws {
        let path = request.uri.path
        if let token = api.token, path == "/v1" || path.hasPrefix("/v1/") {
            guard let header = request.headers[.authorization], Self.bearer(header, matches: token) else {
                throw APIError.unauthorized
            }
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > api.settings.maxBodyBytes {
            throw APIError.tooLarge(api.settings.maxBodyBytes)
        }
    }

    /// `Bearer <token>` (scheme case-insensitive) with the token compared in constant time (the
    /// time depends on the expected token's length only).
    static func bearer(_ header: String, matches expected: [UInt8]) -> Bool {
        let bytes = Array(header.utf8)
        let scheme = Array("bearer ".utf8)
        guard bytes.count > scheme.count,
            zip(bytes, scheme).allSatisfy({ ($0 | 0x20) == $1 || ($0 == 0x20 && $1 == 0x20) })
        else { return false }
        let provided = bytes[scheme.count...].drop(while: { $0 == 0x20 })
        let given = Array(provided)
        var difference: UInt8 = given.count == expected.count ? 0 : 1
        for index in 0..<expected.count {
            difference |= expected[index] ^ (index < given.count ? given[index] : 0)
        }
        return difference == 0
    }
}
