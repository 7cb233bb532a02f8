import Foundation
import GatewayStore
import Logging
import MQTT
import SwarmCore
import SwarmJSON
import SwarmNode
import Synchronization

/// The MQTT device gateway of one node (docs/gateway.md) and the facade the backend API builds on.
///
/// ## Shape
/// One ``DeviceGateway`` per ``SwarmNode``. It owns one `MQTTClient` per configured broker
/// (``GatewaySettings/brokers``); on every broker it joins the share group
/// (`$share/{shareGroup}/{prefix}/+/status|telemetry|state/reported|replies/+`). It registers the
/// device process kind on the node (``DeviceProcess``, one per device id, on the id's ring owner)
/// and its own per-node process (``GatewayNodeProcess``, `gateway-node:{node}`).
///
/// ## Ingress
/// The MQTT network thread only copies each message into the client's stream (the `MQTT`
/// module's contract). One task per broker takes messages off that stream and validates them
/// synchronously (topic shape, device id, size, JSON, shape); rejects are counted
/// (``GatewayStats/rejected``) and logged at most once per key and interval. Accepted messages go
/// to one of ``GatewaySettings/ingressLanes`` ordered lanes chosen by a hash of the device id;
/// each lane's task calls `whereisOrRegister(id)` (atomic on the owner: one process, created at
/// first contact) and then `send(id, …)` by name, retrying transient cluster errors (a name in
/// transition, a ring change) a few times with backoff, so a race with a handoff or a crash does
/// not lose the message. Every valid status message creates the process, `offline` included: the
/// ingress node's replica can lag the owner by milliseconds, and dropping an `offline` for a
/// device "not known yet" would lose a real will.
///
/// ## Downlink
/// Desired state and group downlinks are published by the device process (on its host) on the
/// broker the device last talked through (all brokers if unknown). Commands are published by the
/// node that serves the request, with response topic `{prefix}/{id}/replies/{node}` (inside the
/// device's subtree, so the strict ACL lets the device answer) and random correlation data. The
/// reply reaches one gateway node through the shared subscription; when that is not the waiting
/// node, it is forwarded to the waiting node's `gateway-node:{node}` process (one cluster hop).
///
/// ## Durable state
/// With ``GatewaySettings/store`` the device processes write their state through it
/// (``DeviceStorage``), the node writes the successor replicas it holds (per-node stores), and
/// ``run()`` recovers every stored device at start (``DeviceRecovery``): API writes wait until
/// the cluster's stored rows reached their owners, and ``isReady()`` is false until then.
///
/// ## Lifecycle
/// ``start()`` (register the kind, run the store writer, connect, subscribe), ``run()`` (until
/// ``shutdown()``), ``shutdown()`` (flushes the store). The node's own lifecycle is separate:
/// start the node first, stop it after.
public final class DeviceGateway: Sendable {
    /// The node this gateway serves.
    public let node: SwarmNode
    /// The settings it was created with.
    public let settings: GatewaySettings
    /// This node's level in command reply topics (`{prefix}/{id}/replies/{nodeToken}`): the node
    /// name with characters outside `[A-Za-z0-9._-]` replaced by `_`.
    public let nodeToken: String
    /// The device topics.
    public let topics: DeviceTopics

    let runtime: DeviceRuntime
    let counters = GatewayCounters()
    let replies = ReplyTable()
    let rejectLog: RateLimitedLog
    let phase = Mutex(Phase.idle)
    let lanes: [IngressLane]
    let brokerReceived: [Counter]
    /// Messages handed to a lane and not routed yet.
    let inLanes = Atomic<Int>(0)
    /// Set by ``drain(timeout:)``: the shared subscriptions are gone.
    let ingressStopped = Atomic<Bool>(false)
    /// The store writer's loop (``GatewaySettings/store``), from ``start()`` to ``shutdown()``.
    let writerTask = Mutex<Task<Void, Never>?>(nil)

    enum Phase: Equatable {
        case idle, starting, running, stopped
    }

    var logger: Logger { settings.logger }

    /// Creates the gateway and its MQTT clients (nothing connects before ``start()``). Throws
    /// when there is no broker or a client setting is refused.
    public init(node: SwarmNode, settings: GatewaySettings) throws {
        guard !settings.brokers.isEmpty else { throw GatewayError.brokerUnavailable("no broker configured") }
        self.node = node
        self.settings = settings
        self.topics = DeviceTopics(prefix: settings.topicPrefix)
        self.nodeToken = GatewaySettings.topicSafe(node.id.name)
        self.rejectLog = RateLimitedLog(logger: settings.logger, interval: settings.rejectLogInterval)
        var entries: [BrokerPool.Entry] = []
        for (index, broker) in settings.brokers.enumerated() {
            var client = broker.client
            if client.clientID.hasPrefix("swarm-") && client.clientID.count == 22 {
                // The random default: make it recognisable (and stable across restarts).
                client.clientID = GatewaySettings.clientID(node: node.id.name, brokerIndex: index)
            }
            // Backpressure, not loss: the consumer takes batches, and when it falls behind the
            // client's network thread stops reading, so the broker queues (``IngressLane``).
            if client.flowControlLimit == nil { client.flowControlLimit = settings.ingressFlowControlLimit }
            entries.append(BrokerPool.Entry(id: broker.id, client: try MQTTClient(settings: client, logger: settings.logger)))
        }
        self.brokerReceived = entries.map { _ in Counter() }
        let pool = BrokerPool(entries: entries)
        self.runtime = DeviceRuntime(node: node, settings: settings, counters: counters, brokers: pool, rejectLog: rejectLog)
        self.lanes = (0..<max(1, settings.ingressLanes)).map { _ in IngressLane(capacity: settings.ingressLaneCapacity) }
    }

