/// The Swarm tracker: a pure, deterministic state machine.
///
/// ``Tracker/Instance`` takes inputs through `on…` methods (API calls, peer messages, process
/// events, the current time) and returns ``Tracker/Directive``s for a shell to carry out: send a
/// message to a node, start or stop a process, ask a process for its handoff answer, deliver
/// messages, reply to a caller, schedule the next tick. It never blocks, never runs user code,
/// never reads a clock and never waits for a handshake: there is no global "syncing" mode, so
/// reads and writes are served at once from the local replica (ARCHITECTURE.md, “Replication”).
///
/// The same instance runs inside the NIO runtime (`SwarmNode`) and inside the simulator
/// (`SwarmSimulation`), which drives many of them over a fake network with one seed.
///
/// Topics live in one file each: registration and messaging here, replication and membership
/// in `Tracker+Cluster.swift`, handoff in `Tracker+Handoff.swift`, conflicts and orphans in
/// `Tracker+Recovery.swift`, the operator dump in `TrackerDump.swift`.
public enum Tracker {}

extension Tracker {
    /// Tunables, with defaults for a LAN.
    public struct Settings: Sendable {
        /// How often the shell should call ``Instance/onTick(now:)``. Default 50 ms.
        public var tickInterval: Nanoseconds = .ms(50)
        /// Heartbeat period on every peer connection. Default 200 ms.
        public var heartbeatInterval: Nanoseconds = .ms(200)
        /// Silence after which a connected peer is judged unreachable. Default 1.5 s.
        public var failureTimeout: Nanoseconds = .ms(1500)
        /// How long a new node stays `joining` while it collects snapshots before it takes
        /// ownership anyway. Default 1 s. Zero with no peers: up at once.
        public var joinGracePeriod: Nanoseconds = .seconds(1)
        /// Deadline for remote register / unregister / group requests. Default 5 s.
        public var requestTimeout: Nanoseconds = .seconds(5)
        /// Deadline for a handoff offer's answer before it is re-sent. Default 2 s.
        public var handoffOfferTimeout: Nanoseconds = .seconds(2)
        /// Offers re-sent before a handoff is aborted (process kept here). Default 3.
        public var handoffOfferAttempts = 3
        /// Most handoffs in flight at once from this node (rate limit, also for drain). Default 512.
        public var maxConcurrentHandoffs = 512
        /// First retry delay after a failed handoff or yield; doubles up to ``maxRetryBackoff``.
        public var retryBackoff: Nanoseconds = .ms(250)
        public var maxRetryBackoff: Nanoseconds = .seconds(4)
        /// Changes kept for catch-up; older positions get a snapshot. Default 65 536.
        public var changeLogCapacity = 65_536
        /// Catch-up / snapshot request re-sent after this long without an answer. Default 1 s.
        public var catchUpTimeout: Nanoseconds = .seconds(1)
        /// A handed-off name's messages are forwarded to its new node this long. Default 10 s.
        public var forwardingTTL: Nanoseconds = .seconds(10)
        /// Period between orphan hints to the same owner. Default 500 ms.
        public var orphanHintInterval: Nanoseconds = .ms(500)
        /// Re-routings of a request while the ring changes before giving up. Default 5.
        public var maxRouteAttempts = 5
        /// Forwarding hops before a message is returned as undeliverable. Default 4.
        public var maxForwardHops: UInt8 = 4
        /// Emit a ``Directive/trace(_:)`` for every tracker decision (Swarm's `debug: true`).
        public var debug = false

        public init() {}
    }

    /// Why a process is being started.
    public enum StartReason: Hashable, Sendable {
        /// A registration (register or whereis-or-register).
        case register
        /// Its host died or left; restarted from the factory (fresh state).
        case restart
        /// Its host died; the state its successor replica held is passed in `endHandoff`.
        case recover(state: [UInt8])
        /// A planned handoff; `state` is the `.resume` state (nil for `.restart`).
        case handoff(state: [UInt8]?)
    }

    /// An order to start a process from a factory. The shell runs the factory in its own task
    /// with a timeout and reports with ``Instance/onProcessStarted(token:result:now:)``.
    public struct StartOrder: Hashable, Sendable {
        public var token: UInt64
        public var name: String
        public var factory: FactorySpec
        public var reason: StartReason
    }

