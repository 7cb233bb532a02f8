import SwarmCore

/// One kind of fault the chaos phase injects. Each fault event draws one kind by its share.
///
/// To add a fault: add a case, give it a share (taken from the others: the shares add up to
/// 100), and carry it out in ``Simulation/inject(_:)``. A new share changes what every seed does,
/// as any new random draw would; the seed run then checks the protocol under the new mix. If the
/// fault can legitimately lose something (a name, a message), record the excuse where it happens
/// (`lostWithHost`, `excuse(_:_:)`) so the invariants stay exact.
enum FaultKind: CaseIterable, Sendable {
    /// Symmetric partition of every node into two or three sides.
    case partition
    /// One direction of one link blocked.
    case oneWayCut
    /// Every blocked link opened.
    case healLinks
    /// A live node crashes (peers see the connection reset).
    case crash
    /// The first crashed node restarts with a new incarnation.
    case restart
    /// A live node drains (restarted with a new incarnation at the heal).
    case drain
    /// A new node joins.
    case join
    /// A link goes down and up eight times, 0.2–2.5 s apart.
    case flappingLink

    /// Share of the fault draws, in percent.
    var share: Int {
        switch self {
        case .partition: 20
        case .oneWayCut: 8
        case .healLinks: 14
        case .crash: 14
        case .restart: 12
        case .drain: 8
        case .join: 8
        case .flappingLink: 16
        }
    }

    /// The kind whose share covers `roll` (0 ..< 100), in declaration order.
    static func covering(_ roll: Int) -> FaultKind {
        var upper = 0
        for kind in allCases {
            upper += kind.share
            if roll < upper { return kind }
        }
        return allCases[allCases.count - 1]
    }

    static let totalShare = allCases.reduce(0) { $0 + $1.share }
}

// The faults: drawn at random times of the chaos phase, each by its share.
extension Simulation {
    func fault() {
        faultsDone += 1
        inject(FaultKind.covering(random.int(0...(FaultKind.totalShare - 1))))
    }

    func inject(_ kind: FaultKind) {
        let live = liveNodes.map(\.name)
        let all = nodes.keys.sorted()
        switch kind {
        case .partition:
            let sides = random.chance(0.3) ? 3 : 2
            var assignment: [String: Int] = [:]
            for name in all { assignment[name] = random.int(0...(sides - 1)) }
            note("fault: partition \(all.map { "\($0):\(assignment[$0]!)" })")
            for a in all { for b in all where assignment[a] != assignment[b] { blocked.insert(Link(a, b)) } }
        case .oneWayCut:
            guard live.count >= 2 else { return }
            let a = random.pick(live)
            let b = random.pick(live.filter { $0 != a })
            note("fault: one-way cut \(a) → \(b)")
            blocked.insert(Link(a, b))
        case .healLinks:
            note("fault: heal all links")
            blocked.removeAll()
        case .crash:
            guard live.count > 2 else { return }
            let victim = random.pick(live)
            note("fault: crash \(victim)")
            crash(victim)
            crashed.append(victim)
        case .restart:
            guard let name = crashed.first(where: { !(nodes[$0]?.alive ?? false) }) else { return }
            crashed.removeAll { $0 == name }
            note("fault: restart \(name) with a new incarnation")
            startNode(name, at: now)
        case .drain:
            guard live.count > 3 else { return }
            let drainee = random.pick(live)
            note("fault: drain \(drainee)")
            withTracker(nodes[drainee]!.id) { $0.onDrain(now: self.now) }
            crashed.append(drainee)  // restarted (new incarnation) at the heal
        case .join:
            joinedCounter += 1
            note("fault: node-j\(joinedCounter) joins")
            startNode("node-j\(joinedCounter)", at: now)
        case .flappingLink:
            guard live.count >= 2 else { return }
            let a = random.pick(live)
            let b = random.pick(live.filter { $0 != a })
            note("fault: flapping link \(a) ⇄ \(b)")
            var at = now
            for i in 0..<8 {
                queue.push(at, .setLink(a, b, blocked: i % 2 == 0))
                at += random.uint64(.ms(200)...(.ms(2500)))
            }
        }
    }
}
