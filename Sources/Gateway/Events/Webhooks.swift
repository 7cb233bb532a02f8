import Crypto
import Foundation
import GatewayStore
import SwarmJSON
import Synchronization
import SwarmCore
import SwarmNode

/// Sends one webhook POST (implemented over async-http-client by `HTTPWebhookTransport` in
/// GatewayHTTP; the gateway itself has no HTTP client). Returns the response status; throws
/// for a transport failure (refused, reset, timeout).
public protocol WebhookTransport: Sendable {
    func post(url: String, body: [UInt8], headers: [(String, String)], timeout: Duration) async throws -> Int
    /// Closes connections (gateway shutdown).
    func shutdown() async
}

/// A webhook sink as registered (`POST /v1/webhooks`): where, what, and the secret its batches
/// are signed with.
public struct WebhookDefinition: Sendable, Hashable, Codable {
    public var id: String
    public var url: String
    /// Event types sent (nil: all).
    public var types: [String]?
    /// Only events of devices in this group (nil: all).
    public var group: String?
    /// Only events matching this `where` expression (nil: all).
    public var `where`: String?
    /// The HMAC-SHA256 key of `X-Swarm-Signature` (never shown by the API).
    public var secret: String
    /// Milliseconds since the epoch.
    public var createdAt: Int64

    public init(id: String, url: String, types: [String]?, group: String?, where query: String? = nil, secret: String, createdAt: Int64) {
        self.id = id
        self.url = url
        self.types = types
        self.group = group
        self.where = query
        self.secret = secret
        self.createdAt = createdAt
    }

    /// The events this sink takes.
    var filter: EventFilter {
        EventFilter(types: types.map { Set($0.compactMap(EventType.init(rawValue:))) }, group: group, query: self.where.flatMap { try? FleetQuery.parse($0) })
    }

    /// Checks a definition from the API: an `http`/`https` URL with a host, a secret of 1–1024
    /// bytes, known types, a valid group name.
    static func validate(url: String, types: [String]?, group: String?, where query: String?, secret: String) throws(GatewayError) {
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = parsed.host, !host.isEmpty
        else {
            throw GatewayError.invalidBody("url must be an http:// or https:// URL with a host, not '\(url)'")
        }
        guard !secret.isEmpty, secret.utf8.count <= 1024 else { throw GatewayError.invalidBody("secret must be 1 to 1024 bytes") }
        if let types {
            _ = try EventFilter.types(types.joined(separator: ","))
        }
        if let group, !DeviceID.isValid(group) { throw GatewayError.invalidName(group) }
        if let query { _ = try DeviceGateway.parseQuery(query) }
    }
}

/// What `GET /v1/webhooks` shows of a sink.
public struct WebhookStatus: Sendable, Hashable, Codable {
    public var id: String
    public var url: String
    public var types: [String]?
    public var group: String?
    public var `where`: String?
    /// The node driving it now (nil: not running anywhere at the moment).
    public var node: String?
    /// The last cursor its receiver acknowledged.
    public var cursor: String
    /// Events matching its filter after the cursor, not acknowledged yet (nil: unknown, the
    /// sink did not answer).
    public var lag: Int?
    /// Failed POST attempts since the sink was created (each retried until a 2xx).
    public var failures: Int
    /// Failed attempts in a row now (0: delivering).
    public var consecutiveFailures: Int
    public var lastError: String?
    /// Events that passed the retention window before they were delivered (counted, never
    /// silent; the sink then goes on from the oldest event kept).
    public var dropped: Int64
    /// Events delivered (acknowledged with a 2xx).
    public var delivered: Int64
    /// RFC 3339.
    public var createdAt: String
}

/// `X-Swarm-Signature`: `sha256=<hex HMAC-SHA256 of the body with the sink's secret>`.
public enum WebhookSignature {
    public static let header = "X-Swarm-Signature"