    public enum StopReason: Hashable, Sendable {
        /// Swarm's `die`: lost a conflict, or no node may host it (quorum lost).
        case die
        /// Unregistered by the API; the tracker started it, so the tracker stops it.
        case unregistered
        /// Handed off: a new process runs on another node.
        case handedOff
    }

    /// Answers to API calls, matched by the caller's ``RequestID``.
    public enum Reply: Hashable, Sendable {
        case registration(RegistrationResult)
        case done(SwarmError?)
    }

    /// What the shell must do. Directives are returned in the order they must happen.
    public enum Directive: Hashable, Sendable {
        case send(to: NodeID, PeerMessage)
        /// Dial a member we learned about from gossip (idempotent for the shell).
        case connect(name: String, address: String)
        case startProcess(StartOrder)
        case stopProcess(ProcessID, StopReason)
        /// Ask the process for its handoff answer (5 s timeout in the shell), then report with
        /// ``Instance/onHandoffAnswer(token:answer:now:)``.
        case beginHandoff(token: UInt64, pid: ProcessID, name: String)
        /// Ask a conflict loser for its state (for the winner's `resolveConflict`), then report
        /// with ``Instance/onConflictState(token:state:now:)``.
        case collectState(token: UInt64, pid: ProcessID, name: String)
        case deliver(ProcessID, [Envelope])
        /// The first message of a process started by a `.resume` handoff or a recovery.
        case endHandoff(ProcessID, state: [UInt8])
        case resolveConflict(ProcessID, state: [UInt8])
        case reply(RequestID, Reply)
        /// Messages sent from this node that could not be delivered (calls fail with `error`).
        case undeliverable([Envelope], SwarmError)
        case ringChanged(nodes: [String])
        case memberChanged(Membership.Member)
        case drainComplete
        case scheduleTick(after: Nanoseconds)
        case trace(String)
    }

    /// Counters for metrics and dumps.
    public struct Stats: Hashable, Sendable, Codable {
        public var changesApplied: UInt64 = 0
        public var changesAnnounced: UInt64 = 0
        public var snapshotsSent: UInt64 = 0
        public var snapshotsApplied: UInt64 = 0
        public var catchUpsRequested: UInt64 = 0
        public var processesStarted: UInt64 = 0
        public var startFailures: UInt64 = 0
        public var restartsAfterFailure: UInt64 = 0
        public var handoffsStarted: UInt64 = 0
        public var handoffsCompleted: UInt64 = 0
        public var handoffsFailed: UInt64 = 0
        public var handoffsReceived: UInt64 = 0
        public var conflictsYielded: UInt64 = 0
        public var conflictsWon: UInt64 = 0
        public var messagesHeld: UInt64 = 0
        public var messagesForwarded: UInt64 = 0
        public var messagesUndeliverable: UInt64 = 0
        public var peersLost: UInt64 = 0
        public init() {}
    }
}

extension Tracker {
    /// Someone waiting for a registration result.
    enum Waiter: Hashable, Sendable {
        case local(RequestID, whereisOrRegister: Bool)
        case remote(NodeID, RequestID, whereisOrRegister: Bool)
    }

    /// A factory start in flight on this node.
    struct PendingStart: Sendable {
        var token: UInt64
        var factory: FactorySpec
        var groups: [String]
        var reason: StartReason
        var waiters: [Waiter]
        /// Messages to the name that arrived while starting.
        var held: [Envelope]
        /// Set for starts caused by a handoff offer.
        var handoff: HandoffKey?
        /// The dead process this start replaces (restart / recovery).
        var replaces: ProcessID?
    }

    struct HandoffKey: Hashable, Sendable {
        var source: NodeID
        var id: UInt64
    }

    /// A request this node sent to another and still waits for.
    /// A peer's request, as the node that answers it knows it.
    struct AnsweredRequest: Hashable, Sendable {
        var node: NodeID
        var id: RequestID
    }

    struct Outstanding: Sendable {
        enum Kind: Sendable {
            case register(name: String, factory: FactorySpec, groups: [String], whereisOrRegister: Bool)
            case unregister(name: String)
            case group(group: String, pid: ProcessID, join: Bool)
            case checkpoint(name: String, pid: ProcessID, version: UInt64, state: [UInt8])
        }
        var kind: Kind
        var target: NodeID
        var deadline: Instant
        var attempts: Int

