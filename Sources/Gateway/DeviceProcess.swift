import Foundation
import GatewayStore
import Logging
import MQTT
import SwarmCore
import SwarmJSON
import SwarmNode
import Synchronization

/// What every device process on one node shares: the node, the settings, the MQTT clients, the
/// counters, and the set of processes with a checkpoint still due.
final class DeviceRuntime: Sendable {
    let node: SwarmNode
    let nodeName: String
    let settings: GatewaySettings
    let topics: DeviceTopics
    let counters: GatewayCounters
    let brokers: BrokerPool
    let rejectLog: RateLimitedLog
    /// Processes whose last change is not checkpointed yet (coalescing); flushed by the
    /// gateway's sweep every ``GatewaySettings/checkpointInterval``.
    let dirty = Mutex<[String: DeviceProcess]>([:])
    /// Devices deleted in the last minute (refused at ingress and by the factory).
    let tombstones = Tombstones()
    /// The searchable state of the device processes hosted here (fleet search).
    let index = DeviceIndex()
    /// Device processes with a queued command whose TTL or reply deadline is ahead.
    let commandTimers = CommandTimers<DeviceProcess>()
    /// This node's level in reply topics (``DeviceGateway/nodeToken``).
    let nodeToken: String
    /// The durable store (nil: state lives in memory and successor replicas only).
    let storage: DeviceStorage?
    /// Recovery from the store at start: rows waiting for their process, and the barrier API
    /// writes wait on.
    let recovery = DeviceRecovery()
    /// This node's share of the event stream.
    let events: EventHub
    /// The webhook sinks this node knows.
    let webhooks = WebhookRegistry()
    /// This node's event hub process (for ``eventBarrier()``), once spawned.
    let eventHubPID = Mutex<ProcessID?>(nil)

    init(node: SwarmNode, settings: GatewaySettings, counters: GatewayCounters, brokers: BrokerPool, rejectLog: RateLimitedLog) {
        self.node = node
        self.events = EventHub(node: node.id, settings: settings.events, logger: settings.logger)
        self.nodeName = node.id.name
        self.nodeToken = GatewaySettings.topicSafe(node.id.name)
        self.settings = settings
        self.topics = DeviceTopics(prefix: settings.topicPrefix)
        self.counters = counters
        self.brokers = brokers
        self.rejectLog = rejectLog
        self.storage = settings.store.map { DeviceStorage(writer: $0, nodeName: node.id.name) }
    }

    var logger: Logger { settings.logger }

    func swarmGroup(_ group: String) -> String { settings.groupPrefix + group }

    /// Returns once this node's hub ingested every event batch that reached the node before the
    /// call (bounded: 2 s).
    func eventBarrier() async {
        guard let pid = eventHubPID.withLock({ $0 }) else { return }
        _ = try? await node.call(pid, EventHubMessage.barrier.encoded(), timeout: .seconds(2))
    }

    /// Takes the processes with a checkpoint due.
    func takeDirty() -> [DeviceProcess] {
        dirty.withLock { table in
            defer { table = [:] }
            return Array(table.values)
        }
    }
}

