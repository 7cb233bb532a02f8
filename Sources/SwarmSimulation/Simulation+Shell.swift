import SwarmCore

// The shell: carrying out a tracker's directives as SwarmNode would, against simulated
// processes. Processes start after a short delay (3 % of starts fail during chaos), answer
// handoff questions by a behaviour fixed per name, count the messages they get and check at
// the point of delivery that `endHandoff` comes first with a state a process actually gave.
extension Simulation {
    func withTracker(_ id: NodeID, _ body: (inout Tracker.Instance) -> [Tracker.Directive]) {
        guard let node = nodes[id.name], node.alive, node.id == id else { return }
        let directives = body(&node.tracker)
        execute(id, directives)
    }

    func execute(_ id: NodeID, _ directives: [Tracker.Directive]) {
        for directive in directives {
            switch directive {
            case .send(let to, let message):
                send(message, from: id, to: to)
            case .connect(_, let address):
                queue.push(now + latency(), .connect(from: id, to: address))
            case .startProcess(let order):
                trace("\(id.name) start \(order.name) (\(order.reason))")
                queue.push(now + random.uint64(.ms(1) / 2 ... .ms(5)), .started(id, order, fail: chaos && random.chance(0.03)))
            case .stopProcess(let pid, let reason):
                trace("\(id.name) stop \(pid) (\(reason))")
                processes[pid] = nil
            case .beginHandoff(let token, let pid, _):
                queue.push(now + random.uint64(.ms(1) / 5 ... .ms(3)), .handoffAnswer(id, token: token, pid: pid))
            case .collectState(let token, let pid, _):
                queue.push(now + random.uint64(.ms(1) / 5 ... .ms(3)), .stateCollected(id, token: token, pid: pid))
            case .deliver(let pid, let batch):
                if settings.verbose { trace("\(id.name) deliver #\(batch.map(\.id)) to \(pid)") }
                for envelope in batch { deliver(envelope, to: pid) }
            case .endHandoff(let pid, let state):
                guard var process = processes[pid] else { break }
                if process.receivedAnything {
                    violate("\(process.name): endHandoff reached \(pid) after another message")
                }
                if let expected = process.expectFirst, expected != state {
                    violate("\(process.name): endHandoff state differs from the handed-off state")
                }
                process.expectFirst = nil
                process.receivedAnything = true
                process.adopt(state)
                processes[pid] = process
                queue.push(now, .checkpointAfterChange(pid))
            case .resolveConflict(let pid, let state):
                trace("\(pid) resolveConflict")
                // The winner takes in what the loser knew (the gateway merges twins).
                processes[pid]?.tokens.formUnion(Process.parse(state).tokens)
                queue.push(now, .checkpointAfterChange(pid))
            case .reply(let request, let reply):
                trace("\(id.name) reply #\(request): \(reply)")
                if let (name, token) = pendingTokens.removeValue(forKey: request), reply == .done(nil) {
                    acknowledgedTokens[name, default: []].insert(token)
                }
                if let (name, attempt) = recoveryRequests.removeValue(forKey: request) { recoveryRegistered(name, attempt: attempt, reply) }
                if acknowledgedCheckpoints.removeValue(forKey: request) != nil {
                    answeredCheckpoints.insert(request)
                    if reply != .done(nil) && reply != .done(.timeout) { violate("acknowledged checkpoint #\(request) answered \(reply)") }
                } else if answeredCheckpoints.contains(request) {
                    violate("acknowledged checkpoint #\(request) answered twice")
                }
            case .undeliverable(let batch, let error):
                for envelope in batch {
                    envelopes[envelope.id]?.failed = true
                    if envelopes[envelope.id]?.planned == true {
                        violate("planned-phase message \(envelope.id) to \(envelopes[envelope.id]!.name) undeliverable: \(error)")
                    }
                }
            case .ringChanged(let ringNodes):
                trace("\(id.name) ring \(ringNodes)")
            case .memberChanged(let member):
                trace("\(id.name) member \(member)")
            case .drainComplete:
                trace("\(id.name) drain complete: exits")
                if let node = nodes[id.name], node.id == id, node.alive {
                    for pid in processes.keys.sorted() where pid.node == id {
                        if processes[pid]!.managed { violate("\(pid) still running on \(id.name) after its drain completed") }
                        processes[pid] = nil
                    }
                    crash(id.name)
                }
            case .scheduleTick(let after):
                queue.push(now + after, .tick(id))
            case .trace(let text):
                trace(text)
            }
        }
    }