        /// The request message for `target`.
        func message(id: RequestID) -> PeerMessage {
            switch kind {
            case .register(let name, let factory, let groups, let whereisOrRegister):
                return .registerRequest(id: id, name: name, factory: factory, groups: groups, whereisOrRegister: whereisOrRegister)
            case .unregister(let name):
                return .unregisterRequest(id: id, name: name)
            case .group(let group, let pid, let join):
                return .groupRequest(id: id, group: group, pid: pid, join: join)
            case .checkpoint(let name, let pid, let version, let state):
                return .checkpointRequest(id: id, name: name, pid: pid, version: version, state: state)
            }
        }
    }

    /// An outgoing handoff of one of our processes.
    struct OutgoingHandoff: Sendable {
        enum Phase: Sendable {
            case asking(token: UInt64)
            case transferring(target: NodeID, offer: HandoffOffer, deadline: Instant, attempts: Int)
        }
        var phase: Phase
        var pid: ProcessID
        /// Messages to the name held until the switch completes (or is abandoned).
        var held: [Envelope] = []
    }

    struct Yield: Sendable {
        var token: UInt64
        var loser: ProcessID
        var winner: ProcessID
        var awaiting: (deadline: Instant, state: [UInt8]?, attempts: Int)?
    }

    struct Orphan: Sendable {
        var entry: RegistryEntry
        var nextAction: Instant
        var attempts: Int
        /// Its host itself stopped it (quorum lost), so the host being alive proves nothing.
        var stoppedByHost = false
    }

    struct Standby: Sendable {
        var pid: ProcessID
        var version: UInt64
        var state: [UInt8]
    }

    struct Checkpoint: Sendable {
        var pid: ProcessID
        var version: UInt64
        var state: [UInt8]
        var sentTo: String?
    }

    struct Backoff: Sendable {
        var until: Instant
        var attempts: Int
    }
}

extension Tracker {
    /// One node's tracker. A value type: copying it copies the whole node state, which the
    /// simulator uses for nothing more than convenience; the runtime keeps one inside an actor.
    public struct Instance: Sendable {
        public let settings: Settings
        public let me: NodeID
        public let address: String
        public let strategy: any PlacementStrategy
        public let filter: NodeFilter
        /// Seed addresses (`host:port`) dialled until a member with that address is connected.
        /// Update with ``onSeeds(_:now:)`` (for example after a DNS lookup).
        public internal(set) var seeds: [String]
        /// True when the node was configured with peers to find (seeds or DNS names).
        public let expectsPeers: Bool

        public internal(set) var membership = Membership()
        public internal(set) var ring = HashRing()
        public internal(set) var ringEpoch: UInt64 = 0
        public internal(set) var registry = Registry()
        public internal(set) var stats = Stats()

        var startedAt: Instant
        var now: Instant
        var log: ChangeLog
        /// Connected peers by name (the incarnation behind the current connection).
        var connections: [String: NodeID] = [:]
        var lastHeard: [String: Instant] = [:]
        var reachable: Set<String> = []
        var lastDial: [String: Instant] = [:]
        var catchUpDeadline: [String: Instant] = [:]
        var nextHeartbeat: Instant = 0

        /// Our registered processes and their names.
        var localNames: [ProcessID: [String]] = [:]
        /// Processes the tracker started from a factory: it stops them with their last name.
        var trackerStarted: Set<ProcessID> = []
        /// Handoffs abandoned after the offer left (the name was unregistered or its process
        /// ended): if the target accepts anyway, we ask it to unregister the name again.
        var cancelledOffers = BoundedMemory<UInt64, String>(capacity: 4096)
        var pendingStarts: [String: PendingStart] = [:]
        var startTokens: [UInt64: String] = [:]
        var nextToken: UInt64 = 1
        var outstanding: [RequestID: Outstanding] = [:]
        /// Replies this node sent to peers' requests, by (requester, request id): a request
        /// re-sent after a connection switch (its reply may have been lost with the old
        /// connection) gets the same answer instead of being carried out twice.
        var answeredRequests = BoundedMemory<AnsweredRequest, PeerMessage>(capacity: 4096)