    public static func sign(_ body: [UInt8], secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(secret.utf8)))
        return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    /// True when `signature` is the signature of `body` (constant time in the signature).
    public static func verify(_ body: [UInt8], signature: String, secret: String) -> Bool {
        let expected = Array(sign(body, secret: secret).utf8)
        let given = Array(signature.utf8)
        guard expected.count == given.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(expected, given) { difference |= a ^ b }
        return difference == 0
    }
}

/// The sinks this node knows (every node knows every sink): definitions with their revision,
/// the deletions, the last acknowledged cursors. Persisted in the event store of each node.
final class WebhookRegistry: Sendable {
    struct Record: Sendable, Hashable {
        var row: StoredWebhook
        var definition: WebhookDefinition?
    }

    private let records = Mutex<[String: Record]>([:])

    /// Takes `row` if it is newer than what is known (a higher revision; a newer cursor is kept
    /// either way); true when anything changed.
    @discardableResult
    func apply(_ row: StoredWebhook) -> Bool {
        let definition = try? JSONDecoder().decode(WebhookDefinition.self, from: Data(row.definition))
        return records.withLock { records in
            guard var known = records[row.id] else {
                records[row.id] = Record(row: row, definition: definition)
                return true
            }
            var changed = false
            if row.revision > known.row.revision {
                let cursor = max(known.row.cursor, row.cursor)
                known = Record(row: row, definition: definition)
                known.row.cursor = cursor
                changed = true
            } else if row.cursor > known.row.cursor {
                known.row.cursor = row.cursor
                changed = true
            }
            records[row.id] = known
            return changed
        }
    }

    func advance(_ id: String, cursor: StoredEventKey) -> Bool {
        records.withLock { records in
            guard var known = records[id], cursor > known.row.cursor else { return false }
            known.row.cursor = cursor
            records[id] = known
            return true
        }
    }

    func record(_ id: String) -> Record? { records.withLock { $0[id] } }

    /// Every row, deleted ones included, in id order.
    func all() -> [Record] { records.withLock { $0.values.sorted { $0.row.id < $1.row.id } } }

    /// The sinks that are not deleted, in id order.
    func live() -> [Record] { all().filter { !$0.row.deleted && $0.definition != nil } }
}

/// A sink's factory arguments and handoff state: the definition, the cursor, the counters.
struct WebhookState: Codable, Sendable, Hashable {
    var definition: WebhookDefinition
    var cursorTime: Int64
    var cursorDevice: String
    var failures = 0
    var dropped: Int64 = 0
    var delivered: Int64 = 0
    var lastError: String?

    var cursor: EventKey {
        get { EventKey(time: cursorTime, device: cursorDevice) }
        set {
            cursorTime = newValue.time
            cursorDevice = newValue.device
        }
    }

    init(definition: WebhookDefinition, cursor: EventKey) {
        self.definition = definition
        self.cursorTime = cursor.time
        self.cursorDevice = cursor.device
    }

    func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(self)) ?? Data())
    }

    static func decode(_ bytes: [UInt8]) -> WebhookState? {
        try? JSONDecoder().decode(WebhookState.self, from: Data(bytes))
    }
}

/// The Swarm name of sink `id`.
func webhookProcessName(_ id: String) -> String { "webhook:" + id }