    // MARK: - Lifecycle

    /// Registers the device process kind on the node, connects to every broker and subscribes.
    /// Idempotent once running. Throws (and closes the clients) when a broker refuses or cannot
    /// be reached within its connect timeout.
    public func start() async throws {
        let proceed = try phase.withLock { phase -> Bool in
            switch phase {
            case .idle:
                phase = .starting
                return true
            case .starting, .running: return false
            case .stopped: throw GatewayError.notRunning
            }
        }
        guard proceed else { return }
        let runtime = self.runtime
        let counters = self.counters
        await node.register(kind: settings.processKind) { name, _ in
            // A device deleted a moment ago is not started again by a late message of its own.
            guard !runtime.tombstones.contains(name) else { throw GatewayError.unknownDevice(name) }
            counters.processesStarted.add(1, ordering: .relaxed)
            return DeviceProcess(id: name, runtime: runtime)
        }
        let context = NodeContext(replies: replies, counters: counters, runtime: runtime)
        await node.register(kind: GatewaySettings.nodeProcessKind) { _, _ in GatewayNodeProcess(context: context) }
        if let storage = runtime.storage {
            let writer = storage.writer
            // Nothing is written before recovery has read the whole store (``recover()``): a
            // process created by a device message meanwhile must not replace a row not read yet.
            writer.hold()
            writerTask.withLock { $0 = Task { await writer.run() } }
            // Per-node stores keep the successor replicas this node holds, so a cluster that
            // comes back without one node's disk still has every twin.
            if !storage.isShared { await node.observeStandby(storage.standbyObserver()) }
        }
        do {
            try await registerNodeProcess()
            try await startEvents()
            try await settings.logins?.start()
            for entry in runtime.brokers.entries {
                try await entry.client.connect()
                for filter in topics.sharedFilters(group: settings.shareGroup) {
                    try await entry.client.subscribe(filter, qos: settings.ingressQoS)
                }
            }
        } catch {
            await shutdown()
            throw error
        }
        let started = phase.withLock { phase -> Bool in
            guard phase == .starting else { return false }
            phase = .running
            return true
        }
        guard started else { throw GatewayError.notRunning }
        logger.info("gateway on \(node.id.name): \(runtime.brokers.entries.count) broker(s), reply topics \(topics.reply("+", node: nodeToken))")
    }

    /// Spawns this node's ``GatewayNodeProcess``, registers it as `gateway-node:{token}` and joins
    /// it to ``GatewaySettings/nodeGroup``. A previous life of this node may still be in a peer's
    /// view for a moment (the registration is local, so only this node's own view counts here);
    /// a name held by another process here is an error.
    private func registerNodeProcess() async throws {
        let pid = try await node.spawn(kind: GatewaySettings.nodeProcessKind)
        switch try await node.register(GatewaySettings.nodeProcessName(nodeToken), existing: pid) {
        case .registered:
            break
        case .alreadyRegistered(let other):
            throw GatewayError.cluster("gateway-node:\(nodeToken) is already registered by \(other): two gateway nodes with one topic-safe name")
        case .failed(let error):
            throw GatewayError.cluster("registering gateway-node:\(nodeToken): \(error)")
        }
        try await node.join(GatewaySettings.nodeGroup, pid)
    }

    /// Runs ingress, lanes, the checkpoint sweep and the recovery from the store until
    /// ``shutdown()``; starts first if needed.
    public func run() async throws {
        try await start()
        await withDiscardingTaskGroup { group in
            group.addTask { await self.recover() }
            group.addTask { await self.registerRecovered() }
            for (index, entry) in runtime.brokers.entries.enumerated() {
                group.addTask { await self.consumeMessages(entry, index: index) }
                group.addTask { await self.consumeEvents(entry) }
            }
            for lane in lanes {
                let slowPath = IngressSlowPath { [self] id, items in await self.routeParked(id, items) }
                group.addTask { await self.consumeLane(lane, slowPath: slowPath) }
            }
            group.addTask { await self.sweep() }
            group.addTask { await self.runEventPump() }
            group.addTask { await self.runEventStore() }
            group.addTask { await self.runWebhookKeeper() }
        }
    }

    /// Stops: closes every MQTT client (no will, no DISCONNECT reason), fails waiting commands,
    /// writes every device's last change to the store and closes it, ends ``run()``. Device
    /// processes live on with the node. Idempotent.
    public func shutdown() async {
        let wasStopped = phase.withLock { phase -> Bool in
            defer { phase = .stopped }
            return phase == .stopped
        }
        guard !wasStopped else { return }
        for lane in lanes { lane.finish() }
        runtime.recovery.finish()
        replies.failAll(GatewayError.notRunning)
        await stopEvents()
        for entry in runtime.brokers.entries { await entry.client.close() }
        await settings.logins?.shutdown()
        if let storage = runtime.storage {
            // Changes not checkpointed yet go to the store's queue, and the queue to disk.
            for process in runtime.takeDirty() { await process.flush() }
            let started = ContinuousClock.now
            await storage.writer.close()
            await writerTask.withLock { $0 }?.value
            logger.info("store \(storage.writer.store.location) flushed and closed in \(ContinuousClock.now - started)")
        }
    }

