import SwarmCore

// The simulated network: 0.5–4.5 ms latency per message, FIFO per directed link (a message never
// overtakes an earlier one on the same link), reordering across links, directed blocked links
// (partitions, one-way cuts, flapping), random loss during chaos, and connection set-up.
extension Simulation {
    func latency() -> Nanoseconds { .ms(1) / 2 + random.uint64(0...(.ms(4))) }

    func isBlocked(_ from: String, _ to: String) -> Bool { !blocked.isEmpty && blocked.contains(Link(from, to)) }

    /// A `send` directive: dropped (chaos loss or a blocked link) or queued behind the link's
    /// previous message.
    func send(_ message: PeerMessage, from id: NodeID, to: NodeID) {
        if chaos && settings.faults && random.chance(settings.dropProbability) {
            dropped(message, reason: "dropped by network")
            return
        }
        if isBlocked(id.name, to.name) {
            dropped(message, reason: "partition")
            return
        }
        let key = Link(id.name, to.name)
        let at = max(now + latency(), (linkClock[key] ?? 0) + 1)
        linkClock[key] = at
        queue.push(at, .deliver(from: id, to: to, message))
    }

    /// A message reaches its destination, unless that incarnation is gone or the link was cut
    /// while it was in flight.
    func arrive(_ message: PeerMessage, from: NodeID, to: NodeID) {
        guard let node = nodes[to.name], node.alive, node.id == to, !isBlocked(from.name, to.name) else {
            dropped(message, reason: "in flight")
            return
        }
        trace("\(from.name) → \(to.name) \(Self.describe(message))")
        // The successor keeps what it stores on its disk: an acknowledged checkpoint durably
        // before the tracker takes (and acknowledges) it, the others written behind.
        switch message {
        case .checkpoint(let name, _, _, let state): writeRow(on: to, name, state, durable: false)
        case .checkpointRequest(_, let name, _, _, let state): writeRow(on: to, name, state, durable: true)
        default: break
        }
        withTracker(to) { $0.onPeerMessage(message, from: from, now: self.now) }
    }

    /// A dial completes when both ends are alive and neither direction is blocked.
    func connect(_ from: NodeID, to: String) {
        guard let source = nodes[from.name], source.alive, source.id == from,
            let target = nodes[to], target.alive,
            !isBlocked(from.name, to), !isBlocked(to, from.name)
        else { return }
        trace("connected \(from) ⇄ \(target.id)")
        withTracker(target.id) { $0.onPeerConnected(from, address: from.name, now: self.now) }
        withTracker(from) { $0.onPeerConnected(target.id, address: to, now: self.now) }
    }

    /// One step of a flapping link (ignored once the chaos phase is over).
    func setLink(_ a: String, _ b: String, blocked isBlocked: Bool) {
        guard chaos else { return }
        trace("link \(a) ⇄ \(b) \(isBlocked ? "down" : "up")")
        if isBlocked {
            blocked.insert(Link(a, b))
            blocked.insert(Link(b, a))
        } else {
            blocked.remove(Link(a, b))
            blocked.remove(Link(b, a))
        }
    }

    func dropped(_ message: PeerMessage, reason: String) {
        switch message {
        case .named(_, let batch):
            for envelope in batch { excuse(envelope, reason) }
        case .toProcesses(_, let envelope):
            excuse(envelope, reason)
        default:
            break
        }
    }

    func excuse(_ envelope: Envelope, _ reason: String) {
        guard var record = envelopes[envelope.id] else { return }
        if record.planned { violate("planned-phase message \(envelope.id) to \(record.name) lost: \(reason)") }
        record.excused = true
        envelopes[envelope.id] = record
    }
}
