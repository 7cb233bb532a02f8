import Synchronization

/// The slow path beside one ``IngressLane``: messages of devices the lane cannot hand to the node
/// right away (first contact, a cast the node refused) wait here, per device, while a few worker
/// tasks of its own register and retry them with backoff. The lane task never waits for them.
///
/// Order: once a device has a message here, every later message of that device that the lane
/// takes is parked behind it (``parkIfHeld(_:)``), until a worker has routed all of them; so one
/// device's messages keep their arrival order on this node. A device's messages are routed by one
/// worker at a time. At most `workers` tasks run; each takes the next waiting device and ends
/// when none waits.
final class IngressSlowPath: Sendable {
    typealias Route = @Sendable (_ id: String, _ items: [IngressLane.Item]) async -> Void

    private struct State {
        /// Devices held here, with their messages not yet taken by a worker (empty while a
        /// worker routes what it took). A device stays held until a worker finds nothing new.
        var held: [String: [IngressLane.Item]] = [:]
        /// Held devices no worker has claimed yet, oldest first (`ready[head...]`).
        var ready: [String] = []
        var head = 0
        var workers = 0
    }

    let maxWorkers: Int
    private let route: Route
    private let state = Mutex(State())

    init(workers: Int = 8, route: @escaping Route) {
        self.maxWorkers = max(1, workers)
        self.route = route
    }

    /// Devices held here now.
    var heldDevices: Int { state.withLock { $0.held.count } }

    /// Parks `item` behind its device's earlier messages when that device is held here; false
    /// (nothing done) otherwise.
    func parkIfHeld(_ item: IngressLane.Item) -> Bool {
        state.withLock { state in
            guard state.held[item.id] != nil else { return false }
            state.held[item.id]!.append(item)
            return true
        }
    }

    /// Parks `items`, in order, each behind its device's earlier messages, and starts workers.
    func park(_ items: [IngressLane.Item]) {
        guard !items.isEmpty else { return }
        let start = state.withLock { state -> Int in
            for item in items {
                if state.held[item.id] != nil {
                    state.held[item.id]!.append(item)
                } else {
                    state.held[item.id] = [item]
                    state.ready.append(item.id)
                }
            }
            let waiting = state.ready.count - state.head
            let start = min(waiting, maxWorkers - state.workers)
            state.workers += max(0, start)
            return start
        }
        for _ in 0..<max(0, start) {
            Task { await self.work() }
        }
    }

    private func work() async {
        while let id = claim() {
            while let items = take(id) {
                await route(id, items)
            }
        }
    }

    /// The next waiting device, or nil (and this worker ends).
    private func claim() -> String? {
        state.withLock { state in
            guard state.head < state.ready.count else {
                state.workers -= 1
                state.ready.removeAll(keepingCapacity: true)
                state.head = 0
                return nil
            }
            let id = state.ready[state.head]
            state.head += 1
            if state.head >= 1024 && state.head * 2 >= state.ready.count {
                state.ready.removeFirst(state.head)
                state.head = 0
            }
            return id
        }
    }

    /// What waits for device `id` now; nil when nothing does, and the device is no longer held.
    private func take(_ id: String) -> [IngressLane.Item]? {
        state.withLock { state in
            guard let items = state.held[id], !items.isEmpty else {
                state.held[id] = nil
                return nil
            }
            state.held[id] = []
            return items
        }
    }
}