    /// Graceful leave of this node (SIGTERM, `POST /v1/cluster/drain`): stops taking device
    /// messages (unsubscribes the shared subscriptions on every broker, so the brokers give this
    /// node's share to the other gateway nodes), routes what it already took, then drains the
    /// node, which hands every device process over with its whole state. Returns the node's drain
    /// result. Facade calls (and command replies) keep working until ``shutdown()``; call that,
    /// then stop the node.
    ///
    /// With a store, a drain that has nobody to hand the devices to — every peer is draining or
    /// gone, as when the whole cluster is stopped at once — does not wait out the drain timeout:
    /// as soon as the ring has no other node (checked every 100 ms, twice in a row) it returns
    /// false, and ``shutdown()`` writes every device's state to the store, from which the cluster
    /// recovers when it starts again.
    @discardableResult
    public func drain(timeout: Duration? = nil) async -> Bool {
        if !ingressStopped.exchange(true, ordering: .relaxed) {
            for entry in runtime.brokers.entries {
                for filter in topics.sharedFilters(group: settings.shareGroup) {
                    do {
                        try await entry.client.unsubscribe(filter)
                    } catch {
                        logger.warning("drain: unsubscribe \(filter) on \(entry.id) failed: \(error)")
                    }
                }
            }
            // What the broker sent before the UNSUBACK is in the clients' queues or the lanes: route it.
            let deadline = ContinuousClock.now + .seconds(5)
            try? await Task.sleep(for: .milliseconds(100))
            func waiting() -> Int {
                runtime.brokers.entries.reduce(inLanes.load(ordering: .relaxed)) { $0 + $1.client.inboundQueued }
            }
            while waiting() > 0 && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        guard runtime.storage != nil else { return await node.drain(timeout: timeout) }
        let node = self.node
        let result = Mutex<Bool?>(nil)
        Task { let drained = await node.drain(timeout: timeout); result.withLock { $0 = drained } }
        var alone = 0
        while true {
            if let drained = result.withLock({ $0 }) { return drained }
            try? await Task.sleep(for: .milliseconds(100))
            if let dump = try? await node.dump(), dump.draining, dump.ringNodes.allSatisfy({ $0 == node.id.name }) {
                alone += 1
                if alone >= 2 {
                    let left = dump.localNames
                    logger.notice("drain: no peer can take the \(left) local name(s) (every other node is draining or gone); stopping with their state in \(runtime.storage!.writer.store.location)")
                    return false
                }
            } else {
                alone = 0
            }
        }
    }

    /// True while running.
    public var isRunning: Bool { phase.withLock { $0 == .running } }

    /// Readiness: the gateway runs and takes ingress (not drained), its node is `running`, every
    /// broker connection is up, recovery from the store is complete and the store commits.
    public func isReady() async -> Bool {
        await readiness().ready
    }

    /// ``isReady()`` with the reason when not ready (`/readyz`).
    public func readiness() async -> Readiness {
        guard isRunning, !ingressStopped.load(ordering: .relaxed), await node.lifecycle == .running else {
            return Readiness(ready: false, code: "notReady", reason: "node \(node.id.name) is not running (starting, draining or stopped)")
        }
        if let broker = runtime.brokers.entries.first(where: { !$0.client.isConnected }) {
            return Readiness(ready: false, code: "notReady", reason: "broker \(broker.id) is not connected")
        }
        if !runtime.recovery.isReady {
            return Readiness(ready: false, code: "notReady", reason: "recovering device state from the store")
        }
        if let storage = runtime.storage, !storage.writer.isHealthy {
            return Readiness(
                ready: false, code: "storeUnavailable",
                reason: "\(storage.writer.store.location) does not commit: \(storage.writer.lastError ?? "unknown error"); API writes answer 503, ingress is kept in memory")
        }
        return Readiness(ready: true, code: "ready", reason: "ready")
    }

    /// The store writer's figures (`/metrics`), nil without a store.
    public var storeStats: StoreStats? { runtime.storage?.writer.stats }

    /// Recovery from the store: whether it is complete, and how long it took.
    public var recoveryStatus: (complete: Bool, duration: Duration?) {
        let summary = runtime.recovery.summary
        return (summary.ready, summary.readyAfter)
    }

    // MARK: - Facade: devices

    /// The twin of device `id`, or nil when no such device exists (HTTP 404). Asks the device
    /// process wherever it runs (one Swarm call).
    public func twin(_ id: String) async throws -> DeviceTwin? {
        guard let bytes = try await twinJSON(id) else { return nil }
        return try decodeTwin(bytes.json)
    }

    /// The twin of device `id` as JSON bytes (the encoding of ``DeviceTwin/json``: sorted keys,
    /// `null` for absent optionals) with its desired version (the `ETag`), or nil when no such
    /// device exists: ``twin(_:)`` without the decode, for the HTTP API's `GET /v1/devices/{id}`.
    public func twinJSON(_ id: String) async throws -> TwinBytes? {
        try validate(id)
        guard node.whereis(id) != nil else { return nil }
        do {
            return try twinBytes(try await node.call(id, DeviceMessage.twin.encoded(), timeout: settings.queryTimeout), device: id)
        } catch SwarmError.unknownName, GatewayError.unknownDevice {
            return nil
        } catch {
            throw mapped(error, device: id)
        }
    }

    /// Applies `patch` (RFC 7386 merge patch, must be an object) to the desired state of device
    /// `id`, bumps its version, publishes `{"version": n, "state": {…}}` retained to
    /// `{prefix}/{id}/state/desired`, and returns the new twin. With `ifVersions` (the `If-Match`
    /// versions) it applies only when the current version is one of them, else throws
    /// ``GatewayError/versionConflict(current:)`` and changes nothing. Answers once the device's
    /// ring successor holds the new state (else ``GatewayError/notReplicated(_:)``). Throws
    /// `unknownDevice`.
    @discardableResult
    public func patchDesired(_ id: String, _ patch: JSONValue, ifVersions: [Int64]? = nil) async throws -> DeviceTwin {
        try decodeTwin(try await patchDesiredJSON(id, patch, ifVersions: ifVersions).json)
    }

    /// ``patchDesired(_:_:ifVersions:)`` answering the twin's bytes and version (HTTP).
    public func patchDesiredJSON(_ id: String, _ patch: JSONValue, ifVersions: [Int64]? = nil) async throws -> TwinBytes {
        try validate(id)
        guard case .object = patch else { throw GatewayError.invalidBody("a desired-state patch must be a JSON object") }
        return try await callTwin(id, .patchDesired(patch, ifVersions: ifVersions))
    }

    /// Applies `patch` (a JSON merge patch, an object) to the backend-only tags of device `id`;
    /// returns the twin once replicated. Tags are never sent to the device.
    public func patchTags(_ id: String, _ patch: JSONValue) async throws -> TwinBytes {
        try validate(id)
        guard case .object = patch else { throw GatewayError.invalidBody("a tags patch must be a JSON object") }
        return try await callTwin(id, .patchTags(patch))
    }

    /// Creates device `id` ahead of its first contact, or updates it (`PUT /v1/devices/{id}`):
    /// with a `password` its broker login (user name = the id) is created or changed first
    /// (``GatewaySettings/logins``; without one: ``GatewayError/credentialsNotManaged``), then the
    /// device process is registered on its owner (the twin exists, offline), `tags` replace the
    /// tags and the device joins `groups`. Answers once replicated; `created` tells whether the
    /// device is new.
    public func provision(_ id: String, password: String? = nil, tags: JSONValue? = nil, groups: [String] = []) async throws -> ProvisionResult {
        try validate(id)
        for group in groups { try validate(group) }
        if let tags, tags.objectValue == nil { throw GatewayError.invalidBody("'tags' must be a JSON object") }
        guard isRunning else { throw GatewayError.notRunning }
        if let password {
            guard let logins = settings.logins else { throw GatewayError.credentialsNotManaged }
            guard !password.isEmpty, password.utf8.count <= 256, !password.contains("\0") else {
                throw GatewayError.invalidBody("'password' must be 1 to 256 bytes")
            }
            try await logins.setPassword(password, for: id)
        }
        if runtime.tombstones.contains(id) { try await broadcastTombstone(id, set: false) }
        let created: Bool
        do {
            switch try await node.register(id, kind: settings.processKind, groups: [runtime.swarmGroup("all")]) {
            case .registered: created = true
            case .alreadyRegistered: created = false
            case .failed(let error): throw error
            }
        } catch {
            throw mapped(error, device: id)
        }
        let twin = try await callTwin(id, .provision(tags: tags, groups: groups.filter { $0 != "all" }))
        return ProvisionResult(twin: twin, created: created)
    }

    /// Deletes device `id` (`DELETE /v1/devices/{id}`): every node refuses its messages for a
    /// minute (``Tombstones``: its will or a late message must not bring it back), its process is
    /// stopped and unregistered (which removes it from every group and drops its successor
    /// replica), its login is removed (which disconnects it), and its retained `status` and
    /// `state/desired` are cleared on the broker. Throws `unknownDevice`.
    public func delete(_ id: String) async throws {
        try validate(id)
        guard isRunning else { throw GatewayError.notRunning }
        guard node.whereis(id) != nil else { throw GatewayError.unknownDevice(id) }
        try await broadcastTombstone(id, set: true)
        let deletion: DeletedReply
        do {
            deletion = try DeletedReply(decoding: try await node.call(id, DeviceMessage.delete.encoded(), timeout: settings.queryTimeout))
            try await node.unregister(id)
        } catch SwarmError.unknownName {
            throw GatewayError.unknownDevice(id)
        } catch {
            throw mapped(error, device: id)
        }
        let broker = deletion.broker
        let forgotten = await forget(id, revision: deletion.revision)
        if let logins = settings.logins { try await logins.removeLogin(id) }
        for topic in [topics.status(id), topics.desired(id)] {
            // An empty retained message clears the retained one.
            do {
                try await runtime.brokers.publish(MQTTMessage(topic: topic, payload: [], qos: .atLeastOnce, retain: true), broker: broker)
            } catch {
                counters.publishFailures.add(1, ordering: .relaxed)
                throw GatewayError.brokerUnavailable("device \(id) deleted, but its retained \(topic) was not cleared: \(error)")
            }
        }
        if let forgotten { throw forgotten }
    }

    /// Deletes `id`'s rows from the store and records its tombstone (durably): on every gateway
    /// node's store with per-node stores (each may hold a row or a replica), once with a shared
    /// store. The error to answer when this node's store did not commit it.
    private func forget(_ id: String, revision: Int64) async -> GatewayError? {
        guard let storage = runtime.storage else { return nil }
        storage.recordTombstone(id, revision: revision)
        if !storage.isShared {
            let result = await node.multiCall(GatewaySettings.nodeGroup, NodeMessage.forget(id: id, revision: revision).encoded(), timeout: settings.queryTimeout)
            if !result.failed.isEmpty {
                logger.warning("device \(id): \(result.failed.count) gateway node(s) did not confirm its deletion from their stores in time")
            }
        }
        do {
            // Here (again, with per-node stores: idempotent) — the answer depends on it.
            try await storage.writer.commit(.delete(id: id, revision: revision, tombstone: true))
            return nil
        } catch {
            return GatewayError.storeUnavailable("device \(id) is deleted, but the store did not record it (\(error)); it may come back when every node restarts")
        }
    }

    /// Records (or clears) a deletion on every gateway node; waits for each.
    private func broadcastTombstone(_ id: String, set: Bool) async throws {
        if set { runtime.tombstones.insert(id) } else { runtime.tombstones.remove(id) }
        let result = await node.multiCall(GatewaySettings.nodeGroup, NodeMessage.tombstone(id: id, set: set).encoded(), timeout: settings.queryTimeout)
        if !result.failed.isEmpty {
            logger.warning("device \(id): \(result.failed.count) gateway node(s) did not confirm the \(set ? "deletion" : "re-creation") in time")
        }
    }

    /// Sends command `name` with `body` to device `id` on `{prefix}/{id}/commands/{name}` (QoS 1,
    /// response topic `{prefix}/{id}/replies/{nodeToken}`, random correlation data, message
    /// expiry = the timeout) and waits for the device's reply. The device process is asked first
    /// whether the device is online (and on which broker): an offline device is
    /// ``GatewayError/deviceOffline(_:)`` at once (HTTP 409; queue it with
    /// ``queueCommand(_:name:body:ttl:timeout:)`` instead). Throws `unknownDevice`,
    /// `commandTimeout` (HTTP 504), `invalidReply` (not JSON), `brokerUnavailable`.
    public func command(_ id: String, name: String, body: JSONValue, timeout: Duration? = nil) async throws -> JSONValue {
        try validate(id)
        try validate(name)
        guard isRunning else { throw GatewayError.notRunning }
        guard node.whereis(id) != nil else { throw GatewayError.unknownDevice(id) }
        let timeout = timeout ?? settings.commandTimeout
        let answer: [UInt8]
        do {
            answer = try await node.call(id, DeviceMessage.route(command: name).encoded(), timeout: timeout)
        } catch {
            throw mapped(error, device: id)
        }
        guard let route = try? RouteReply(decoding: answer) else {
            _ = try deviceReply(answer, device: id)  // a refusal: the device is being deleted
            throw GatewayError.cluster("undecodable route reply")
        }
        guard route.online else { throw GatewayError.deviceOffline(id) }
        let broker = route.broker
        let key = (0..<16).map { _ in UInt8.random(in: 0...255) }
        let seconds = UInt32(clamping: max(1, Int((Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18).rounded(.up))))
        let message = MQTTMessage(
            topic: topics.command(id, name), payload: body.serialized(), qos: .atLeastOnce,
            properties: MQTTProperties(responseTopic: topics.reply(id, node: nodeToken), correlationData: key, messageExpiryInterval: seconds))
        replies.open(key)
        counters.commandsSent.add(1, ordering: .relaxed)
        do {
            try await runtime.brokers.publish(message, broker: broker)
        } catch {
            replies.fail(key, GatewayError.brokerUnavailable("\(error)"))
            counters.publishFailures.add(1, ordering: .relaxed)
            throw GatewayError.brokerUnavailable("\(error)")
        }
        let timedOut = GatewayError.commandTimeout(device: id, command: name)
        let replies = self.replies
        let outcome: Result<[UInt8], any Error> = await withTaskGroup(of: Result<[UInt8], any Error>?.self) { group in
            group.addTask {
                do {
                    return .success(try await replies.wait(key, failure: timedOut))
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                guard (try? await Task.sleep(for: timeout)) != nil else { return nil }
                replies.fail(key, timedOut)
                return nil
            }
            var result: Result<[UInt8], any Error> = .failure(timedOut)
            if let first = await group.next(), let first { result = first } else if let second = await group.next(), let second { result = second }
            group.cancelAll()
            return result
        }
        var answered = false
        if case .success = outcome { answered = true }
        // For the device's counters; a device that vanished meanwhile is no error here.
        try? await node.send(id, DeviceMessage.commandOutcome(command: name, answered: answered).encoded())
        switch outcome {
        case .success(let bytes):
            counters.commandsAnswered.add(1, ordering: .relaxed)
            do {
                return try JSONValue.parse(bytes, limit: settings.maxPayloadBytes)
            } catch {
                throw GatewayError.invalidReply("\(error)")
            }
        case .failure(let error):
            if case GatewayError.commandTimeout = error { counters.commandsTimedOut.add(1, ordering: .relaxed) }
            throw error
        }
    }

    // MARK: - Facade: queued commands

    /// The longest TTL of a queued command: 30 days.
    public static let maxCommandTTL: Duration = .seconds(30 * 24 * 3600)

    /// Queues command `name` with `body` for device `id` (`POST …/commands/{name}?ttl=`, docs/gateway.md, “Queued commands”):
    /// kept in the device's state (replicated before this answers, like every API write), sent
    /// at once when the device is online, else at its next birth, in the order queued; never sent
    /// once `ttl` has passed (it becomes `expired`). Once sent, the device has until the later of
    /// the TTL and `timeout` (default ``GatewaySettings/commandTimeout``) to answer, else the
    /// command is `failed`. Answers the receipt (`queued` or `sent`). Throws `unknownDevice`,
    /// `invalidBody` (TTL outside 1 s…30 days, body over ``GatewaySettings/maxPayloadBytes``),
    /// ``GatewayError/tooManyCommands(_:)`` (100 pending, HTTP 429), `notReplicated`.
    public func queueCommand(_ id: String, name: String, body: JSONValue, ttl: Duration, timeout: Duration? = nil) async throws -> CommandReceipt {
        try validate(id)
        try validate(name)
        guard ttl >= .seconds(1), ttl <= Self.maxCommandTTL else { throw GatewayError.invalidBody("a command's ttl must be 1 s to 30 days") }
        guard body.serialized().count <= settings.maxPayloadBytes else {
            throw GatewayError.invalidBody("a queued command's body must be at most \(settings.maxPayloadBytes) bytes")
        }
        guard isRunning else { throw GatewayError.notRunning }
        let window = timeout ?? settings.commandTimeout
        let message = DeviceMessage.queueCommand(name: name, body: body, ttl: Self.millis(ttl), replyWindow: Self.millis(window))
        let bytes = try await callJSON(id, message)
        do {
            return try JSONDecoder().decode(CommandReceipt.self, from: Data(bytes))
        } catch {
            throw GatewayError.cluster("undecodable command receipt: \(error)")
        }
    }

    /// Queued command `commandID` of device `id` (`GET …/commands/{cid}`). Throws
    /// `unknownDevice`, ``GatewayError/unknownCommand(device:id:)``.
    public func queuedCommand(_ id: String, commandID: String) async throws -> DeviceCommand {
        try validate(id)
        guard DeviceID.isValid(commandID) else { throw GatewayError.unknownCommand(device: id, id: commandID) }
        let bytes = try await callJSON(id, .commands(id: commandID))
        return try decodeCommand(bytes)
    }

    /// Device `id`'s queued commands, oldest first: the pending ones and the last finished ones
    /// (`GET …/commands`).
    public func queuedCommands(_ id: String) async throws -> [DeviceCommand] {
        try validate(id)
        let bytes = try await callJSON(id, .commands(id: nil))
        do {
            return try JSONDecoder().decode([String: [DeviceCommand]].self, from: Data(bytes))["commands"] ?? []
        } catch {
            throw GatewayError.cluster("undecodable command list: \(error)")
        }
    }

    private func decodeCommand(_ bytes: [UInt8]) throws -> DeviceCommand {
        do {
            return try JSONDecoder().decode(DeviceCommand.self, from: Data(bytes))
        } catch {
            throw GatewayError.cluster("undecodable command: \(error)")
        }
    }

    static func millis(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    // MARK: - Facade: groups

    /// Adds device `id` to device group `group` (Swarm group `{groupPrefix}{group}`); returns the
    /// twin. Throws `unknownDevice`, `invalidName`.
    @discardableResult
    public func addToGroup(_ id: String, group: String) async throws -> DeviceTwin {
        try validate(id)
        try validate(group)
        return try decodeTwin(try await callTwin(id, .group(group, join: true)).json)
    }

    /// Removes device `id` from `group` (not from `all`: `invalidBody`); returns the twin.
    @discardableResult
    public func removeFromGroup(_ id: String, group: String) async throws -> DeviceTwin {
        try validate(id)
        try validate(group)
        guard group != "all" else { throw GatewayError.invalidBody("every device stays in group 'all'") }
        return try decodeTwin(try await callTwin(id, .group(group, join: false)).json)
    }

    /// The device ids in `group`, sorted (a local read of the replica: no network round trip).
    public func groupMembers(_ group: String) async throws -> [String] {
        try validate(group)
        let pids = node.members(runtime.swarmGroup(group))
        let names = await namesByProcess()
        return pids.compactMap { names[$0] }.sorted()
    }

    /// Every device group with at least one member (including `all`), sorted by name, with its
    /// member count (a local read of the replica). Swarm groups outside the gateway's
    /// `groupPrefix` are not device groups and are left out.
    public func groups() -> [(group: String, members: Int)] {
        let prefix = runtime.settings.groupPrefix
        return node.groups().compactMap { entry in
            entry.group.hasPrefix(prefix) ? (String(entry.group.dropFirst(prefix.count)), entry.members) : nil
        }
    }

    /// Publishes `body` to every member of `group`: Swarm `publish` (one batch per node), and
    /// each member's process publishes it to `{prefix}/{id}/down` (QoS 1). Returns the number of
    /// members it was sent to (0 for an empty or unknown group).
    @discardableResult
    public func publish(group: String, body: JSONValue) async throws -> Int {
        try validate(group)
        let swarmGroup = runtime.swarmGroup(group)
        let count = node.members(swarmGroup).count
        guard count > 0 else { return 0 }
        do {
            try await node.publish(swarmGroup, DeviceMessage.down(body.serialized()).encoded())
        } catch {
            throw mapped(error, device: nil)
        }
        return count
    }

    /// Asks every member of `group` for its twin, or only the dotted `fields`
    /// (`["reported.x", "online"]`), with Swarm `multiCall`; members that do not answer within
    /// `timeout` are listed in `missing`. With `where` (a ``FleetQuery``), only members that
    /// match reply (each evaluates it on its own state); ``GroupQueryResult/matched`` counts
    /// them. Throws `invalidQuery` for a bad expression; never throws for a member.
    public func query(group: String, fields: [String]? = nil, where condition: String? = nil, timeout: Duration? = nil) async throws -> GroupQueryResult {
        try validate(group)
        if let condition { _ = try Self.parseQuery(condition) }
        let swarmGroup = runtime.swarmGroup(group)
        let members = node.members(swarmGroup)
        let message = DeviceMessage.query(fields: fields, where: condition).encoded()
        let result = await node.multiCall(swarmGroup, message, timeout: timeout ?? settings.queryTimeout)
        var replies: [String: JSONValue] = [:]
        var answered: Set<ProcessID> = []
        for (pid, bytes) in result.replies {
            if bytes.isEmpty {
                answered.insert(pid)  // did not match
                continue
            }
            guard let value = try? JSONValue.parse(bytes), let id = value["id"]?.stringValue, let data = value["data"] else { continue }
            replies[id] = data
            answered.insert(pid)
        }
        let names = await namesByProcess()
        let missing = members.filter { !answered.contains($0) }.map { names[$0] ?? $0.description }
        return GroupQueryResult(replies: replies, missing: missing.sorted())
    }

    // MARK: - Facade: fleet search

    /// The largest page of ``search(where:limit:cursor:timeout:)``.
    public static let maxSearchLimit = 1000

    /// Fleet search (`GET /v1/devices?where=…`, docs/gateway.md, “Fleet search”): the ids of the devices matching
    /// `where` (every device when nil), in id order, at most `limit` (1…``maxSearchLimit``),
    /// starting after `cursor` (the ``DeviceSearchResult/next`` of the previous page). Each
    /// gateway node evaluates the query over the devices it hosts (``DeviceIndex``, one
    /// multi-call to ``GatewaySettings/nodeGroup``) and answers its first `limit + 1` ids; this
    /// node merges them. Walking the pages returns each matching device once (ids only grow);
    /// a device created or changed meanwhile may or may not be seen. Throws `invalidQuery`
    /// (with the position of the error), `invalidBody` for a bad limit or cursor, and `cluster`
    /// when a gateway node did not answer (a partial answer would silently miss its devices).
    public func search(where condition: String? = nil, limit: Int = 100, cursor: String? = nil, timeout: Duration? = nil) async throws -> DeviceSearchResult {
        if let condition { _ = try Self.parseQuery(condition) }
        guard (1...Self.maxSearchLimit).contains(limit) else { throw GatewayError.invalidBody("limit must be in 1...\(Self.maxSearchLimit)") }
        if let cursor, !DeviceID.isValid(cursor) { throw GatewayError.invalidBody("cursor must be the 'next' of a previous page") }
        guard isRunning else { throw GatewayError.notRunning }
        let message = NodeMessage.search(where: condition, after: cursor, limit: limit + 1).encoded()
        let result = await node.multiCall(GatewaySettings.nodeGroup, message, timeout: timeout ?? settings.queryTimeout)
        guard result.failed.isEmpty else {
            let names = result.failed.map(\.node.name).sorted().joined(separator: ", ")
            throw GatewayError.cluster("fleet search: gateway node(s) \(names) did not answer; their devices would be missing")
        }
        var pages: [DeviceIndex.Page] = []
        for (_, bytes) in result.replies {
            do {
                pages.append(try NodeMessage.decodePage(bytes))
            } catch {
                throw GatewayError.cluster("fleet search: undecodable answer: \(error)")
            }
        }
        let merged = DeviceIndex.merge(pages, limit: limit)
        return DeviceSearchResult(devices: merged.ids, next: merged.more ? merged.ids.last : nil, matched: merged.matched)
    }

    /// Parses a fleet-search expression, as ``GatewayError/invalidQuery(_:)`` when bad.
    static func parseQuery(_ text: String) throws(GatewayError) -> FleetQuery {
        do {
            return try FleetQuery.parse(text)
        } catch {
            throw GatewayError.invalidQuery(error)
        }
    }

    // MARK: - Facade: cluster and stats

    /// The cluster as this node sees it: nodes, states, ring shares, devices per node.
    public func clusterView() async throws -> ClusterView {
        let dump: TrackerDump
        do {
            dump = try await node.dump()
        } catch {
            throw GatewayError.notRunning
        }
        let devices = node.members(runtime.swarmGroup("all"))
        var perNode: [String: Int] = [:]
        for pid in devices { perNode[pid.node.name, default: 0] += 1 }
        return ClusterView(
            node: dump.node, state: dump.state,
            nodes: dump.nodes.map {
                ClusterView.Node(
                    name: $0.name, state: $0.state, reachable: $0.reachable, inRing: $0.inRing, ringShare: $0.ringShare,
                    devices: perNode[$0.name] ?? 0)
            },
            devices: devices.count, registrySize: dump.registrySize)
    }

    /// This node's counters (monotonic since start) and gauges.
    public func stats() async -> GatewayStats {
        let local = node.members(runtime.swarmGroup("all")).filter { $0.node == node.id }.count
        return GatewayStats(
            received: counters.receivedTable, routed: counters.routed.load(ordering: .relaxed),
            rejected: counters.rejectedTable, shed: counters.shedTable,
            ingressWaits: counters.ingressWaits.load(ordering: .relaxed),
            ingressQueued: lanes.reduce(0) { $0 + $1.count }, commandsSent: counters.commandsSent.load(ordering: .relaxed),
            commandsAnswered: counters.commandsAnswered.load(ordering: .relaxed),
            commandsTimedOut: counters.commandsTimedOut.load(ordering: .relaxed),
            repliesUnmatched: counters.repliesUnmatched.load(ordering: .relaxed),
            desiredPublished: counters.desiredPublished.load(ordering: .relaxed),
            downlinksPublished: counters.downlinksPublished.load(ordering: .relaxed),
            publishFailures: counters.publishFailures.load(ordering: .relaxed),
            checkpoints: counters.checkpoints.load(ordering: .relaxed),
            processesStarted: counters.processesStarted.load(ordering: .relaxed), localDevices: local,
            brokers: runtime.brokers.entries.enumerated().map { index, entry in
                BrokerStatus(
                    id: entry.id, connected: entry.client.isConnected, connections: entry.client.connectionCount,
                    received: brokerReceived[index].value)
            })
    }

    // MARK: - Helpers

    private func validate(_ name: String) throws {
        guard DeviceID.isValid(name) else { throw GatewayError.invalidName(name) }
    }

    private func callTwin(_ id: String, _ message: DeviceMessage) async throws -> TwinBytes {
        guard node.whereis(id) != nil else { throw GatewayError.unknownDevice(id) }
        do {
            return try twinBytes(try await node.call(id, message.encoded(), timeout: settings.queryTimeout), device: id)
        } catch {
            throw mapped(error, device: id)
        }
    }

    /// A device call answered with ``DeviceReply/json(_:)``: the JSON bytes.
    private func callJSON(_ id: String, _ message: DeviceMessage) async throws -> [UInt8] {
        guard node.whereis(id) != nil else { throw GatewayError.unknownDevice(id) }
        let bytes: [UInt8]
        do {
            bytes = try await node.call(id, message.encoded(), timeout: settings.queryTimeout)
        } catch {
            throw mapped(error, device: id)
        }
        var commandID: String?
        if case .commands(let asked) = message { commandID = asked }
        guard case .json(let json) = try deviceReply(bytes, device: id, commandID: commandID) else {
            throw GatewayError.cluster("unexpected device reply")
        }
        return json
    }

    /// A device's ``DeviceReply`` as the twin or the error it stands for.
    private func twinBytes(_ bytes: [UInt8], device id: String) throws -> TwinBytes {
        guard case .twin(let version, let json) = try deviceReply(bytes, device: id) else {
            throw GatewayError.cluster("unexpected device reply")
        }
        return TwinBytes(json: json, version: version)
    }

    /// A device's ``DeviceReply``, refusals thrown as the errors they stand for.
    private func deviceReply(_ bytes: [UInt8], device id: String, commandID: String? = nil) throws -> DeviceReply {
        let reply: DeviceReply
        do {
            reply = try DeviceReply(decoding: bytes)
        } catch {
            throw GatewayError.cluster("undecodable device reply: \(error)")
        }
        switch reply {
        case .twin, .json:
            return reply
        case .refused("tooManyCommands", _, _):
            throw GatewayError.tooManyCommands(id)
        case .refused("unknownCommand", _, _):
            throw GatewayError.unknownCommand(device: id, id: commandID ?? "")
        case .refused("versionConflict", let version, _):
            throw GatewayError.versionConflict(current: version)
        case .refused("gone", _, _):
            throw GatewayError.unknownDevice(id)
        case .refused("notReplicated", _, let message):
            throw GatewayError.notReplicated(message)
        case .refused("storeUnavailable", _, let message):
            throw GatewayError.storeUnavailable(message)
        case .refused(_, _, let message):
            throw GatewayError.cluster(message)
        }
    }

    private func decodeTwin(_ bytes: [UInt8]) throws -> DeviceTwin {
        do {
            return try JSONDecoder().decode(DeviceTwin.self, from: Data(bytes))
        } catch {
            throw GatewayError.cluster("undecodable twin: \(error)")
        }
    }

    private func mapped(_ error: any Error, device: String?) -> any Error {
        switch error {
        case let error as GatewayError: return error
        case SwarmError.unknownName(let name): return GatewayError.unknownDevice(device ?? name)
        case let error as SwarmError:
            // A process-side failure travels as `startFailed("call failed: <error>")`.
            let text = "\(error)"
            if let range = text.range(of: "unknownDevice(\"") {
                return GatewayError.unknownDevice(String(text[range.upperBound...].prefix { $0 != "\"" }))
            }
            return GatewayError.cluster(text)
        case is SwarmNodeError: return GatewayError.notRunning
        default: return GatewayError.cluster("\(error)")
        }
    }

    private func namesByProcess() async -> [ProcessID: String] {
        var names: [ProcessID: String] = [:]
        for registration in node.registered() { names[registration.pid] = registration.name }
        return names
    }
}
