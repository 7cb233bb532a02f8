import Logging
import SwarmCore
import SwarmTransport

/// The public Swarm API (ARCHITECTURE.md, “The runtime shell”), one method per row. Reads (`whereis`, `registered`,
/// `members`, `dump`) answer from the local replica at once; writes go through the tracker and
/// wait for its reply (the tracker bounds remote requests by its request timeout, 5 s).
extension SwarmNode {
    // MARK: Registration

    /// Swarm's `register_name/4`: the name's ring owner starts a process of `kind`. Every node
    /// answers a duplicate with the same `.alreadyRegistered(pid)`; failures come back as
    /// `.failed(SwarmError)` (unknown factory, start failure, timeout, draining…).
    public func register(
        _ name: String, kind: String, arguments: [UInt8] = [], groups: [String] = []
    ) async throws -> RegistrationResult {
        try await registration { tracker, request, now in
            tracker.onRegister(
                name: name, factory: FactorySpec(kind: kind, arguments: arguments), groups: groups,
                whereisOrRegister: false, request: request, now: now)
        }
    }

    /// Swarm's `whereis_or_register_name`: atomic on the owner (one start, every waiter gets it).
    public func whereisOrRegister(
        _ name: String, kind: String, arguments: [UInt8] = [], groups: [String] = []
    ) async throws -> ProcessID {
        if let pid = whereis(name) { return pid }
        let result = try await registration { tracker, request, now in
            tracker.onRegister(
                name: name, factory: FactorySpec(kind: kind, arguments: arguments), groups: groups,
                whereisOrRegister: true, request: request, now: now)
        }
        switch result {
        case .registered(let pid), .alreadyRegistered(let pid): return pid
        case .failed(let error): throw error
        }
    }

    /// Swarm's `register_name/2`: registers a process spawned here (``spawn(kind:arguments:)``).
    /// Never moved or restarted; removed when the process ends.
    public func register(_ name: String, existing pid: ProcessID) async throws -> RegistrationResult {
        try await registration { tracker, request, now in
            tracker.onRegisterExisting(name: name, pid: pid, request: request, now: now)
        }
    }

    /// Swarm's `unregister_name`: removes that one name. A factory process stops with its last name.
    public func unregister(_ name: String) async throws {
        try await done { tracker, request, now in tracker.onUnregister(name: name, request: request, now: now) }
    }

    /// Starts a process of `kind` on this node, unregistered (for ``register(_:existing:)``).
    public func spawn(kind: String, arguments: [UInt8] = []) async throws -> ProcessID {
        try ensureRunning()
        guard let factory = factories[kind] else { throw SwarmError.unknownFactory(kind) }
        let result = await withDeadline(settings.startTimeout) {
            try await factory("", arguments)
        } late: { process in
            await process.stop(reason: .die)
        }
        switch result {
        case .success(let process):
            try ensureRunning()
            let pid = makePID()
            install(process, pid: pid, kind: kind)
            return pid
        case .failure(let error as SwarmError):
            throw error
        case .failure(let error):
            throw SwarmError.startFailed("\(error)")
        }
    }

    // MARK: Reads (local)

    /// Swarm's `whereis_name`: from the local replica, no network round trip.
    /// Nonisolated: no actor hop, only the tracker's lock for the lookup itself.
    public nonisolated func whereis(_ name: String) -> ProcessID? { withTracker { $0.whereis(name) } ?? nil }

    /// Swarm's `registered()`: every (name, process) known locally, sorted by name.
    public nonisolated func registered() -> [Registration] {
        withTracker { $0.registered().map { Registration(name: $0.name, pid: $0.pid) } } ?? []
    }

    /// The name of the node that should host `name` under the current ring (nil without one).
    /// Nonisolated, like ``whereis(_:)``.
    public nonisolated func owner(of name: String) -> String? { withTracker { $0.owner(of: name) } ?? nil }

    /// Swarm's `members(group)`: local read.
    public nonisolated func members(_ group: String) -> [ProcessID] { withTracker { $0.members(of: group) } ?? [] }