        var handoffs: [String: OutgoingHandoff] = [:]
        var handoffTokens: [UInt64: String] = [:]
        var handoffQueue: [String] = []
        var handoffQueued: Set<String> = []
        var backoff: [String: Backoff] = [:]
        var ignoredAtEpoch: [String: UInt64] = [:]
        var acceptedHandoffs = BoundedMemory<HandoffKey, ProcessID>(capacity: 16_384)
        var nextHandoffID: UInt64 = 1
        var forwarding: [String: (node: NodeID, until: Instant)] = [:]

        var yields: [String: Yield] = [:]
        var yieldTokens: [UInt64: String] = [:]
        var acceptedYields = BoundedMemory<String, ProcessID>(capacity: 16_384)

        var orphans: [String: Orphan] = [:]
        var standby: [String: Standby] = [:]
        var checkpoints: [String: Checkpoint] = [:]

        public internal(set) var draining = false
        public internal(set) var drainComplete = false

        /// Directives produced by the input being handled.
        var out: [Directive] = []
        /// Our own changes not yet sent to peers (flushed before any other send, and at the end
        /// of every input, so peers see changes in order and before replies that depend on them).
        var unsent: [SequencedChange] = []

        public init(
            me: NodeID, address: String, settings: Settings = Settings(),
            strategy: any PlacementStrategy = RingStrategy(), filter: NodeFilter = .default,
            seeds: [String], expectsPeers: Bool? = nil, now: Instant
        ) {
            self.seeds = seeds.filter { $0 != address }
            self.me = me
            self.address = address
            self.settings = settings
            self.strategy = strategy
            self.filter = filter
            self.expectsPeers = expectsPeers ?? !seeds.filter { $0 != address }.isEmpty
            self.startedAt = now
            self.now = now
            self.log = ChangeLog(capacity: settings.changeLogCapacity)
            registry.track(origin: me, synced: true, owner: { _ in nil })
            membership.merge(Membership.Member(id: me, address: address, state: .joining, version: 1))
        }

        // MARK: - Reads (local, never block)

        /// Swarm's `whereis_name`: from the local replica, no network round trip.
        public func whereis(_ name: String) -> ProcessID? { registry.whereis(name) }

        /// Swarm's `registered()`: every (name, process) known locally, sorted by name.
        public func registered() -> [(name: String, pid: ProcessID)] {
            registry.view.values.sorted { $0.name < $1.name }.map { ($0.name, $0.pid) }
        }

        /// Swarm's `members(group)`: local read.
        public func members(of group: String) -> [ProcessID] { registry.members(of: group) }

        /// Every non-empty group and its member count: local read.
        public func groups() -> [(group: String, members: Int)] { registry.groups() }

        /// The current owner of `name` by this node's ring and strategy.
        public func owner(of name: String) -> String? { strategy.owner(of: name, on: ring) }

        public var selfState: Membership.State { membership[me.name]?.state ?? .joining }

        /// Names this node hosts.
        public var localEntries: [String: RegistryEntry] { registry.replica(of: me.name)?.entries ?? [:] }

        public func isReachable(_ name: String) -> Bool { reachable.contains(name) }

        /// The incarnation behind the current connection to `name`, if connected.
        public func connection(to name: String) -> NodeID? { connections[name] }

        /// True while `name` is an orphan here (its host was lost; a restart is being arranged).
        public func hasOrphan(_ name: String) -> Bool { orphans[name] != nil }

        /// The lost process an orphan here stands for, if `name` is one.
        public func orphanedProcess(_ name: String) -> ProcessID? { orphans[name]?.entry.pid }

        /// True while a factory start for `name` is in flight here.
        public func isStarting(_ name: String) -> Bool { pendingStarts[name] != nil }

        /// What is in flight, for diagnostics.
        public var inFlightDescription: String {
            "starts=\(pendingStarts.keys.sorted()) requests=\(outstanding.count) handoffs=\(handoffs.keys.sorted()) yields=\(yields.keys.sorted()) orphans=\(orphans.keys.sorted()) contested=\(registry.contested.keys.sorted())"
        }

        /// Work still in flight: starts, requests, handoffs, yields, orphans. Zero when settled.
        public var inFlight: Int {
            pendingStarts.count + outstanding.count + handoffs.count + yields.count + orphans.count
                + registry.contested.count
        }

        // MARK: - Lifecycle

        /// Call once after creation: announces the node and arms the first tick.
        public mutating func onStart(now: Instant) -> [Directive] {
            begin(now)
            if !expectsPeers { setSelfState(.up) }
            emit(.scheduleTick(after: settings.tickInterval))
            return finish()
        }

