import Foundation
import GatewayStore
import Logging
import SwarmCore
import SwarmNode

/// Recovery from the durable store at start (docs/deployment.md, “Durable state”); see ``DeviceRecovery`` for the shared
/// state and the barrier.
///
/// 0. The store writer holds every write from ``start()`` until step 4 has read the whole store:
///    a process that a device message creates meanwhile (a retained birth) starts empty, and its
///    first write must not replace a stored row not read yet (its history would be lost); it
///    takes the row in when it arrives (``DeviceState/absorb(_:)``: another history is merged).
/// 1. Load the store's tombstones (deleted devices stay deleted).
/// 2. Wait for the ring to settle (no change for ``GatewaySettings/recoverySettle``, at most
///    ten times that): rows are sent to the owners under the ring the cluster agrees on, so
///    few have to move again by handoff.
/// 3. Ask every gateway node whether it is still recovering (``NodeMessage/recoveryStatus``);
///    those that are get waited for.
/// 4. Read the store in pages of ``GatewaySettings/recoveryPage`` rows. A row of a device this
///    node owns is offered here; one another node owns is sent to that node's
///    ``GatewayNodeProcess`` (``NodeMessage/rows(_:)``, batched); with a shared store only the
///    rows this node owns are taken. Deleted devices' rows are dropped.
/// 5. Tell every gateway node this one is done (``NodeMessage/recoveryDone(node:)``): the rows
///    went before it on the same connection, so a peer that handles the notice has them.
///
/// Meanwhile ``registerRecovered()`` registers every offered device (64 at a time): its process
/// starts on its owner from the row (the factory takes it), or, when it already runs, is nudged to
/// take the row in (``DeviceMessage/restore``); a process that runs on another node gets the row
/// sent there.
extension DeviceGateway {
    /// Steps 1–5 above; then opens the barrier once peers and registrations are through (or the
    /// recovery timeout passes).
    func recover() async {
        guard let storage = runtime.storage else {
            runtime.recovery.forceReady()
            return
        }
        defer { storage.writer.release() }
        let recovery = runtime.recovery
        recovery.started()
        let started = ContinuousClock.now
        let store = storage.writer.store
        // 1. Tombstones.
        let retention = storage.writer.settings.tombstoneRetention
        let since = Timestamp.nowMillis() - retention.components.seconds * 1000
        do {
            storage.loadTombstones(try await store.tombstones(since: since))
        } catch {
            logger.error("recovery: the store's tombstones could not be read (\(error)); deleted devices may come back from other nodes' rows")
        }
        // 2. A settled ring.
        await waitForSettledRing()
        // 3. Who is still recovering.
        let pending = await recoveringPeers()
        recovery.asked(pending: pending)
        // 4. The rows.
        var after: String?
        var local = 0
        var sent = 0
        var failures = 0
        while isRunning {
            let page: [StoredDevice]
            do {
                page = try await store.devices(after: after, limit: settings.recoveryPage)
            } catch {
                failures += 1
                let delay = Duration.milliseconds(min(2000, 100 << min(failures, 5)))
                logger.error("recovery: reading \(store.location) failed (\(error)); retrying in \(delay)")
                try? await Task.sleep(for: delay)
                continue
            }
            guard let last = page.last else { break }
            after = last.id
            var outbox: [String: [RecoveredRow]] = [:]
            for device in page {
                if storage.isDeleted(device.id, revision: device.revision) {
                    recovery.countDeleted()
                    continue
                }
                let row = RecoveredRow(id: device.id, revision: device.revision, state: device.state)
                let owner = node.owner(of: device.id) ?? node.id.name
                if owner == node.id.name {
                    recovery.offer(row)
                    local += 1
                } else if !storage.isShared {
                    outbox[owner, default: []].append(row)
                    sent += 1
                }
            }
            for (owner, rows) in outbox.sorted(by: { $0.key < $1.key }) { await sendRows(rows, to: owner) }
        }
        // 5. Done. A per-node store takes writes again (this node read all of it); a shared one
        // once every peer read its part too (the barrier), since any node may write any row.
        if !storage.isShared { storage.writer.release() }
        recovery.scanFinished()
        try? await node.publish(GatewaySettings.nodeGroup, NodeMessage.recoveryDone(node: node.id.name).encoded())
        logger.info(
            "recovery: \(store.location) read in \(ContinuousClock.now - started): \(local) device(s) owned here, \(sent) sent to their owners, waiting for \(recovery.awaitedPeers.sorted()) and \(recovery.summary.pending) registration(s)")
        // Peers that leave while awaited count as done; the timeout opens the barrier regardless.
        let deadline = started + settings.recoveryTimeout
        while !recovery.isReady && isRunning {
            if ContinuousClock.now >= deadline {
                logger.warning(
                    "recovery: not complete after \(settings.recoveryTimeout) (peers not done: \(recovery.awaitedPeers.sorted()), \(recovery.summary.pending) registration(s) pending); taking API writes anyway")
                recovery.forceReady()
                break
            }
            var present = Set(node.members(GatewaySettings.nodeGroup).map(\.node.name))
            present.formUnion((try? await node.dump())?.ringNodes ?? [])
            for peer in recovery.awaitedPeers where !present.contains(peer) { recovery.peerDone(peer) }
            _ = await recovery.waitUntilReady(timeout: .milliseconds(500))
        }
        storage.writer.release()
        let summary = recovery.summary
        logger.info(
            "recovery complete in \(summary.readyAfter ?? (ContinuousClock.now - started)): \(summary.rowsOffered) row(s) offered here, \(summary.rowsDeleted) of deleted devices dropped, \(summary.held) not taken by a process")
    }