    /// Every non-empty group, sorted by name, with its count of distinct members: local read.
    public nonisolated func groups() -> [(group: String, members: Int)] { withTracker { $0.groups() } ?? [] }

    /// The tracker dump (Swarm's `:sys.get_state`), `Codable` to JSON.
    public func dump() throws -> TrackerDump {
        guard let dump = withTracker({ $0.dump() }) else { throw SwarmNodeError.notRunning(lifecycle.rawValue) }
        return dump
    }

    // MARK: Groups

    /// Swarm's `join(group, pid)`: the process must be registered (else `notRegistered`).
    public func join(_ group: String, _ pid: ProcessID) async throws {
        try await done { tracker, request, now in tracker.onGroup(group, pid: pid, join: true, request: request, now: now) }
    }

    /// Swarm's `leave(group, pid)`.
    public func leave(_ group: String, _ pid: ProcessID) async throws {
        try await done { tracker, request, now in tracker.onGroup(group, pid: pid, join: false, request: request, now: now) }
    }

    // MARK: Messaging

    /// Swarm's `send(name, msg)` (a cast). Throws when the name is unknown here (Swarm dropped
    /// such messages silently); a failure found later on another node is logged.
    public func send(_ name: String, _ message: [UInt8]) async throws {
        await waitForOutboundRoom()
        try cast(message) { tracker, envelope, now in tracker.onSend(to: name, envelope, now: now) }
    }

    /// Many `send(name, msg)` casts in one call: one hop onto the node for the whole batch
    /// (callers that route a stream of messages, like the gateway's ingress lanes, save a hop per
    /// message). Each is routed exactly as ``send(_:_:)-(String,_)`` would, in order. Returns the
    /// positions that failed on this node with their errors (the others are on their way); throws
    /// only when the node is not running.
    public func send(batch: [(name: String, message: [UInt8])]) async throws -> [(index: Int, error: SwarmError)] {
        await waitForOutboundRoom()
        try ensureRunning()
        guard !batch.isEmpty else { return [] }
        // One tracker input for the whole batch (one lock, one directive run): the casts are
        // routed one by one inside it, in order, exactly as `send(name, msg)` would route them.
        let first = nextEnvelope
        nextEnvelope += UInt64(batch.count)
        let sender = id
        watchedCastRange = first..<nextEnvelope
        defer { watchedCastRange = 0..<0 }
        apply { tracker, now in
            var directives: [Tracker.Directive] = []
            for (offset, item) in batch.enumerated() {
                let envelope = Envelope(id: first + UInt64(offset), sender: sender, payload: item.message)
                directives += tracker.onSend(to: item.name, envelope, now: now)
            }
            return directives
        }
        guard !castErrors.isEmpty else { return [] }
        var failures: [(index: Int, error: SwarmError)] = []
        for offset in batch.indices {
            if let error = castErrors.removeValue(forKey: first + UInt64(offset)) { failures.append((offset, error)) }
        }
        return failures
    }

    /// A cast to one process by id, local or remote.
    public func send(_ pid: ProcessID, _ message: [UInt8]) async throws {
        await waitForOutboundRoom()
        try cast(message) { tracker, envelope, now in tracker.onSend(toProcesses: [pid], envelope, now: now) }
    }

    /// Swarm's `publish(group, msg)`: a cast to every member, one batch per destination node.
    public func publish(_ group: String, _ message: [UInt8]) async throws {
        await waitForOutboundRoom()
        try cast(message) { tracker, envelope, now in tracker.onPublish(group: group, envelope, now: now) }
    }

    /// `GenServer.call({:via, :swarm, name}, msg, timeout)`: the reply travels straight back to
    /// this node. Throws `SwarmError.timeout`, `unknownName`, or the callee's failure.
    public func call(_ name: String, _ message: [UInt8], timeout: Duration = .seconds(5)) async throws -> [UInt8] {
        try await performCall(message, timeout: timeout) { tracker, envelope, now in
            tracker.onSend(to: name, envelope, now: now)
        }
    }

