import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import SwarmCore
import SwarmTransport
import SwarmWire

/// One Swarm node: the runtime shell around one ``Tracker/Instance``.
///
/// It mirrors the simulator's shell (`SwarmSimulation.Simulation.execute`) with real I/O:
/// - **inputs** → tracker: transport events (`peerUp` → `onPeerConnected`, `peerDown` →
///   `onPeerDisconnected`, `peerReconnected` → `onPeerReconnected`, frames → ``WireCodec`` → `onPeerMessage`; undecodable frames are
///   logged and dropped), API calls, process events and the tick timer;
/// - **directives** → actions, carried out in the order the tracker returned them: frames to
///   peers, dials, factory starts (in their own task, with a timeout), handoff and conflict-state
///   questions (through the process's mailbox, with a timeout), deliveries, stops, replies to
///   waiting API callers, the next tick.
///
/// Inputs that an action produces while a directive batch is being carried out (a factory that is
/// missing, say) are queued and applied after the batch, so the tracker never sees re-entrant
/// input and directive order is kept.
///
/// ## Lifecycle
/// `idle` → ``start()`` (binds the cluster port, creates the tracker) → `running` →
/// ``drain()`` → `draining` → ``shutdown()`` → `stopping` → `stopped`. ``run()`` (also the
/// `Service` entry point) starts the node if needed and runs its tasks until it is shut down;
/// graceful shutdown of a `ServiceGroup` (SIGTERM) is a drain, bounded by
/// ``SwarmNodeSettings/drainTimeout``, then a shutdown.
///
/// ## Tasks
/// Short-lived work is a child of ``run()``'s task group: the input loop, the deadline sweeper,
/// the tick timer, factory starts and questions to processes are submitted to it as jobs. Nothing
/// runs before ``run()`` is called except the transport's listener (inputs and jobs wait
/// buffered). Process mailboxes run an unstructured task only while they have messages (see
/// ``Mailbox``): an idle process owns no task, and a task group with thousands of children
/// would make every other child's removal walk them. Deadlines (call timeouts, start and question timeouts) are entries in one
/// ``Deadlines`` structure served by one sweeper, not a sleeping task each.
///
/// ## Reads without a hop
/// The tracker lives in a `Mutex`, so `whereis`, `members` and `registered` read the local
/// replica from any task without an actor hop (ARCHITECTURE.md, “The runtime shell”: lookups never wait for the node). Only
/// the node's own actor mutates it, one input at a time; directives are carried out after the
/// lock is released.
public actor SwarmNode {
    /// Lifecycle states; see the type documentation.
    public enum Lifecycle: String, Sendable, Equatable {
        case idle, starting, running, draining, stopping, stopped
    }

    /// An input for the node's input loop.
    enum Input: Sendable {
        case peerUp(NodeID)
        case peerDown(NodeID)
        case peerReconnected(NodeID)
        case peer(PeerMessage, from: NodeID)
        case callReply(callID: UInt64, Result<[UInt8], SwarmError>)
        case gracefulShutdown
        /// The tick timer fired. Queued behind the frames already received, so that a node whose
        /// input loop fell behind (CPU starvation) never judges its peers silent while their
        /// heartbeats wait in this queue.
        case tick
    }

    typealias Job = @Sendable () async -> Void

    struct ProcessEntry {
        var process: any SwarmProcess
        var mailbox: Mailbox
        var kind: String
    }

    /// This node's identity: the configured name and a fresh incarnation.
    public nonisolated let id: NodeID
    public nonisolated let settings: SwarmNodeSettings
    nonisolated let transport: ClusterTransport
    let logger: Logger

    public internal(set) var lifecycle: Lifecycle = .idle
    /// The cluster address (`host:port`) once started.
    public private(set) var address: String?

    /// The tracker; mutated only by ``apply(_:)`` on this actor, read from anywhere.
    nonisolated let trackerState = Mutex(TrackerSlot())
    /// Every waiting deadline; served by the sweeper job.
    nonisolated let deadlines = Deadlines()
    var factories: [String: ProcessFactory]
    var processes: [ProcessID: ProcessEntry] = [:]
    var nextLocal: UInt64 = 1
    var nextRequest: RequestID = 1
    var nextEnvelope: UInt64 = 1

    var pendingRequests: [RequestID: CheckedContinuation<Tracker.Reply, Never>] = [:]
    var pendingCalls: [UInt64: PendingCall] = [:]
    var collectors: [UInt64: MultiCallCollector] = [:]
    /// Casts whose immediate undeliverable outcome an API caller is waiting to see.
    var watchedCasts: Set<UInt64> = []
    var castErrors: [UInt64: SwarmError] = [:]
    /// The envelope ids of the `send(batch:)` being routed: their undeliverable outcomes are kept.
    var watchedCastRange: Range<UInt64> = 0..<0
    var drainWaiters: [CheckedContinuation<Void, Never>] = []
    var drainCompleted = false
    /// Told about every checkpoint this node stores for a peer's process (``observeStandby(_:)``).
    var standbyObserver: StandbyObserver?
    var lastDrainLog: Instant = 0

    /// Counters for logs and tests.
    public private(set) var castsDropped = 0
    /// Frames to peers dropped because the peer's outbound queue was at its bound.
    public private(set) var framesOverflowed = 0
    /// Frames from peers that did not decode (logged and dropped).
    public nonisolated var framesUndecodable: Int { undecodableCounter.value }
    /// Cluster connections this node refused or that were refused to it (wrong secret, failed
    /// TLS negotiation, …), counted as the transport reports them.
    public nonisolated var connectionsRefused: Int { refusedCounter.value }

    private var queuedInputs: [(inout Tracker.Instance, Instant) -> [Tracker.Directive]] = []
    private var applying = false

    /// Inputs for the input loop, taken in batches (one actor turn per batch).
    nonisolated let inputQueue = InputQueue<Input>()
    nonisolated let jobs: AsyncStream<Job>
    nonisolated let jobContinuation: AsyncStream<Job>.Continuation
    private let origin = ContinuousClock.now

    /// Creates a node. Nothing listens until ``start()``; nothing runs until ``run()``.
    /// - Parameter factories: process kinds by name (more can be added with
    ///   ``register(kind:factory:)``); every node of a cluster should register the same kinds.
    public init(settings: SwarmNodeSettings, factories: [String: ProcessFactory] = [:]) {
        self.settings = settings
        self.factories = factories
        self.logger = {
            var logger = settings.logger
            logger[metadataKey: "node"] = "\(settings.name)"
            return logger
        }()
        // A fresh incarnation per start: wall-clock microseconds, so a restart is always newer.
        let incarnation = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        let id = NodeID(name: settings.name, incarnation: incarnation)
        self.id = id
        (self.jobs, self.jobContinuation) = AsyncStream.makeStream(of: Job.self)
        var transportSettings = TransportSettings(secret: settings.secret)
        transportSettings.host = settings.host
        transportSettings.port = settings.port
        transportSettings.security = settings.security
        // Heartbeats flow every heartbeatInterval: a connection silent for the failure timeout is
        // stalled, and a fresh connection replaces it as soon as the path is back.
        transportSettings.stallTimeout = .nanoseconds(Int64(settings.tracker.failureTimeout))
        let inputs = self.inputQueue
        let logger = self.logger
        let counter = TransportEventCounter()
        self.undecodableCounter = counter
        let refused = TransportEventCounter()
        self.refusedCounter = refused
        self.transport = ClusterTransport(node: id, settings: transportSettings, logger: settings.logger) { event in
            // Runs on a connection's event loop: decode here (frames are slices of the receive
            // buffer) and hand plain values to the input loop, in arrival order.
            switch event {
            case .peerUp(let peer):
                inputs.yield(.peerUp(peer))
            case .peerDown(let peer):
                inputs.yield(.peerDown(peer))
            case .peerReconnected(let peer):
                inputs.yield(.peerReconnected(peer))
            case .frames(let frames, let peer):
                // Every frame of this read in one hand-over: one wake-up of the input loop.
                var decoded: [Input] = []
                decoded.reserveCapacity(frames.count)
                for frame in frames {
                    var payload = frame.payload
                    do {
                        switch try WireCodec.decodeAny(type: frame.type, payload: &payload) {
                        case .peer(let message):
                            decoded.append(.peer(message, from: peer))
                        case .node(.callReply(let callID, let result)):
                            decoded.append(.callReply(callID: callID, result))
                        }
                    } catch {
                        counter.increment()
                        logger.warning("dropped undecodable frame type \(frame.type) from \(peer): \(error)")
                    }
                }
                inputs.yield(contentsOf: decoded)
            case .connectionRefused(let remote, let reason):
                refused.increment()
                // The transport already logged the refusal (one warning line with the reason).
                logger.debug("cluster connection from \(remote) refused: \(reason)")
            }
        }
    }

    nonisolated let undecodableCounter: TransportEventCounter
    nonisolated let refusedCounter: TransportEventCounter

    /// Adds (or replaces) a process kind.
    public func register(kind: String, factory: @escaping ProcessFactory) {
        factories[kind] = factory
    }

    // MARK: - Lifecycle

    /// Binds the cluster port and creates the tracker. Idempotent once running.
    public func start() async throws {
        switch lifecycle {
        case .idle: break
        case .starting, .running, .draining: return
        case .stopping, .stopped: throw SwarmNodeError.notRunning(lifecycle.rawValue)
        }
        lifecycle = .starting
        do {
            try await transport.start()
        } catch {
            lifecycle = .stopped
            throw error
        }
        let port = transport.boundPort ?? settings.port
        let address = "\(settings.host):\(port)"
        self.address = address
        let tracker = Tracker.Instance(
            me: id, address: address, settings: settings.tracker, strategy: settings.strategy,
            filter: settings.filter, seeds: settings.seeds,
            expectsPeers: !settings.seeds.filter { $0 != address }.isEmpty || !settings.discovery.isEmpty, now: now())
        trackerState.withLock { $0 = TrackerSlot(instance: tracker, ready: true) }
        lifecycle = .running
        logger.info("swarm node \(id) listening on \(address), seeds \(settings.seeds)")
        apply { tracker, now in tracker.onStart(now: now) }
        for seed in settings.seeds where seed != address { dial(seed) }
    }

    /// Runs the node until it is shut down: starts it if needed, then runs the input loop and
    /// every job (timers, factory starts, mailboxes, questions to processes) as child tasks.
    /// Graceful shutdown (ServiceLifecycle) drains the node first.
    public func run() async throws {
        try await start()
        let inputs = self.inputQueue
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.inputLoop() }
                group.addTask { await self.sweepDeadlines() }
                if !self.settings.discovery.isEmpty { group.addTask { await self.discoverPeers() } }
                for await job in self.jobs {
                    group.addTask { await job() }
                }
                // Shut down: timers and lingering questions end now.
                group.cancelAll()
            }
        } onGracefulShutdown: {
            inputs.yield(.gracefulShutdown)
        }
        // Cancelled (not shut down): close the transport and fail waiting callers all the same.
        if lifecycle != .stopping && lifecycle != .stopped { await shutdown() }
        lifecycle = .stopped
        logger.info("swarm node \(id) stopped")
    }

    /// Stops at once, without a drain: closes every connection, stops every process (their
    /// names vanish from peers with this node) and fails every waiting caller. ``run()`` returns.
    public func shutdown() async {
        guard lifecycle != .stopping, lifecycle != .stopped else { return }
        let wasIdle = lifecycle == .idle
        lifecycle = .stopping
        for (_, continuation) in pendingRequests { continuation.resume(returning: .done(.noNodeAvailable)) }
        pendingRequests = [:]
        for (_, pending) in pendingCalls {
            if case .single(let continuation) = pending { continuation.resume(throwing: SwarmNodeError.notRunning("stopping")) }
        }
        pendingCalls = [:]
        for (_, collector) in collectors { collector.continuation.resume(returning: collector.result()) }
        collectors = [:]
        for waiter in drainWaiters { waiter.resume() }
        drainWaiters = []
        for (_, entry) in processes { entry.mailbox.close() }
        processes = [:]
        await transport.shutdown()
        inputQueue.finish()
        jobContinuation.finish()
        if wasIdle { lifecycle = .stopped }
    }

    /// Graceful leave (what SIGTERM does): drain (bounded by ``SwarmNodeSettings/drainTimeout``),
    /// then shut down; ``run()`` returns.
    public func drainAndShutdown() async {
        logger.info("graceful shutdown: draining")
        let completed = await drain()
        if completed {
            // Let the `gone` heartbeat and goodbye frames leave before the connections close.
            try? await Task.sleep(for: .milliseconds(200))
        } else {
            logger.warning("drain did not complete within \(settings.drainTimeout); stopping anyway")
        }
        await shutdown()
    }

    // MARK: - Inputs

    func inputLoop() async {
        // Everything queued at once, applied in one actor turn.
        while let batch = await inputQueue.next() {
            for input in batch { handle(input) }
        }
    }

    func handle(_ input: Input) {
        switch input {
        case .peerUp(let peer):
            let remote = transport.connection(to: peer.name)?.channel.remoteAddress
            let address = remote.flatMap { remote in remote.ipAddress.map { "\($0):\(remote.port ?? 0)" } } ?? peer.name
            apply { tracker, now in tracker.onPeerConnected(peer, address: address, now: now) }
        case .peerDown(let peer):
            apply { tracker, now in tracker.onPeerDisconnected(peer, now: now) }
        case .peerReconnected(let peer):
            apply { tracker, now in tracker.onPeerReconnected(peer, now: now) }
        case .peer(let message, let peer):
            if let observer = standbyObserver {
                switch message {
                case .checkpoint(let name, _, _, let state):
                    observer.stored(name, state)
                case .checkpointRequest(_, let name, _, _, let state):
                    // Taken (and acknowledged) once the observer kept it; later messages from the
                    // peer go on meanwhile (the tracker keeps the newest checkpoint by version).
                    submit {
                        await observer.storedDurably(name, state)
                        await self.applyInput { tracker, now in tracker.onPeerMessage(message, from: peer, now: now) }
                    }
                    return
                default:
                    break
                }
            }
            apply { tracker, now in tracker.onPeerMessage(message, from: peer, now: now) }
        case .callReply(let callID, let result):
            completeCall(callID, result)
        case .gracefulShutdown:
            submit { await self.drainAndShutdown() }
        case .tick:
            tick()
        }
    }

    func tick() {
        guard lifecycle == .running || lifecycle == .draining else { return }
        apply { tracker, now in tracker.onTick(now: now) }
        if lifecycle == .draining, !drainCompleted, now() >= lastDrainLog + .seconds(1),
            let (remaining, inFlight) = withTracker({ ($0.drainRemaining, $0.dump().handoffs.count) })
        {
            lastDrainLog = now()
            logger.info("draining: \(remaining) name(s) left to hand off, \(inFlight) in flight")
        }
    }

    /// The tracker's clock: monotonic nanoseconds, offset so that "never" (0) is long ago.
    func now() -> Instant {
        let elapsed = ContinuousClock.now - origin
        let (seconds, attoseconds) = elapsed.components
        return Instant.seconds(60) + UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    /// Applies one tracker input and carries out its directives. Inputs produced while a batch
    /// is being carried out wait until it is done.
    func apply(_ input: @escaping (inout Tracker.Instance, Instant) -> [Tracker.Directive]) {
        guard hasTracker, lifecycle != .stopping, lifecycle != .stopped else { return }
        queuedInputs.append(input)
        guard !applying else { return }
        applying = true
        defer { applying = false }
        var index = 0
        while index < queuedInputs.count {
            let next = queuedInputs[index]
            index += 1
            let now = now()
            let directives = withTracker { next(&$0, now) } ?? []
            execute(directives)
        }
        queuedInputs.removeAll(keepingCapacity: true)
    }

    /// Runs `body` on the tracker under its lock; nil before ``start()``. Never call
    /// ``apply(_:)`` or anything that takes the lock from inside `body`.
    nonisolated func withTracker<R: Sendable>(_ body: (inout Tracker.Instance) -> R) -> R? {
        trackerState.withLock { slot -> R? in
            // `ready`, not `instance != nil`: comparing the optional would copy the tracker.
            guard slot.ready else { return nil }
            return body(&slot.instance!)
        }
    }

    nonisolated var hasTracker: Bool { trackerState.withLock { $0.ready } }

    /// The deadline sweeper: fires expired deadlines every ``Deadlines/resolution``.
    func sweepDeadlines() async {
        while !Task.isCancelled, lifecycle != .stopped {
            // Idle (nothing waiting): a slower beat; a new deadline is at most that much late.
            try? await Task.sleep(for: deadlines.isEmpty ? Deadlines.idleResolution : Deadlines.resolution)
            let due = deadlines.expired()
            guard !due.isEmpty else { continue }
            for action in due {
                switch action {
                case .call(let callID): failCall(callID, .timeout)
                case .collector(let id): expireCollector(id)
                case .run(let body): body()
                }
            }
        }
    }

    /// Submits a child task to ``run()``'s group. False once the node stopped.
    @discardableResult
    nonisolated func submit(_ job: @escaping Job) -> Bool {
        if case .enqueued = jobContinuation.yield(job) { return true }
        return false
    }

    // MARK: - Directives

    func execute(_ directives: [Tracker.Directive]) {
        for directive in directives {
            switch directive {
            case .send(let peer, let message):
                sendPeer(peer, message)
            case .connect(_, let address):
                dial(address)
            case .startProcess(let order):
                startProcess(order)
            case .stopProcess(let pid, let reason):
                logger.debug("stop \(pid) (\(reason))")
                if let entry = processes.removeValue(forKey: pid) { _ = entry.mailbox.enqueue(.stop(reason)) }
            case .beginHandoff(let token, let pid, let name):
                askHandoff(token: token, pid: pid, name: name)
            case .collectState(let token, let pid, _):
                collectState(token: token, pid: pid)
            case .deliver(let pid, let envelopes):
                deliver(envelopes, to: pid)
            case .endHandoff(let pid, let state):
                notify(pid) { process in await process.endHandoff(state: state) }
            case .resolveConflict(let pid, let state):
                notify(pid) { process in await process.resolveConflict(state: state) }
            case .reply(let request, let reply):
                pendingRequests.removeValue(forKey: request)?.resume(returning: reply)
            case .undeliverable(let envelopes, let error):
                for envelope in envelopes {
                    if let callID = envelope.callID {
                        failCall(callID, error)
                    } else if watchedCastRange.contains(envelope.id) || watchedCasts.contains(envelope.id) {
                        castErrors[envelope.id] = error
                    } else {
                        logger.debug("cast \(envelope.id) undeliverable: \(error)")
                    }
                }
            case .ringChanged(let nodes):
                logger.info("ring: \(nodes)")
            case .memberChanged(let member):
                logger.info("member: \(member)")
            case .drainComplete:
                logger.info("drain complete")
                drainCompleted = true
                for waiter in drainWaiters { waiter.resume() }
                drainWaiters = []
            case .scheduleTick(let after):
                let inputs = inputQueue
                submit {
                    try? await Task.sleep(for: .nanoseconds(Int64(after)))
                    inputs.yield(.tick)
                }
            case .trace(let text):
                logger.debug("\(text)")
            }
        }
    }

    func sendPeer(_ peer: NodeID, _ message: PeerMessage) {
        let (type, payload) = WireCodec.encode(message, allocator: transport.allocator)
        switch transport.send(to: peer, type: type, payload: payload) {
        case .enqueued: break
        case .notConnected: logger.debug("frame \(type) to \(peer) dropped: not connected")
        case .overflow:
            framesOverflowed += 1
            logger.warning("frame \(type) to \(peer) dropped: outbound queue full")
        }
    }

    func dial(_ address: String) {
        guard let (host, port) = splitAddress(address) else {
            logger.warning("not dialling \(SwarmNodeError.invalidAddress(address))")
            return
        }
        transport.connect(host: host, port: port)
    }

    func makePID() -> ProcessID {
        defer { nextLocal += 1 }
        return ProcessID(node: id, local: nextLocal)
    }

    // MARK: - Processes

    func startProcess(_ order: Tracker.StartOrder) {
        logger.debug("start \(order.name) as \(order.factory.kind) (\(order.reason))")
        guard let factory = factories[order.factory.kind] else {
            let kind = order.factory.kind
            apply { tracker, now in tracker.onProcessStarted(token: order.token, result: .failure(.unknownFactory(kind)), now: now) }
            return
        }
        let timeout = settings.startTimeout
        submit {
            let result = await self.withDeadline(timeout) {
                try await factory(order.name, order.factory.arguments)
            } late: { process in
                await process.stop(reason: .die)
            }
            await self.factoryFinished(order, kind: order.factory.kind, result)
        }
    }

    func factoryFinished(_ order: Tracker.StartOrder, kind: String, _ result: Result<any SwarmProcess, any Error>) {
        switch result {
        case .success(let process):
            guard lifecycle == .running || lifecycle == .draining else {
                submit { await process.stop(reason: .die) }
                return
            }
            let pid = makePID()
            install(process, pid: pid, kind: kind)
            apply { tracker, now in tracker.onProcessStarted(token: order.token, result: .success(pid), now: now) }
        case .failure(let error):
            let swarmError = (error as? SwarmError) ?? .startFailed("\(error)")
            logger.warning("start of \(order.name) (\(kind)) failed: \(swarmError)")
            apply { tracker, now in tracker.onProcessStarted(token: order.token, result: .failure(swarmError), now: now) }
        }
    }

    /// Gives `process` a mailbox and the task that feeds it; reports its end to the tracker.
    func install(_ process: any SwarmProcess, pid: ProcessID, kind: String) {
        // The mailbox runs a task only while it has messages (see Mailbox); it reports its end once.
        let mailbox = Mailbox(capacity: settings.mailboxCapacity, pid: pid, process: process) { [self] mailbox, ending in
            await self.processEnded(pid, mailbox: mailbox, ending)
        }
        processes[pid] = ProcessEntry(process: process, mailbox: mailbox, kind: kind)
    }

    func processEnded(_ pid: ProcessID, mailbox: Mailbox, _ ending: Mailbox.Ending) {
        if let entry = processes[pid], entry.mailbox === mailbox { processes[pid] = nil }
        switch ending {
        case .crashed(let why): logger.warning("process \(pid) crashed: \(why)")
        case .stopped(let reason): logger.debug("process \(pid) stopped (\(reason))")
        case .closed: return
        }
        if mailbox.droppedCasts > 0 { logger.notice("process \(pid) ended with \(mailbox.droppedCasts) cast(s) dropped (mailbox full)") }
        apply { tracker, now in tracker.onProcessEnded(pid, now: now) }
    }

    func deliver(_ envelopes: [Envelope], to pid: ProcessID) {
        guard let entry = processes[pid] else {
            for envelope in envelopes {
                if let callID = envelope.callID {
                    replyToCaller(envelope.sender, callID: callID, .failure(.callFailed("process \(pid) ended")))
                }
            }
            return
        }
        for envelope in envelopes {
            if let callID = envelope.callID {
                let sender = envelope.sender
                let outcome = entry.mailbox.enqueue(.call(envelope.payload) { result in
                    await self.replyToCaller(sender, callID: callID, result)
                })
                if outcome != .enqueued {
                    let why = outcome == .full ? "mailbox of \(pid) is full" : "process \(pid) ended"
                    replyToCaller(sender, callID: callID, .failure(.callFailed(why)))
                }
            } else {
                switch entry.mailbox.enqueue(.cast(envelope.payload)) {
                case .enqueued: break
                case .full:
                    castsDropped += 1
                    if entry.mailbox.droppedCasts == 1 || entry.mailbox.droppedCasts % 1000 == 0 {
                        logger.warning("mailbox of \(pid) full: \(entry.mailbox.droppedCasts) cast(s) dropped")
                    }
                case .closed: break
                }
            }
        }
    }

    func replyToCaller(_ caller: NodeID, callID: UInt64, _ result: Result<[UInt8], SwarmError>) {
        if caller == id {
            completeCall(callID, result)
        } else {
            var buffer = transport.allocator.buffer(capacity: 64)
            let type = WireCodec.encode(NodeWireMessage.callReply(callID: callID, result: result), into: &buffer)
            if transport.send(to: caller, type: type, payload: buffer) != .enqueued {
                logger.debug("call reply \(callID) to \(caller) dropped: not connected")
            }
        }
    }

    func completeCall(_ callID: UInt64, _ result: Result<[UInt8], SwarmError>) {
        switch pendingCalls.removeValue(forKey: callID) {
        case nil:
            return
        case .single(let continuation):
            switch result {
            case .success(let bytes): continuation.resume(returning: bytes)
            case .failure(let error): continuation.resume(throwing: error)
            }
        case .member(let collectorID, let pid):
            guard let collector = collectors[collectorID] else { return }
            collector.waiting[callID] = nil
            switch result {
            case .success(let bytes): collector.replies.append((pid, bytes))
            case .failure: collector.failed.append(pid)
            }
            if collector.waiting.isEmpty {
                collectors[collectorID] = nil
                collector.continuation.resume(returning: collector.result())
            }
        }
    }

    func failCall(_ callID: UInt64, _ error: SwarmError) {
        completeCall(callID, .failure(error))
    }

    /// A multi-call's deadline: what has not answered counts as failed.
    func expireCollector(_ id: UInt64) {
        guard let collector = collectors.removeValue(forKey: id) else { return }
        for callID in collector.waiting.keys { pendingCalls[callID] = nil }
        collector.continuation.resume(returning: collector.result())
    }

    /// Queues a notice (`endHandoff`, `resolveConflict`) behind the process's earlier messages.
    func notify(_ pid: ProcessID, _ body: @escaping @Sendable (any SwarmProcess) async -> Void) {
        guard let entry = processes[pid] else { return }
        _ = entry.mailbox.enqueue(.control(run: body, dropped: {}))
    }

    func askHandoff(token: UInt64, pid: ProcessID, name: String) {
        guard let entry = processes[pid] else {
            apply { tracker, now in tracker.onHandoffAnswer(token: token, answer: .failed("process gone"), now: now) }
            return
        }
        let mailbox = entry.mailbox
        let timeout = settings.handoffTimeout
        submit {
            let result = await self.withDeadline(timeout) {
                await Self.ask(mailbox, fallback: HandoffAnswer.failed("process gone")) { await $0.beginHandoff() }
            }
            let answer: HandoffAnswer
            switch result {
            case .success(let given): answer = given
            case .failure(let error): answer = .failed("\(error)")
            }
            await self.applyInput { tracker, now in tracker.onHandoffAnswer(token: token, answer: answer, now: now) }
        }
    }

    func collectState(token: UInt64, pid: ProcessID) {
        guard let entry = processes[pid] else {
            apply { tracker, now in tracker.onConflictState(token: token, state: nil, now: now) }
            return
        }
        let mailbox = entry.mailbox
        let timeout = settings.handoffTimeout
        submit {
            let result = await self.withDeadline(timeout) {
                await Self.ask(mailbox, fallback: nil) { await $0.conflictState() }
            }
            let state = (try? result.get()) ?? nil
            await self.applyInput { tracker, now in tracker.onConflictState(token: token, state: state, now: now) }
        }
    }

    /// ``apply(_:)`` for jobs (an `async` entry point).
    func applyInput(_ input: @escaping @Sendable (inout Tracker.Instance, Instant) -> [Tracker.Directive]) {
        apply(input)
    }

    /// Asks a process a question through its mailbox (so it is answered after the messages
    /// queued before it); `fallback` if the process ends first.
    static func ask<T: Sendable>(
        _ mailbox: Mailbox, fallback: T, _ question: @escaping @Sendable (any SwarmProcess) async -> T
    ) async -> T {
        await withCheckedContinuation { continuation in
            let outcome = mailbox.enqueue(
                .control(
                    run: { process in continuation.resume(returning: await question(process)) },
                    dropped: { continuation.resume(returning: fallback) }))
            if outcome != .enqueued { continuation.resume(returning: fallback) }
        }
    }

    /// Runs `operation` as a job and returns its result, or `SwarmError.timeout` after `timeout`
    /// (the operation is not awaited past it: a hung factory or process cannot hold the node).
    /// A value that arrives after the deadline goes to `late` (a late process is stopped).
    nonisolated func withDeadline<T: Sendable>(
        _ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T,
        late: @escaping @Sendable (T) async -> Void = { _ in }
    ) async -> Result<T, any Error> {
        let once = ResumeOnce<Result<T, any Error>>()
        return await withCheckedContinuation { continuation in
            once.set(continuation)
            let started = submit {
                do {
                    let value = try await operation()
                    if !once.resume(.success(value)) { await late(value) }
                } catch {
                    once.resume(.failure(error))
                }
            }
            guard started else {
                once.resume(.failure(SwarmNodeError.notRunning("stopping")))
                return
            }
            deadlines.add(after: timeout, .run { once.resume(.failure(SwarmError.timeout)) })
        }
    }
}