    /// Waits until the ring has not changed for ``GatewaySettings/recoverySettle`` (at most ten
    /// times that).
    private func waitForSettledRing() async {
        let settle = settings.recoverySettle
        guard settle > .zero else { return }
        let deadline = ContinuousClock.now + settle * 10
        var epoch = (try? await node.dump())?.ringEpoch
        var since = ContinuousClock.now
        while ContinuousClock.now < deadline && isRunning {
            try? await Task.sleep(for: min(settle, .milliseconds(100)))
            let current = (try? await node.dump())?.ringEpoch
            if current != epoch {
                epoch = current
                since = .now
            } else if ContinuousClock.now - since >= settle {
                return
            }
        }
    }

    /// The peers to wait for: every other node in the ring or with a gateway process, except
    /// those that answer that they have sent all of their rows (a peer whose gateway process is
    /// not registered yet is waited for too: its rows may still come).
    private func recoveringPeers() async -> [String] {
        let result = await node.multiCall(GatewaySettings.nodeGroup, NodeMessage.recoveryStatus.encoded(), timeout: settings.queryTimeout)
        var peers = Set((try? await node.dump())?.ringNodes ?? [])
        peers.formUnion(node.members(GatewaySettings.nodeGroup).map(\.node.name))
        peers.remove(node.id.name)
        for (pid, reply) in result.replies where reply.first == 1 { peers.remove(pid.node.name) }
        return peers.sorted()
    }

    /// Sends `rows` to `owner`'s gateway process in batches of at most 512 KiB. When that process
    /// is unknown here, `fallback` rows are offered here instead (registration routes the device
    /// to its owner, and the row follows it); others are dropped with a log line.
    func sendRows(_ rows: [RecoveredRow], to owner: String, fallback: Bool = true) async {
        let name = GatewaySettings.nodeProcessName(GatewaySettings.topicSafe(owner))
        var batch: [RecoveredRow] = []
        var bytes = 0
        func flush() async {
            guard !batch.isEmpty else { return }
            do {
                try await node.send(name, NodeMessage.rows(batch).encoded())
            } catch where fallback {
                for row in batch { runtime.recovery.offer(row) }
            } catch {
                logger.warning("recovery: \(batch.count) stored row(s) could not be sent to \(owner) (\(error)); the devices keep what they have")
            }
            batch = []
            bytes = 0
        }
        for row in rows {
            batch.append(row)
            bytes += row.state.count + row.id.utf8.count + 16
            if bytes >= 512 * 1024 { await flush() }
        }
        await flush()
    }

    /// Registers every device offered to ``DeviceRecovery`` (at most 64 at a time) until the
    /// gateway stops.
    func registerRecovered() async {
        let recovery = runtime.recovery
        await withTaskGroup(of: Void.self) { group in
            var inFlight = 0
            for await id in recovery.registrations {
                guard isRunning else { break }
                if inFlight >= 64 {
                    await group.next()
                    inFlight -= 1
                }
                inFlight += 1
                group.addTask {
                    await self.registerRecovered(id)
                    recovery.registered()
                }
            }
            group.cancelAll()
        }
    }

    private func registerRecovered(_ id: String) async {
        for attempt in 0..<8 {
            guard isRunning else { return }
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(50 << min(attempt, 5))) }
            let pid: ProcessID
            if let known = node.whereis(id) {
                pid = known
            } else {
                do {
                    switch try await node.register(id, kind: settings.processKind, groups: [runtime.swarmGroup("all")]) {
                    case .registered(let registered), .alreadyRegistered(let registered):
                        pid = registered
                    case .failed(let error):
                        if case .unknownFactory = error { return }
                        if attempt == 7 { logger.warning("recovery: device \(id) not registered: \(error)") }
                        continue
                    }
                } catch {
                    if attempt == 7 { logger.warning("recovery: device \(id) not registered: \(error)") }
                    continue
                }
            }
            if pid.node == node.id {
                // Started from the row by the factory, or running already: it takes the row in
                // (and joins its groups) now — a call, so the id counts as registered (and the node
                // as ready) only once the process serves the recovered state, not while the
                // nudge waits in its mailbox behind a retained birth.
                if (try? await node.call(pid, DeviceMessage.restore.encoded(), timeout: .seconds(10))) != nil { return }
                continue
            }
            // Hosted elsewhere (the ring moved, or it started there first): the row follows it.
            if let row = runtime.recovery.takeRow(id) { await sendRows([row], to: pid.node.name, fallback: false) }
            return
        }
    }
}