        /// New seed addresses (a DNS name re-resolved): dialled from the next heartbeat on.
        public mutating func onSeeds(_ addresses: [String], now: Instant) -> [Directive] {
            begin(now)
            seeds = addresses.filter { $0 != address }
            return finish()
        }

        // MARK: - Registration API

        /// Swarm's `register_name/4`: the ring owner starts the process from `factory`.
        /// `whereisOrRegister` makes it `whereis_or_register_name`, atomic on the owner.
        public mutating func onRegister(
            name: String, factory: FactorySpec, groups: [String] = [], whereisOrRegister: Bool = false,
            request: RequestID, now: Instant
        ) -> [Directive] {
            begin(now)
            trace("register \(name) \(factory) request=\(request)")
            if let existing = registry.whereis(name) {
                emit(.reply(request, .registration(.alreadyRegistered(existing))))
            } else if let owner = owner(of: name) {
                let sortedGroups = Array(Set(groups)).sorted()
                if owner == me.name {
                    registerLocally(name: name, factory: factory, groups: sortedGroups, waiter: .local(request, whereisOrRegister: whereisOrRegister))
                } else if let target = connections[owner] {
                    outstanding[request] = Outstanding(
                        kind: .register(name: name, factory: factory, groups: sortedGroups, whereisOrRegister: whereisOrRegister),
                        target: target, deadline: now + settings.requestTimeout, attempts: 1)
                    send(target, .registerRequest(id: request, name: name, factory: factory, groups: sortedGroups, whereisOrRegister: whereisOrRegister))
                } else {
                    emit(.reply(request, .registration(.failed(.noNodeAvailable))))
                }
            } else {
                emit(.reply(request, .registration(.failed(draining ? .draining : .noNodeAvailable))))
            }
            return finish()
        }

        /// Swarm's `register_name/2`: registers an existing local process. Never moved or
        /// restarted; removed when the process ends.
        public mutating func onRegisterExisting(name: String, pid: ProcessID, request: RequestID, now: Instant) -> [Directive] {
            begin(now)
            if pid.node != me {
                emit(.reply(request, .registration(.failed(.notLocal(pid)))))
            } else if let existing = registry.whereis(name) {
                emit(.reply(request, .registration(existing == pid ? .registered(pid) : .alreadyRegistered(existing))))
            } else if pendingStarts[name] != nil {
                emit(.reply(request, .registration(.failed(.nameInTransition(name)))))
            } else {
                let groups = localNames[pid].flatMap { names in names.first.flatMap { localEntries[$0]?.groups } } ?? []
                announce(.upsert(RegistryEntry(name: name, pid: pid, factory: nil, groups: groups, version: log.lastSeq + 1)))
                localNames[pid, default: []].append(name)
                emit(.reply(request, .registration(.registered(pid))))
            }
            return finish()
        }

        /// Removes that one name (not every name of the process, unlike Swarm). A process the
        /// tracker started from a factory is stopped with its last name; an existing process
        /// registered by the API keeps running.
        public mutating func onUnregister(name: String, request: RequestID, now: Instant) -> [Directive] {
            begin(now)
            if let entry = localEntries[name] {
                unregisterLocal(name: name, entry: entry, stop: .unregistered)
                emit(.reply(request, .done(nil)))
            } else if let entry = registry.view[name], let target = connections[entry.host], target == entry.pid.node {
                outstanding[request] = Outstanding(kind: .unregister(name: name), target: target, deadline: now + settings.requestTimeout, attempts: 1)
                send(target, .unregisterRequest(id: request, name: name))
            } else {
                emit(.reply(request, .done(.unknownName(name))))
            }
            return finish()
        }

        /// Swarm's `join(group, pid)` / `leave(group, pid)`. The process must be registered.
        public mutating func onGroup(_ group: String, pid: ProcessID, join: Bool, request: RequestID, now: Instant) -> [Directive] {
            begin(now)
            if pid.node == me {
                emit(.reply(request, .done(applyGroup(group, pid: pid, join: join))))
            } else if let target = connections[pid.node.name], target == pid.node {
                outstanding[request] = Outstanding(kind: .group(group: group, pid: pid, join: join), target: target, deadline: now + settings.requestTimeout, attempts: 1)
                send(target, .groupRequest(id: request, group: group, pid: pid, join: join))
            } else {
                emit(.reply(request, .done(.notRegistered(pid))))
            }
            return finish()
        }