/// The tracker and whether it exists yet (see ``SwarmNode/withTracker(_:)``).
struct TrackerSlot: Sendable {
    var instance: Tracker.Instance?
    var ready = false
}

/// A caller waiting for a call's reply.
enum PendingCall {
    /// One `call`: its caller.
    case single(CheckedContinuation<[UInt8], any Error>)
    /// One member of a multi-call.
    case member(collector: UInt64, pid: ProcessID)
}

/// The replies of one multi-call as they arrive (a class: updated in place, never copied).
final class MultiCallCollector {
    /// Calls not answered yet: call id → member.
    var waiting: [UInt64: ProcessID]
    var replies: [(pid: ProcessID, reply: [UInt8])] = []
    /// Members whose call failed.
    var failed: [ProcessID] = []
    let continuation: CheckedContinuation<MultiCallResult, Never>

    init(waiting: [UInt64: ProcessID], continuation: CheckedContinuation<MultiCallResult, Never>) {
        self.waiting = waiting
        self.continuation = continuation
    }

    /// The result so far: members still waiting count as failed (timed out); both lists sorted.
    func result() -> MultiCallResult {
        MultiCallResult(replies: replies.sorted { $0.pid < $1.pid }, failed: (failed + waiting.values).sorted())
    }
}

/// A continuation resumed by the first of several racers.
final class ResumeOnce<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, Never>?, done: Bool)>((nil, false))

    func set(_ continuation: CheckedContinuation<T, Never>) {
        state.withLock { $0.continuation = continuation }
    }

    /// Resumes the continuation unless another racer already did; true if this call did.
    @discardableResult
    func resume(_ value: T) -> Bool {
        let continuation = state.withLock { state -> CheckedContinuation<T, Never>? in
            guard !state.done else { return nil }
            state.done = true
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(returning: value)
        return continuation != nil
    }
}

/// Counts a kind of transport event — undecodable frames, refused connections — set from event
/// loops, read from any task.
final class TransportEventCounter: Sendable {
    private let count = Atomic<Int>(0)
    func increment() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

extension SwarmNode: Service {}