    /// A call to one process by id, local or remote.
    public func call(_ pid: ProcessID, _ message: [UInt8], timeout: Duration = .seconds(5)) async throws -> [UInt8] {
        try await performCall(message, timeout: timeout) { tracker, envelope, now in
            tracker.onSend(toProcesses: [pid], envelope, now: now)
        }
    }

    /// Swarm's `multi_call(group, msg, timeout)`: calls every member at once and collects the
    /// replies; failures and timeouts are counted, never thrown. One collector and one deadline
    /// for the whole group (no task per member); the calls leave in one tracker input.
    public func multiCall(_ group: String, _ message: [UInt8], timeout: Duration = .seconds(5)) async -> MultiCallResult {
        let members = self.members(group)
        guard !members.isEmpty else { return MultiCallResult(replies: [], failed: []) }
        guard (try? ensureRunning()) != nil else { return MultiCallResult(replies: [], failed: members) }
        let collectorID = makeEnvelopeID()
        var envelopes: [(ProcessID, Envelope)] = []
        envelopes.reserveCapacity(members.count)
        for pid in members {
            let callID = makeEnvelopeID()
            envelopes.append((pid, Envelope(id: callID, sender: id, callID: callID, payload: message)))
        }
        return await withCheckedContinuation { continuation in
            collectors[collectorID] = MultiCallCollector(
                waiting: Dictionary(uniqueKeysWithValues: envelopes.map { ($0.1.id, $0.0) }), continuation: continuation)
            for (pid, envelope) in envelopes { pendingCalls[envelope.id] = .member(collector: collectorID, pid: pid) }
            deadlines.add(after: timeout, .collector(collectorID))
            apply { tracker, now in
                var directives: [Tracker.Directive] = []
                for (pid, envelope) in envelopes {
                    directives.append(contentsOf: tracker.onSend(toProcesses: [pid], envelope, now: now))
                }
                return directives
            }
        }
    }

    // MARK: Handoff, checkpoints, drain

    /// `Tracker.handoff(name, state)`: hand one of this node's processes to its ring owner now;
    /// the new process gets `endHandoff(state)`. A process already on its owner stays.
    public func handoff(_ name: String, state: [UInt8]) async throws {
        try await done { tracker, request, now in tracker.onHandoff(name: name, state: state, request: request, now: now) }
    }

    /// Replicates a local process's state to its names' ring successor (ARCHITECTURE.md, “Successor state”).
    public func checkpoint(_ pid: ProcessID, state: [UInt8]) throws {
        try ensureRunning()
        apply { tracker, now in tracker.onCheckpoint(pid: pid, state: state, now: now) }
    }

    /// ``checkpoint(_:state:)`` that returns once the ring successor of the process's (first)
    /// name holds this state, so a crash of this node cannot lose it; at once on a node without a
    /// successor. Throws `SwarmError.timeout` when the successor does not confirm within the
    /// tracker's request timeout (the checkpoint may still arrive).
    public func checkpointAcknowledged(_ pid: ProcessID, state: [UInt8]) async throws {
        try await done { tracker, request, now in tracker.onCheckpoint(pid: pid, state: state, request: request, now: now) }
    }

    /// Sets (or clears) the observer of the checkpoints this node stores as the ring successor of
    /// peers' processes (ARCHITECTURE.md, “Successor state”): a durable store keeps them (the gateway writes them as replica
    /// rows). An acknowledged checkpoint is acknowledged only after
    /// ``StandbyObserver/storedDurably`` returned.
    public func observeStandby(_ observer: StandbyObserver?) {
        standbyObserver = observer
    }

    /// Drains the node: it leaves the ring, hands off every process with its state, then
    /// announces `gone`. Returns true once the tracker reports the drain complete, false if it
    /// did not within `timeout` (default ``SwarmNodeSettings/drainTimeout``). The node keeps
    /// running; call ``shutdown()`` (or let the service return) to stop it.
    @discardableResult
    public func drain(timeout: Duration? = nil) async -> Bool {
        guard lifecycle == .running || lifecycle == .draining else { return drainCompleted }
        if lifecycle == .running {
            lifecycle = .draining
            logger.info("drain: \(withTracker { $0.localEntries.count } ?? 0) local name(s)")
        }
        apply { tracker, now in tracker.onDrain(now: now) }
        if drainCompleted { return true }
        _ = await withDeadline(timeout ?? settings.drainTimeout) { await self.waitForDrain() }
        return drainCompleted
    }