        // MARK: - Process events

        /// A factory start ordered by ``Directive/startProcess(_:)`` finished.
        public mutating func onProcessStarted(token: UInt64, result: Result<ProcessID, SwarmError>, now: Instant) -> [Directive] {
            begin(now)
            guard let name = startTokens.removeValue(forKey: token), let pending = pendingStarts.removeValue(forKey: name) else {
                // A start we no longer wait for: stop what it made.
                if case .success(let pid) = result { emit(.stopProcess(pid, .die)) }
                return finish()
            }
            switch result {
            case .failure(let error):
                stats.startFailures += 1
                trace("start of \(name) failed: \(error)")
                for waiter in pending.waiters { answer(waiter, .failed(error)) }
                if let key = pending.handoff {
                    send(key.source, .handoffRejected(id: key.id, name: name, reason: "\(error)"))
                }
                if var orphan = orphans[name] {
                    orphan.attempts += 1
                    orphan.nextAction = now + backoffDelay(attempts: orphan.attempts)
                    orphans[name] = orphan
                }
                for envelope in pending.held { undeliverable(envelope, .startFailed("\(error)")) }
            case .success(let pid):
                precondition(pid.node == me, "process \(pid) started for \(name) is not hosted on \(me)")
                stats.processesStarted += 1
                announce(.upsert(RegistryEntry(name: name, pid: pid, factory: pending.factory, groups: pending.groups, version: log.lastSeq + 1)))
                localNames[pid, default: []].append(name)
                trackerStarted.insert(pid)
                orphans[name] = nil
                if let replaced = pending.replaces, standby[name]?.pid == replaced { standby[name] = nil }
                switch pending.reason {
                case .handoff(let state?): emit(.endHandoff(pid, state: state))
                case .recover(let state): emit(.endHandoff(pid, state: state))
                case .handoff(nil), .register, .restart: break
                }
                if !pending.held.isEmpty { emit(.deliver(pid, pending.held)) }
                var first = true
                for waiter in pending.waiters {
                    answer(waiter, first ? .registered(pid) : .alreadyRegistered(pid))
                    first = false
                }
                if let key = pending.handoff {
                    acceptedHandoffs.remember(key, pid)
                    send(key.source, .handoffAccepted(id: key.id, name: name, pid: pid))
                }
                trace("started \(name) as \(pid) (\(pending.reason))")
                // The ring may have moved while it started.
                enqueueHandoffCheck(name)
            }
            return finish()
        }

        /// A local process ended (crashed, exited or was stopped): its names and group
        /// memberships go, announced by us, its only authority.
        public mutating func onProcessEnded(_ pid: ProcessID, now: Instant) -> [Directive] {
            begin(now)
            removeProcess(pid, stop: nil)
            return finish()
        }

        // MARK: - Messaging

        /// Send (cast or call) to a name, from a local caller. Unknown names come back as
        /// ``Directive/undeliverable(_:_:)`` (Swarm dropped them silently).
        public mutating func onSend(to name: String, _ envelope: Envelope, now: Instant) -> [Directive] {
            begin(now)
            route(name, [envelope])
            return finish()
        }

        /// Send one message to several processes (publish, multi-call): one batch per node.
        public mutating func onSend(toProcesses pids: [ProcessID], _ envelope: Envelope, now: Instant) -> [Directive] {
            begin(now)
            var byNode: [NodeID: [ProcessID]] = [:]
            for pid in pids { byNode[pid.node, default: []].append(pid) }
            for (node, nodePids) in byNode.sorted(by: { $0.key < $1.key }) {
                if node == me {
                    for pid in nodePids { deliverToProcess(pid, envelope) }
                } else if connections[node.name] == node {
                    send(node, .toProcesses(pids: nodePids, envelope: envelope))
                } else {
                    undeliverable(envelope, .unknownName("\(nodePids.count) process(es) on unreachable \(node)"))
                }
            }
            return finish()
        }

        /// Swarm's `publish(group, msg)`: one batch per destination node.
        public mutating func onPublish(group: String, _ envelope: Envelope, now: Instant) -> [Directive] {
            onSend(toProcesses: members(of: group), envelope, now: now)
        }