    /// 0–5 resume, 6–7 restart, 8 ignore, 9 flaky: decided by the name, fixed for the run.
    func behaviour(of name: String) -> Int { Int(HashRing.hash(name) % 10) }

    /// A factory start ordered by `startProcess` completes (or fails).
    func factoryFinished(_ id: NodeID, _ order: Tracker.StartOrder, fail: Bool) {
        guard let node = nodes[id.name], node.alive, node.id == id else { return }
        let result: Result<ProcessID, SwarmError>
        if order.factory.kind != "worker" {
            result = .failure(.unknownFactory(order.factory.kind))
        } else if fail {
            result = .failure(.startFailed("simulated factory failure"))
        } else {
            let pid = ProcessID(node: id, local: nodes[id.name]!.nextLocal)
            nodes[id.name]!.nextLocal += 1
            var process = Process(pid: pid, name: order.name, managed: true, lineage: "\(order.name)@\(pid.local)", started: now)
            switch order.reason {
            case .handoff(let state?):
                process.expectFirst = state
                if !(answeredStates[order.name]?.contains(state) ?? false) {
                    violate("\(order.name): handoff state \(String(decoding: state, as: UTF8.self)) was never given by a process")
                }
            case .recover(let state):
                process.expectFirst = state
                if !(checkpointStates[order.name]?.contains(state) ?? false) {
                    violate("\(order.name): recovered state \(String(decoding: state, as: UTF8.self)) was never checkpointed")
                }
            default: break
            }
            processes[pid] = process
            everStarted.insert(order.name)
            result = .success(pid)
        }
        withTracker(id) { $0.onProcessStarted(token: order.token, result: result, now: self.now) }
    }

    /// A process answers `beginHandoff` by the behaviour of its name.
    func answerHandoff(_ id: NodeID, token: UInt64, pid: ProcessID) {
        let answer: HandoffAnswer
        if let process = processes[pid] {
            switch behaviour(of: process.name) {
            case 0, 1, 2, 3, 4, 5: answer = .resume(process.stateBytes)
            case 6, 7: answer = .restart
            case 8: answer = .ignore
            default: answer = random.chance(0.5) ? .failed("simulated timeout") : .resume(process.stateBytes)
            }
            if case .resume(let state) = answer { answeredStates[process.name, default: []].insert(state) }
        } else {
            answer = .failed("process gone")
        }
        trace("\(pid) answers \(answer)")
        withTracker(id) { $0.onHandoffAnswer(token: token, answer: answer, now: self.now) }
    }

    func deliver(_ envelope: Envelope, to pid: ProcessID) {
        guard var process = processes[pid] else {
            if var record = envelopes[envelope.id], record.planned {
                record.excused = false
                envelopes[envelope.id] = record
                violate("planned-phase message \(envelope.id) to \(record.name) delivered to ended process \(pid)")
            }
            return
        }
        if process.expectFirst != nil {
            violate("\(process.name): \(pid) got a message before endHandoff")
        }
        process.receivedAnything = true
        process.counter += 1
        processes[pid] = process
        if var record = envelopes[envelope.id] {
            record.delivered += 1
            let firstForThisProcess = record.receivers.insert(pid).inserted
            if record.named ? record.delivered > 1 : !firstForThisProcess {
                violate("message \(envelope.id) to \(record.name) delivered twice (\(pid))")
            }
            envelopes[envelope.id] = record
        }
    }
}