    // MARK: Plumbing

    /// Throws unless the node can take API calls: running, or draining with the drain not yet
    /// complete. After a completed drain the node has left the cluster (peers dropped it), so a
    /// message routed from here could vanish: the caller gets `notRunning("drained")` instead.
    func ensureRunning() throws {
        guard hasTracker, lifecycle == .running || lifecycle == .draining else {
            throw SwarmNodeError.notRunning(lifecycle.rawValue)
        }
        if drainCompleted { throw SwarmNodeError.notRunning("drained") }
    }

    func waitForDrain() async {
        if drainCompleted || lifecycle == .stopping || lifecycle == .stopped { return }
        await withCheckedContinuation { drainWaiters.append($0) }
    }

    func makeRequestID() -> RequestID {
        defer { nextRequest += 1 }
        return nextRequest
    }

    func makeEnvelopeID() -> UInt64 {
        defer { nextEnvelope += 1 }
        return nextEnvelope
    }

    func request(
        _ input: @escaping (inout Tracker.Instance, RequestID, Instant) -> [Tracker.Directive]
    ) async throws -> Tracker.Reply {
        try ensureRunning()
        let request = makeRequestID()
        return await withCheckedContinuation { continuation in
            pendingRequests[request] = continuation
            apply { tracker, now in input(&tracker, request, now) }
        }
    }

    func registration(
        _ input: @escaping (inout Tracker.Instance, RequestID, Instant) -> [Tracker.Directive]
    ) async throws -> RegistrationResult {
        switch try await request(input) {
        case .registration(let result): return result
        case .done(let error): return .failed(error ?? .noNodeAvailable)
        }
    }

    func done(_ input: @escaping (inout Tracker.Instance, RequestID, Instant) -> [Tracker.Directive]) async throws {
        switch try await request(input) {
        case .done(nil): return
        case .done(let error?): throw error
        case .registration(.failed(let error)): throw error
        case .registration: return
        }
    }

    /// Backpressure for casts: while the outbound queue to some peer holds more than a quarter of
    /// its bound, the caller waits (1 ms steps) until the transport has written it down, so a fast
    /// sender slows to what the network carries instead of its casts being dropped at the bound
    /// (``framesOverflowed``). Calls need no such wait: each caller has one in flight.
    func waitForOutboundRoom() async {
        let soft = transport.maximumPendingBytesPerPeer / 4
        while transport.largestPendingBytes > soft, lifecycle == .running || lifecycle == .draining {
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    func cast(_ message: [UInt8], _ route: @escaping (inout Tracker.Instance, Envelope, Instant) -> [Tracker.Directive]) throws {
        try ensureRunning()
        if let error = castOne(message, route) { throw error }
    }

    /// Routes one cast (the node is running); the error found on this node, if any.
    private func castOne(_ message: [UInt8], _ route: @escaping (inout Tracker.Instance, Envelope, Instant) -> [Tracker.Directive]) -> SwarmError? {
        let envelope = Envelope(id: makeEnvelopeID(), sender: id, payload: message)
        watchedCasts.insert(envelope.id)
        apply { tracker, now in route(&tracker, envelope, now) }
        watchedCasts.remove(envelope.id)
        return castErrors.removeValue(forKey: envelope.id)
    }

    func performCall(
        _ message: [UInt8], timeout: Duration,
        _ route: @escaping (inout Tracker.Instance, Envelope, Instant) -> [Tracker.Directive]
    ) async throws -> [UInt8] {
        try ensureRunning()
        let callID = makeEnvelopeID()
        let envelope = Envelope(id: callID, sender: id, callID: callID, payload: message)
        return try await withCheckedThrowingContinuation { continuation in
            pendingCalls[callID] = .single(continuation)
            deadlines.add(after: timeout, .call(callID))
            apply { tracker, now in route(&tracker, envelope, now) }
        }
    }
}