/// One device (docs/gateway.md, “Facade”): a Swarm process of kind ``GatewaySettings/processKind``,
/// named by the device id, started on the name's ring owner at first contact (the ingress node's
/// `whereisOrRegister`).
///
/// State (``DeviceState``): presence (online, connectedAt, lastSeen, birth metadata), groups,
/// last telemetry values and sequence statistics, reported state (merge patches), desired state
/// and its version, the broker the device last used, counters.
///
/// - **Handoff**: `.resume(state as JSON)`; ``endHandoff(state:)`` restores it (also the
///   restart from a checkpoint after a crash); ``resolveConflict(state:)`` merges
///   (``DeviceState/merge(_:)``).
/// - **Checkpoints** (successor replication, ARCHITECTURE.md, “Successor state”): status, desired and group changes are
///   checkpointed at once; telemetry and reported changes at most once per
///   ``GatewaySettings/checkpointInterval`` (the gateway's sweep writes the last one), so a
///   `kill -9` of the host loses at most that interval of telemetry/reported updates.
/// - **Durable store** (``GatewaySettings/store``, ``DeviceStorage``): every checkpoint is also
///   the device's row; API writes are committed (group commit) before they answer — a store
///   that fails answers `storeUnavailable` and the change is undone — and the rest is written
///   behind. A process started at recovery begins from its stored row; API writes wait for the
///   recovery barrier (``DeviceRecovery``) so the desired version continues above every stored one.
/// - **Groups**: every device is in Swarm group `{groupPrefix}all` from its registration; birth
///   `groups` and the API add more (`join`), the API removes (`leave`); the tracker carries
///   memberships across handoffs and restarts.
/// - **Bad input** never crashes the process: an undecodable message is logged and dropped.
actor DeviceProcess: SwarmProcess {
    let id: String
    let runtime: DeviceRuntime
    private(set) var state: DeviceState {
        didSet { twinCache = nil }
    }
    /// The encoded twin, kept until the state changes (reads by id are the API's hot path).
    private var twinCache: [UInt8]?
    private var pid: ProcessID?
    private var changes = 0
    private var checkpointedChanges = 0
    private var lastCheckpoint: ContinuousClock.Instant?
    private var stopped = false
    /// Set by a `delete` call: the device is being deleted; it takes nothing more.
    private var deleted = false
    /// True while this process is in ``DeviceRuntime/dirty`` (until the sweep calls ``flush()``).
    private var inDirtyTable = false
    /// When to try again to publish queued commands the broker client refused (ms).
    private var commandRetryAt: Int64?
    /// The groups of the state are not known to be joined in Swarm (a state taken from a stored
    /// row): joined at the next ``DeviceMessage/restore`` or API write.
    private var groupsUnchecked = false
    /// The event numbering was reconciled with what this node's hub received (``emit(_:_:)``).
    private var eventsSynced = false
    /// `state.groups` sorted, for events (recomputed when the groups change).
    private var eventGroups: (set: Set<String>, sorted: [String]) = ([], [])

    /// A process with the state recovery holds for `id` (``DeviceRecovery/take(_:)``), if any; a
    /// device deleted before starts its history above its deletion.
    init(id: String, runtime: DeviceRuntime) {
        self.id = id
        self.runtime = runtime
        var state = DeviceState(id: id)
        if let stored = runtime.recovery.take(id) {
            state = stored
            groupsUnchecked = true
        } else if let deleted = runtime.storage?.tombstone(id) {
            state.revision = deleted
        }
        self.state = state
    }

    // MARK: SwarmProcess

    func receive(_ message: [UInt8]) async throws {
        let decoded: DeviceMessage
        do {
            decoded = try DeviceMessage(decoding: message)
        } catch {
            runtime.rejectLog.warning("device-message", "device \(id): undecodable message dropped: \(error)")
            return
        }
        if deleted { return }
        switch decoded {
        case .ingress(let kind, let broker, let receivedAt, let retained, let payload):
            await applyIngress(kind: kind, broker: broker, receivedAt: receivedAt, retained: retained, payload: payload)
        case .commandOutcome(let command, let answered):
            state.counters.commandsSent += 1
            if answered { state.counters.commandsAnswered += 1 } else { state.counters.commandsTimedOut += 1 }
            var data: [String: JSONValue] = ["name": .string(command), "status": .string(answered ? "answered" : "failed")]
            if !answered { data["reason"] = "timeout" }
            emit(.command, JSONValue.object(data).serialized())
            await changed(urgent: false)
        case .down(let body):
            let message = MQTTMessage(topic: runtime.topics.down(id), payload: body, qos: .atLeastOnce)
            if runtime.brokers.publishWithoutWaiting(message, broker: state.broker) {
                state.counters.downlinks += 1
                runtime.counters.downlinksPublished.add(1, ordering: .relaxed)
            } else {
                runtime.counters.publishFailures.add(1, ordering: .relaxed)
            }
            await changed(urgent: false)
        case .commandReply(let commandID, let payload):
            await applyCommandReply(commandID, payload: payload)
        case .restore:
            await restoreFromRecovery()
        case .twin, .patchDesired, .group, .query, .route, .patchTags, .provision, .delete, .queueCommand, .commands:
            // Calls sent as casts: answer nothing, change nothing.
            break
        }
    }

    func call(_ message: [UInt8]) async throws -> [UInt8] {
        let decoded = try DeviceMessage(decoding: message)
        if deleted {
            if case .delete = decoded { return deletedReply() }
            return DeviceReply.refused(code: "gone", version: state.version, message: "device \(id) is being deleted").encoded()
        }
        switch decoded {
        case .twin:
            return try twinReply()
        case .patchDesired(let patch, let versions):
            if let refusal = await recovered() { return refusal }
            if let versions, !versions.contains(state.version) {
                return DeviceReply.refused(
                    code: "versionConflict", version: state.version,
                    message: "the desired version is \(state.version), not \(versions.map(String.init).joined(separator: " or "))"
                ).encoded()
            }
            let before = state
            state.patchDesired(patch, at: Timestamp.nowMillis())
            let patched = state.version
            emit(.desired, JSONValue.object(["patch": patch, "version": .int(patched)]).serialized())
            // Stored and replicated before the device sees the version, so it can never see it twice.
            if let refusal = await persistAPIWrite(undo: before) {
                // Not stored: the patch was undone; consumers learn it from the next event.
                if state.version != patched { emit(.desired, JSONValue.object(["undone": true, "version": .int(state.version)]).serialized()) }
                return refusal
            }
            await publishDesired()
            return try twinReply()
        case .patchTags(let patch):
            if let refusal = await recovered() { return refusal }
            let before = state
            state.patchTags(patch, at: Timestamp.nowMillis())
            if let refusal = await persistAPIWrite(undo: before) { return refusal }
            return try twinReply()
        case .provision(let tags, let groups):
            if let refusal = await recovered() { return refusal }
            emitCreatedIfNew()
            if let tags { state.setTags(tags.objectValue ?? [:], at: Timestamp.nowMillis()) }
            for group in groups where !state.groups.contains(group) { try await changeGroup(group, join: true) }
            if let refusal = await persistAPIWrite(undo: nil) { return refusal }
            return try twinReply()
        case .group(let group, let join):
            if let refusal = await recovered() { return refusal }
            try await changeGroup(group, join: join)
            if let refusal = await persistAPIWrite(undo: nil) { return refusal }
            return try twinReply()
        case .delete:
            emit(.lifecycle, Array(#"{"status":"deleted"}"#.utf8))
            deleted = true
            runtime.index.remove(id, owner: ObjectIdentifier(self))
            runtime.commandTimers.remove(id, self)
            return deletedReply()
        case .query(let fields, let condition):
            if let condition, !(try FleetQuery.parse(condition).matches(DeviceIndex.Entry(state))) { return [] }
            let twin = state.twin(node: runtime.nodeName).json
            let data: JSONValue
            if let fields {
                data = .object(Dictionary(fields.map { ($0, twin.value(atPath: $0) ?? .null) }, uniquingKeysWith: { a, _ in a }))
            } else {
                data = twin
            }
            return JSONValue.object(["id": .string(id), "data": data]).serialized()
        case .route:
            return RouteReply(online: state.online, broker: state.broker).encoded()
        case .queueCommand(let name, let body, let ttl, let replyWindow):
            return await queueCommand(name: name, body: body, ttl: ttl, replyWindow: replyWindow)
        case .commands(let commandID):
            return await commands(commandID)
        case .ingress, .commandOutcome, .down, .commandReply, .restore:
            try await receive(message)
            return []
        }
    }

    /// The answer to ``DeviceMessage/delete``: the broker, and a revision above every stored
    /// copy of this device (its rows up to it are deleted, and its tombstone keeps older copies
    /// from coming back).
    private func deletedReply() -> [UInt8] {
        DeletedReply(broker: state.broker, revision: Revision.next(after: state.revision, nowMicros: Timestamp.nowMicros())).encoded()
    }

    func beginHandoff() async -> HandoffAnswer {
        .resume(state.checkpointJSON())
    }

    func endHandoff(state bytes: [UInt8]) async {
        // A recovery after a crash of the previous host: every event batch the dead host sent
        // here is ingested first, so the numbering continues after the last one (``emit``).
        await runtime.eventBarrier()
        eventsSynced = false
        guard let restored = try? DeviceState.decode(checkpoint: bytes), restored.id == id else {
            runtime.logger.warning("device \(id): handoff state not decodable (\(bytes.count) bytes); starting empty")
            return
        }
        // Anything applied before the state arrived (nothing, normally: endHandoff comes first; a
        // stored row taken at start is merged unless it is an older copy of the same history).
        var merged = restored
        if state != DeviceState(id: id) { merged.absorb(state) }
        state = merged
        await changed(urgent: true)
        // The previous host may have replicated a desired version and died before publishing it.
        if state.version > state.publishedVersion { await publishDesired() }
        await deliverQueuedCommands()
        scheduleCommandDeadline()
    }

    func resolveConflict(state bytes: [UInt8]) async {
        guard let other = try? DeviceState.decode(checkpoint: bytes), other.id == id else { return }
        state.merge(other)
        await changed(urgent: true)
        scheduleCommandDeadline()
    }

    func stop(reason: Tracker.StopReason) async {
        stopped = true
        runtime.index.remove(id, owner: ObjectIdentifier(self))
        runtime.commandTimers.remove(id, self)
    }

    // MARK: Ingress

    private func applyIngress(kind: DeviceTopics.Kind, broker: String, receivedAt: Int64, retained: Bool, payload: [UInt8]) async {
        guard let value = try? JSONValue.parse(payload) else {
            runtime.rejectLog.warning("device-ingress", "device \(id): unparsable \(kind.rawValue) payload dropped")
            return
        }
        let before = (online: state.online, connectedAt: state.connectedAt, reportedVersion: state.reportedVersion)
        let joins = state.applyIngress(kind, value, broker: broker, receivedAt: receivedAt, retained: retained)
        switch kind {
        case .telemetry:
            emit(.telemetry, payload)
        case .reported where state.reportedVersion != before.reportedVersion:
            var data = Array(#"{"patch":"#.utf8)
            data += payload
            data += Array(#","reportedVersion":\#(state.reportedVersion)}"#.utf8)
            emit(.reported, data)
        case .status where state.online != before.online || (state.online && state.connectedAt != before.connectedAt):
            emit(.presence, Array((state.online ? #"{"status":"online"}"# : #"{"status":"offline"}"#).utf8))
        default:
            break
        }
        for group in joins { try? await changeGroup(group, join: true) }
        await changed(urgent: kind == .status || !joins.isEmpty)
        runtime.settings.ingressObserver?(id, kind, value)
        // A birth: what was queued for the device goes out now, in order.
        if kind == .status, state.online, state.commands.contains(where: { $0.status == .queued }) {
            await deliverQueuedCommands()
            scheduleCommandDeadline()
        }
    }

    // MARK: Queued commands

    /// Queues a command (``DeviceState/enqueueCommand(id:name:body:ttl:replyWindow:at:)``),
    /// answers once replicated like every API write, and sends it at once when the device is
    /// online. Reply: `{"id", "status"}` (`queued` or `sent`).
    private func queueCommand(name: String, body: JSONValue, ttl: Int64, replyWindow: Int64) async -> [UInt8] {
        if let refusal = await recovered() { return refusal }
        let before = state
        let now = Timestamp.nowMillis()
        _ = expireCommands(at: now)
        let commandID = QueuedCommand.newID()
        guard let queued = state.enqueueCommand(id: commandID, name: name, body: body, ttl: ttl, replyWindow: replyWindow, at: now) else {
            scheduleCommandDeadline()
            return DeviceReply.refused(
                code: "tooManyCommands", version: state.version,
                message: "device \(id) has \(DeviceState.maxPendingCommands) pending commands; wait for some to be answered or expire"
            ).encoded()
        }
        emitCommand(queued)
        if let refusal = await persistAPIWrite(undo: before) {
            if !state.commands.contains(where: { $0.id == commandID }) {
                // Not stored: undone, so it is never delivered.
                var failed = queued
                failed.status = .failed
                failed.error = "not stored"
                emitCommand(failed)
            }
            scheduleCommandDeadline()
            return refusal
        }
        await deliverQueuedCommands()
        scheduleCommandDeadline()
        let status = state.commands.first { $0.id == commandID }?.status ?? .queued
        return DeviceReply.json(JSONValue.object(["id": .string(commandID), "status": .string(status.rawValue)]).serialized()).encoded()
    }

    /// One queued command (`commandID`) or the list, with what expired meanwhile applied first.
    private func commands(_ commandID: String?) async -> [UInt8] {
        if !expireCommands(at: Timestamp.nowMillis()).isEmpty {
            scheduleCommandDeadline()
            await changed(urgent: true)
        }
        guard let commandID else {
            return DeviceReply.json(JSONValue.object(["commands": .array(state.commands.map(\.json))]).serialized()).encoded()
        }
        guard let command = state.commands.first(where: { $0.id == commandID }) else {
            return DeviceReply.refused(code: "unknownCommand", version: state.version, message: "device \(id) has no command '\(commandID)'").encoded()
        }
        return DeviceReply.json(command.json.serialized()).encoded()
    }

    /// Publishes the queued commands still within their TTL, in order, while the device is
    /// online. Synchronous per command (libmosquitto queues the PUBLISH before the call returns,
    /// QoS 1), so commands leave in queue order and nothing interleaves with another message to
    /// this process; a command is `sent` once its client queued it. A refusal (the client is
    /// closed) stops the run and retries a second later, keeping the order.
    private func deliverQueuedCommands() async {
        guard state.online, !stopped, !deleted else { return }
        let now = Timestamp.nowMillis()
        var sent = 0
        var refused = false
        for command in state.commandsToSend(at: now) {
            let remaining = max(1, (command.expiresAt - now + 999) / 1000)
            let message = MQTTMessage(
                topic: runtime.topics.command(id, command.name), payload: command.body.serialized(), qos: .atLeastOnce,
                properties: MQTTProperties(
                    responseTopic: runtime.topics.reply(id, node: runtime.nodeToken), correlationData: QueuedCommand.correlation(command.id),
                    messageExpiryInterval: UInt32(clamping: remaining)))
            guard runtime.brokers.publishWithoutWaiting(message, broker: state.broker) else {
                runtime.counters.publishFailures.add(1, ordering: .relaxed)
                refused = true
                break
            }
            state.markCommandSent(command.id, at: now)
            if let sent = state.commands.first(where: { $0.id == command.id }) { emitCommand(sent) }
            state.counters.commandsSent += 1
            runtime.counters.commandsSent.add(1, ordering: .relaxed)
            sent += 1
        }
        commandRetryAt = refused ? now + 1000 : nil
        if sent > 0 { await changed(urgent: true) }
    }

    /// A device's reply to a queued command (routed here by name from whichever node took it).
    private func applyCommandReply(_ commandID: String, payload: [UInt8]) async {
        let now = Timestamp.nowMillis()
        guard let command = state.answerCommand(commandID, payload: payload, limit: runtime.settings.maxPayloadBytes, at: now) else {
            runtime.counters.repliesUnmatched.add(1, ordering: .relaxed)
            return
        }
        emitCommand(command)
        if command.status == .answered {
            state.counters.commandsAnswered += 1
            runtime.counters.commandsAnswered.add(1, ordering: .relaxed)
        }
        scheduleCommandDeadline()
        await changed(urgent: true)
    }

    /// Called by the gateway's sweep once the deadline this process set passed: TTLs and reply
    /// deadlines applied, refused publishes retried.
    func commandDeadlinePassed() async {
        guard !stopped, !deleted else { return }
        let now = Timestamp.nowMillis()
        let expired = expireCommands(at: now)
        for command in expired where command.status == .failed {
            state.counters.commandsTimedOut += 1
            runtime.counters.commandsTimedOut.add(1, ordering: .relaxed)
        }
        if let retry = commandRetryAt, retry <= now { await deliverQueuedCommands() }
        scheduleCommandDeadline()
        if !expired.isEmpty { await changed(urgent: true) }
    }

    /// ``DeviceState/expireCommands(at:)`` with a `command` event for each command it changed.
    private func expireCommands(at now: Int64) -> [QueuedCommand] {
        let changed = state.expireCommands(at: now)
        for command in changed { emitCommand(command) }
        return changed
    }

    /// A queued command's `command` event: `{"id", "name", "status", "reply"?, "error"?}`.
    private func emitCommand(_ command: QueuedCommand) {
        var data: [String: JSONValue] = ["id": .string(command.id), "name": .string(command.name), "status": .string(command.status.rawValue)]
        if let reply = command.reply { data["reply"] = reply }
        if let error = command.error { data["error"] = .string(error) }
        emit(.command, JSONValue.object(data).serialized())
    }

    /// Tells the sweep when this process's commands next need it (or that they do not).
    private func scheduleCommandDeadline() {
        let next = [state.nextCommandDeadline, commandRetryAt].compactMap { $0 }.min()
        guard !stopped, !deleted, let next else {
            runtime.commandTimers.remove(id, self)
            return
        }
        runtime.commandTimers.set(id, self, at: next)
    }

    // MARK: Events

    /// Emits an event of this device (docs/gateway.md, “Events”) with the next `seq`. The first event of a process
    /// life first continues the numbering after the highest `seq` this node's hub received for
    /// the device (after a crash the checkpoint may predate events the dead host sent), and the
    /// first event of a device ever is preceded by `lifecycle` `created`.
    private func emit(_ type: EventType, _ data: [UInt8]) {
        if !eventsSynced {
            syncEvents()
            if state.eventSeq == 0 && type != .lifecycle { emitNow(.lifecycle, Array(#"{"status":"created"}"#.utf8)) }
        }
        emitNow(type, data)
    }

    private func syncEvents() {
        eventsSynced = true
        if let known = runtime.events.lastSequence(of: id) {
            state.eventSeq = max(state.eventSeq, known.seq)
            state.eventTime = max(state.eventTime, known.time)
        }
    }

    private func emitNow(_ type: EventType, _ data: [UInt8]) {
        if eventGroups.set != state.groups { eventGroups = (state.groups, state.groups.sorted()) }
        let seq = state.eventSeq + 1
        state.eventTime = runtime.events.emit(device: id, seq: seq, type: type, groups: eventGroups.sorted, data: data, after: state.eventTime)
        state.eventSeq = seq
    }

    /// A device provisioned before its first contact: its `created` event.
    private func emitCreatedIfNew() {
        if !eventsSynced { syncEvents() }
        if state.eventSeq == 0 { emitNow(.lifecycle, Array(#"{"status":"created"}"#.utf8)) }
    }

    // MARK: Groups and downlink

    /// Joins or leaves a device group (a cluster call, recorded in ``DeviceState/groups`` once it
    /// succeeded); the caller checkpoints.
    private func changeGroup(_ group: String, join: Bool) async throws {
        guard let pid = resolvePID() else {
            throw GatewayError.cluster("device \(id) is not registered on this node")
        }
        if join {
            try await runtime.node.join(runtime.swarmGroup(group), pid)
            state.groups.insert(group)
        } else {
            try await runtime.node.leave(runtime.swarmGroup(group), pid)
            state.groups.remove(group)
        }
    }

    private func publishDesired() async {
        let body = JSONValue.object(["version": .int(state.version), "state": state.desired]).serialized()
        let message = MQTTMessage(topic: runtime.topics.desired(id), payload: body, qos: .atLeastOnce, retain: true)
        do {
            try await runtime.brokers.publish(message, broker: state.broker)
            state.counters.desiredPublished += 1
            state.publishedVersion = max(state.publishedVersion, state.version)
            runtime.counters.desiredPublished.add(1, ordering: .relaxed)
            markDirty()
        } catch {
            runtime.counters.publishFailures.add(1, ordering: .relaxed)
            runtime.logger.warning("device \(id): desired state v\(state.version) not published: \(error)")
        }
    }

    /// The twin in the deterministic encoding (`DeviceTwin.json`: sorted keys, `null` for absent
    /// optionals), which decodes as a `DeviceTwin` and is what the HTTP API answers as is.
    private func twinBytes() throws -> [UInt8] {
        if let twinCache { return twinCache }
        let bytes = state.twin(node: runtime.nodeName).json.serialized()
        twinCache = bytes
        return bytes
    }

    /// The twin with its desired version (the ETag), as the answer of a call.
    private func twinReply() throws -> [UInt8] {
        DeviceReply.twin(version: state.version, json: try twinBytes()).encoded()
    }

    // MARK: Checkpoints and the store

    /// A write from the backend API: stored and replicated before the call answers. The new
    /// state is committed to the store (group commit, ``StoreWriter/commit(_:)``) and
    /// checkpointed to the ring successor, which acknowledges it
    /// (``SwarmNode/checkpointAcknowledged(_:state:)``), both at once; so neither a crash of this
    /// node nor a restart of the whole cluster can lose it (nor hand out its desired version
    /// twice). nil when both succeeded, else the refusal to answer: HTTP 503 `storeUnavailable`
    /// when the store did not commit (the change is undone to `undo`, when given), 503
    /// `notReplicated` when the successor did not confirm.
    private func persistAPIWrite(undo: DeviceState?) async -> [UInt8]? {
        changes += 1
        let covered = changes
        if !stopped { updateIndex() }
        guard !stopped, let pid = resolvePID() else {
            markDirty()
            return DeviceReply.refused(code: "notReplicated", version: state.version, message: "device \(id) is not registered on this node").encoded()
        }
        let json = nextRevision()
        let node = runtime.node
        let storage = runtime.storage
        let row = storage?.row(state, json: json)
        async let replicated: (any Error)? = {
            do {
                try await node.checkpointAcknowledged(pid, state: json)
                return nil
            } catch {
                return error
            }
        }()
        async let stored: (any Error)? = {
            guard let storage, let row else { return nil }
            do {
                try await storage.writer.commit(.put(row))
                return nil
            } catch {
                return error
            }
        }()
        let (replicationError, storeError) = await (replicated, stored)
        if let storeError {
            if let undo {
                // Keep the revision: the undone state is the newest and is written again.
                // And the event numbering: events already emitted keep their seq.
                let (revision, born) = (state.revision, state.born)
                let (eventSeq, eventTime) = (state.eventSeq, state.eventTime)
                state = undo
                state.revision = revision
                state.born = born
                state.eventSeq = eventSeq
                state.eventTime = eventTime
            }
            changes += 1
            markDirty()
            return DeviceReply.refused(
                code: "storeUnavailable", version: state.version,
                message: "the change to device \(id) was not stored (\(storeError))\(undo == nil ? "; it is applied in memory and may be lost in a restart of every node" : " and is undone")"
            ).encoded()
        }
        if replicationError == nil {
            checkpointedChanges = max(checkpointedChanges, covered)
            lastCheckpoint = .now
            runtime.counters.checkpoints.add(1, ordering: .relaxed)
            return nil
        }
        markDirty()
        return DeviceReply.refused(
            code: "notReplicated", version: state.version,
            message: "the change to device \(id) is applied and stored but its successor replica did not confirm it (\(replicationError.map { "\($0)" } ?? "")); it may be lost if \(runtime.nodeName) fails now"
        ).encoded()
    }

    /// A new revision for the state (the first one is also its `born`), and the state's JSON.
    private func nextRevision() -> [UInt8] {
        state.revision = Revision.next(after: state.revision, nowMicros: Timestamp.nowMicros())
        if state.born == 0 { state.born = state.revision }
        return state.checkpointJSON()
    }

    /// Records a change; checkpoints now when `urgent` or when the last checkpoint is older than
    /// the interval, else leaves it to the sweep.
    private func changed(urgent: Bool) async {
        changes += 1
        let interval = runtime.settings.checkpointInterval
        if urgent || lastCheckpoint.map({ ContinuousClock.now - $0 >= interval }) ?? true {
            await checkpoint()
        } else {
            markDirty()
        }
    }

    /// Writes the checkpoint if a change is not covered yet (the sweep calls this, after taking
    /// this process out of the table).
    func flush() async {
        inDirtyTable = false
        if changes != checkpointedChanges { await checkpoint() }
    }

    /// Leaves the checkpoint to the sweep: one table entry until the sweep takes it (not one
    /// lock and insert per message).
    private func markDirty() {
        guard !inDirtyTable else { return }
        inDirtyTable = true
        let me = self
        runtime.dirty.withLock { $0[id] = me }
    }

    /// A checkpoint to the ring successor, and the same state written behind to the store.
    private func checkpoint() async {
        guard !stopped, !deleted else { return }
        updateIndex()
        guard let pid = resolvePID() else {
            // Not in the local view yet (just started by a handoff): the sweep retries.
            markDirty()
            return
        }
        let covered = changes
        let json = nextRevision()
        if let storage = runtime.storage { storage.writer.writeBehind(.put(storage.row(state, json: json))) }
        do {
            try await runtime.node.checkpoint(pid, state: json)
            checkpointedChanges = covered
            lastCheckpoint = .now
            runtime.counters.checkpoints.add(1, ordering: .relaxed)
        } catch {
            // The node is stopping; nothing to replicate to.
        }
        if changes != checkpointedChanges {
            markDirty()
        }
    }

    /// Writes this process's entry in the node's search index (with every checkpoint).
    private func updateIndex() {
        runtime.index.update(DeviceIndex.Entry(state, owner: ObjectIdentifier(self)))
    }

    /// The node tells the process its id before its first message.
    func started(as pid: ProcessID) {
        self.pid = pid
    }

    // MARK: Recovery

    /// Before an API write: waits (bounded) for the recovery barrier, so the state has every
    /// stored copy of this device before it changes (``DeviceRecovery``), then takes in what
    /// recovery holds for it. nil when ready, else the refusal (503 `storeUnavailable`).
    private func recovered() async -> [UInt8]? {
        let recovery = runtime.recovery
        if !recovery.isReady {
            guard await recovery.waitUntilReady(timeout: runtime.settings.queryTimeout * 4 / 5) else {
                return DeviceReply.refused(
                    code: "storeUnavailable", version: state.version,
                    message: "node \(runtime.nodeName) is still recovering device state from the store; retry shortly"
                ).encoded()
            }
        }
        await restoreFromRecovery()
        return nil
    }

    /// Takes in the stored copy recovery holds for this device (``DeviceState/absorb(_:)``),
    /// joins the groups of a state that came from the store, publishes a desired version the
    /// device may not have seen, and replicates a state that came from the store to the ring
    /// successor (which has nothing of it after a restart of every node).
    private func restoreFromRecovery() async {
        var took = false
        if let stored = runtime.recovery.take(id), state.absorb(stored) {
            took = true
            groupsUnchecked = true
        }
        if groupsUnchecked {
            groupsUnchecked = false
            for group in state.groups.sorted() where group != "all" {
                do { try await changeGroup(group, join: true) } catch {
                    runtime.logger.warning("device \(id): rejoining group \(group) failed: \(error)")
                }
            }
            if !took && lastCheckpoint == nil, !stopped, let pid = resolvePID() {
                // Started from its row, unchanged: the successor gets it, the store has it.
                updateIndex()
                try? await runtime.node.checkpoint(pid, state: state.checkpointJSON())
                lastCheckpoint = .now
            }
        }
        if took { await changed(urgent: true) }
        if state.version > state.publishedVersion { await publishDesired() }
        // Queued commands of a stored state expire on time here too.
        scheduleCommandDeadline()
    }

    /// This process's id: told by the node before the first message (``started(as:)``), so no
    /// lookup and no wait; the local registration of the device id only for a process that was
    /// never told (created outside a node).
    private func resolvePID() -> ProcessID? {
        if let pid { return pid }
        guard let found = runtime.node.whereis(id), found.node == runtime.node.id else { return nil }
        pid = found
        return found
    }
}