/// One webhook sink, driven by one node at a time: a Swarm process of kind `webhook` named
/// `webhook:{id}`, so the registry places it on one node (the ring owner of the name), restarts
/// it on a survivor from its last checkpoint when that node fails, and hands it over with its
/// state on a drain.
///
/// Its loop reads this node's event log after the sink's cursor (through the same reads as an
/// SSE consumer, so a sink far behind reads from the store), gathers up to
/// ``EventSettings/webhookBatchSize`` matching events (waiting up to
/// ``EventSettings/webhookLinger`` for more), POSTs them as one JSON array signed with the
/// secret, and retries the same body with exponential backoff and jitter until a 2xx. Only then
/// does the cursor move (checkpointed to the ring successor, and every couple of seconds to
/// every node's store): at least once, in stream order (so in order per device). A kill -9 of
/// the driving node repeats at most the batches acknowledged since the last checkpoint.
actor WebhookProcess: SwarmProcess {
    let runtime: DeviceRuntime
    private var state: WebhookState
    private var consecutiveFailures = 0
    private var loop: Task<Void, Never>?
    private var stopped = false
    private var pid: ProcessID?
    private var lastShared = ContinuousClock.now
    private var sharedCursor: EventKey

    init(runtime: DeviceRuntime, state: WebhookState) {
        self.runtime = runtime
        self.state = state
        self.sharedCursor = state.cursor
    }

    var name: String { webhookProcessName(state.definition.id) }

    /// Starts the delivery loop once the process is registered here and its handoff state (if
    /// any) is applied.
    func begin() {
        guard loop == nil, !stopped else { return }
        loop = Task { await self.run() }
    }

    private func run() async {
        let node = runtime.node
        // Registered here (the tracker registers a process after its start)…
        var found: ProcessID?
        for _ in 0..<500 where !Task.isCancelled {
            if let pid = node.whereis(name), pid.node == node.id {
                found = pid
                break
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        guard let pid = found else { return }
        self.pid = pid
        // …and everything queued before this call (the handoff state comes first) applied.
        _ = try? await node.call(pid, WebhookCall.sync.encoded(), timeout: .seconds(5))
        await deliver()
    }

    private func deliver() async {
        let hub = runtime.events
        let settings = hub.settings
        let filter = state.definition.filter
        while !stopped && !Task.isCancelled {
            var batch: [DeviceEvent] = []
            var next = state.cursor
            var lingerUntil: ContinuousClock.Instant?
            gather: while !stopped && !Task.isCancelled {
                let read: EventHub.Read
                do {
                    read = try await hub.read(after: next, filter: filter, limit: settings.webhookBatchSize - batch.count)
                } catch {
                    state.lastError = "reading events: \(error)"
                    try? await Task.sleep(for: .seconds(1))
                    continue
                }
                switch read {
                case .expired(let horizon):
                    let lost = hub.removedSince(next)
                    state.dropped += max(1, lost)
                    state.lastError = "events after \(next) left the retention window before delivery (\(max(1, lost)) dropped)"
                    next = horizon
                    if batch.isEmpty { state.cursor = horizon }
                    continue gather
                case .events(let events, let after):
                    batch += events
                    next = after
                }
                if batch.count >= settings.webhookBatchSize { break gather }
                if batch.isEmpty {
                    if next > state.cursor {
                        // Nothing for this sink in what was read: the cursor moves without a POST.
                        state.cursor = next
                        await shareCursor()
                    }
                    _ = await hub.wait(after: next, timeout: .seconds(1))
                    continue gather
                }
                let deadline = lingerUntil ?? (ContinuousClock.now + settings.webhookLinger)
                lingerUntil = deadline
                let remaining = deadline - ContinuousClock.now
                if remaining <= .zero { break gather }
                if !(await hub.wait(after: next, timeout: remaining)) { break gather }
            }
            guard !batch.isEmpty, !stopped else { continue }
            guard await post(batch) else { return }
            state.cursor = next
            state.delivered += Int64(batch.count)
            if let pid { try? await runtime.node.checkpoint(pid, state: state.encoded()) }
            await shareCursor()
        }
    }

    /// POSTs `batch` until a 2xx (false: the process stopped first).
    private func post(_ batch: [DeviceEvent]) async -> Bool {
        let settings = runtime.events.settings
        guard let transport = settings.webhookTransport else {
            state.lastError = "no webhook transport configured"
            return false
        }
        var body: [UInt8] = [UInt8(ascii: "[")]
        body.reserveCapacity(batch.reduce(2) { $0 + $1.json.count + 1 })
        for (index, event) in batch.enumerated() {
            if index > 0 { body.append(UInt8(ascii: ",")) }
            body.append(contentsOf: event.json)
        }
        body.append(UInt8(ascii: "]"))
        let headers = [
            ("Content-Type", "application/json"),
            (WebhookSignature.header, WebhookSignature.sign(body, secret: state.definition.secret)),
            ("X-Swarm-Webhook", state.definition.id),
        ]
        var attempt = 0
        while !stopped && !Task.isCancelled {
            do {
                let status = try await transport.post(url: state.definition.url, body: body, headers: headers, timeout: settings.webhookTimeout)
                if (200..<300).contains(status) {
                    consecutiveFailures = 0
                    return true
                }
                state.lastError = "HTTP \(status)"
            } catch {
                state.lastError = "\(error)"
            }
            state.failures += 1
            consecutiveFailures += 1
            attempt += 1
            try? await Task.sleep(for: Self.backoff(attempt: attempt, base: settings.webhookRetryDelay, limit: settings.webhookMaxRetryDelay))
        }
        return false
    }

    /// `base × 2^(attempt-1)`, at most `limit`, times a random factor in 0.5…1.5.
    static func backoff(attempt: Int, base: Duration, limit: Duration) -> Duration {
        var delay = base
        for _ in 1..<max(1, min(attempt, 30)) {
            delay = delay * 2
            if delay >= limit { break }
        }
        return min(delay, limit) * Double.random(in: 0.5...1.5)
    }

    /// Every couple of seconds: the acknowledged cursor to every node's store (a full-cluster
    /// restart resumes near it).
    private func shareCursor() async {
        guard state.cursor > sharedCursor, ContinuousClock.now - lastShared >= .seconds(2) else { return }
        lastShared = .now
        sharedCursor = state.cursor
        let message = EventHubMessage.webhookCursor(WebhookCursor(id: state.definition.id, cursor: state.cursor.stored)).encoded()
        try? await runtime.node.publish(GatewaySettings.eventHubGroup, message)
    }

    // MARK: SwarmProcess

    func call(_ message: [UInt8]) async throws -> [UInt8] {
        switch try WebhookCall(decoding: message) {
        case .sync:
            return []
        case .status:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return Array(try encoder.encode(status()))
        }
    }

    func status() -> WebhookStatus {
        let definition = state.definition
        let pending = runtime.events.count(after: state.cursor, filter: definition.filter)
        return WebhookStatus(
            id: definition.id, url: definition.url, types: definition.types, group: definition.group, where: definition.where, node: runtime.nodeName,
            cursor: state.cursor.description, lag: pending, failures: state.failures, consecutiveFailures: consecutiveFailures,
            lastError: state.lastError, dropped: state.dropped, delivered: state.delivered, createdAt: Timestamp.iso(definition.createdAt))
    }

    func beginHandoff() async -> HandoffAnswer {
        .resume(state.encoded())
    }

    func endHandoff(state bytes: [UInt8]) async {
        guard let restored = WebhookState.decode(bytes), restored.definition.id == state.definition.id else { return }
        let cursor = max(state.cursor, restored.cursor)
        state = restored
        state.cursor = cursor
    }

    func resolveConflict(state bytes: [UInt8]) async {
        guard let other = WebhookState.decode(bytes), other.definition.id == state.definition.id else { return }
        if other.cursor > state.cursor { state.cursor = other.cursor }
        state.failures = max(state.failures, other.failures)
        state.dropped = max(state.dropped, other.dropped)
        state.delivered = max(state.delivered, other.delivered)
    }

    func stop(reason: Tracker.StopReason) async {
        stopped = true
        loop?.cancel()
    }
}

/// Calls a ``WebhookProcess`` answers.
enum WebhookCall: UInt8 {
    /// Nothing: answered once everything queued before it is applied.
    case sync = 1
    /// The sink's ``WebhookStatus`` as JSON.
    case status = 2

    func encoded() -> [UInt8] { [rawValue] }

    init(decoding bytes: [UInt8]) throws {
        guard bytes.count == 1, let call = WebhookCall(rawValue: bytes[0]) else { throw DeviceMessage.DecodeError(description: "unknown webhook call") }
        self = call
    }
}