        // MARK: - Internals shared by the topic files

        mutating func begin(_ now: Instant) {
            precondition(out.isEmpty && unsent.isEmpty, "re-entrant tracker input")
            self.now = max(self.now, now)
        }

        mutating func finish() -> [Directive] {
            flushChanges()
            defer { out.removeAll(keepingCapacity: true) }
            return out
        }

        mutating func emit(_ directive: Directive) { out.append(directive) }

        mutating func trace(_ text: @autoclosure () -> String) {
            if settings.debug { out.append(.trace("[\(me.name)] \(text())")) }
        }

        mutating func send(_ node: NodeID, _ message: PeerMessage) {
            flushChanges()
            out.append(.send(to: node, message))
        }

        mutating func makeToken() -> UInt64 {
            defer { nextToken += 1 }
            return nextToken
        }

        func backoffDelay(attempts: Int) -> Nanoseconds {
            let shift = UInt64(min(max(attempts - 1, 0), 16))
            return min(settings.retryBackoff << shift, settings.maxRetryBackoff)
        }

        /// Records one of our own changes: numbered, applied to our replica, queued for peers.
        mutating func announce(_ change: RegistryChange) {
            let numbered = log.append(change)
            let outcome = registry.apply(numbered, from: me, owner: { [strategy, ring] in strategy.owner(of: $0, on: ring) })
            precondition(outcome == .applied, "own change \(numbered.seq) not applied: \(outcome)")
            stats.changesAnnounced += 1
            unsent.append(numbered)
            afterViewChange(change.name)
        }

        mutating func flushChanges() {
            guard !unsent.isEmpty else { return }
            let batch = unsent
            unsent.removeAll(keepingCapacity: true)
            for peer in connections.values.sorted() {
                out.append(.send(to: peer, .replicate(changes: batch)))
            }
        }

        mutating func answer(_ waiter: Waiter, _ result: RegistrationResult) {
            switch waiter {
            case .local(let request, _):
                emit(.reply(request, .registration(result)))
            case .remote(let node, let request, _):
                reply(to: node, request, .registerReply(id: request, result: result))
            }
        }

        /// Sends the reply to a peer's request and remembers it (see ``answeredRequests``).
        mutating func reply(to node: NodeID, _ request: RequestID, _ message: PeerMessage) {
            answeredRequests.remember(AnsweredRequest(node: node, id: request), message)
            send(node, message)
        }

        /// Starts `name` here for a registration, or joins the start already in flight.
        mutating func registerLocally(name: String, factory: FactorySpec, groups: [String], waiter: Waiter) {
            if let existing = registry.whereis(name) {
                answer(waiter, .alreadyRegistered(existing))
            } else if pendingStarts[name] != nil {
                pendingStarts[name]!.waiters.append(waiter)
            } else {
                startProcess(name: name, factory: factory, groups: groups, reason: .register, waiters: [waiter])
            }
        }

        mutating func startProcess(
            name: String, factory: FactorySpec, groups: [String], reason: StartReason,
            waiters: [Waiter] = [], handoff: HandoffKey? = nil, replaces: ProcessID? = nil
        ) {
            let token = makeToken()
            pendingStarts[name] = PendingStart(
                token: token, factory: factory, groups: groups, reason: reason, waiters: waiters, held: [],
                handoff: handoff, replaces: replaces)
            startTokens[token] = name
            emit(.startProcess(StartOrder(token: token, name: name, factory: factory, reason: reason)))
        }

        /// Removes one of our names; stops the process when the tracker started it and this was
        /// its last name (or always, for `die`).
        mutating func unregisterLocal(name: String, entry: RegistryEntry, stop: StopReason?) {
            announce(.remove(name: name, pid: entry.pid))
            var names = localNames[entry.pid] ?? []
            names.removeAll { $0 == name }
            localNames[entry.pid] = names.isEmpty ? nil : names
            checkpoints[name] = nil
            ignoredAtEpoch[name] = nil
            if var handoff = handoffs.removeValue(forKey: name) {
                switch handoff.phase {
                case .asking(let token): handoffTokens[token] = nil
                case .transferring(_, let offer, _, _): cancelledOffers.remember(offer.id, name)
                }
                for envelope in handoff.held { undeliverable(envelope, .unknownName(name)) }
                handoff.held = []
            }
            if let yield = yields.removeValue(forKey: name) { yieldTokens[yield.token] = nil }
            if let stop, names.isEmpty, trackerStarted.contains(entry.pid) || stop == .die {
                trackerStarted.remove(entry.pid)
                emit(.stopProcess(entry.pid, stop))
            }
        }

        /// Removes every name of a local process (it ended, or must die).
        mutating func removeProcess(_ pid: ProcessID, stop: StopReason?) {
            guard let names = localNames[pid] else {
                trackerStarted.remove(pid)
                if let stop { emit(.stopProcess(pid, stop)) }
                return
            }
            for name in names {
                if let entry = localEntries[name], entry.pid == pid {
                    unregisterLocal(name: name, entry: entry, stop: nil)
                }
            }
            localNames[pid] = nil
            trackerStarted.remove(pid)
            if let stop { emit(.stopProcess(pid, stop)) }
        }

        mutating func applyGroup(_ group: String, pid: ProcessID, join: Bool) -> SwarmError? {
            guard let names = localNames[pid], !names.isEmpty else { return .notRegistered(pid) }
            for name in names {
                guard var entry = localEntries[name] else { continue }
                var groups = entry.groups
                if join {
                    guard !groups.contains(group) else { continue }
                    groups.append(group)
                    groups.sort()
                } else {
                    guard groups.contains(group) else { continue }
                    groups.removeAll { $0 == group }
                }
                entry.groups = groups
                entry.version = log.lastSeq + 1
                announce(.upsert(entry))
            }
            return nil
        }

        /// Routes messages addressed to `name`: hold during a switch, deliver here, forward to
        /// the host, or return them as undeliverable.
        mutating func route(_ name: String, _ envelopes: [Envelope]) {
            if handoffs[name] != nil {
                stats.messagesHeld += UInt64(envelopes.count)
                handoffs[name]!.held.append(contentsOf: envelopes)
                return
            }
            if pendingStarts[name] != nil {
                stats.messagesHeld += UInt64(envelopes.count)
                pendingStarts[name]!.held.append(contentsOf: envelopes)
                return
            }
            if let entry = registry.view[name] {
                if entry.pid.node == me {
                    emit(.deliver(entry.pid, envelopes))
                } else {
                    forward(name, envelopes, to: entry.pid.node)
                }
                return
            }
            if let moved = forwarding[name], moved.until > now {
                forward(name, envelopes, to: moved.node)
                return
            }
            for envelope in envelopes { undeliverable(envelope, .unknownName(name)) }
        }

        mutating func forward(_ name: String, _ envelopes: [Envelope], to node: NodeID) {
            guard connections[node.name] == node else {
                for envelope in envelopes { undeliverable(envelope, .unknownName(name)) }
                return
            }
            var passing: [Envelope] = []
            for var envelope in envelopes {
                if envelope.sender != me || envelope.hops > 0 { envelope.hops += 1 }
                if envelope.hops > settings.maxForwardHops {
                    undeliverable(envelope, .unknownName(name))
                } else {
                    passing.append(envelope)
                }
            }
            guard !passing.isEmpty else { return }
            if passing.contains(where: { $0.hops > 0 }) { stats.messagesForwarded += UInt64(passing.count) }
            send(node, .named(name: name, envelopes: passing))
        }

        /// Delivers to a local process by pid, holding it if one of its names is mid-handoff.
        mutating func deliverToProcess(_ pid: ProcessID, _ envelope: Envelope) {
            if let names = localNames[pid], let held = names.first(where: { handoffs[$0] != nil }) {
                stats.messagesHeld += 1
                handoffs[held]!.held.append(envelope)
                return
            }
            emit(.deliver(pid, [envelope]))
        }

        mutating func undeliverable(_ envelope: Envelope, _ error: SwarmError) {
            stats.messagesUndeliverable += 1
            if envelope.sender == me {
                emit(.undeliverable([envelope], error))
            } else if connections[envelope.sender.name] == envelope.sender {
                send(envelope.sender, .undeliverable(envelopes: [envelope], error: error))
            }
        }

        /// Reactions to a change of the view for `name` (any origin).
        mutating func afterViewChange(_ name: String) {
            if orphans[name] != nil, registry.view[name] != nil { orphans[name] = nil }
            if registry.contested[name] != nil { evaluateConflict(name) }
        }
    }
}
