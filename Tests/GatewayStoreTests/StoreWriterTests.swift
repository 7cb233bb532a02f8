import Foundation
import PostgresNIO
import GatewayStore
import GatewayStoreEngines
import Synchronization
import Testing

@Suite("the store writer: group commit, write-behind, failures (real SQLite and PostgreSQL)")
struct StoreWriterTests {
    @Test("group commit: concurrent durable writes share transactions, each await returns after its commit", arguments: Engine.allCases)
    func groupCommit(_ engine: Engine) async throws {
        try await withStore(engine) { store, reopen in
            let reader = reopen()
            try await reader.open()
            // A loaded machine may take seconds for one commit; the default 3 s bound is not what
            // this test is about.
            var settings = StoreSettings()
            settings.commitTimeout = .seconds(60)
            try await withWriter(store, settings: settings) { writer in
                let missing = Box(0)
                await withTaskGroup(of: Void.self) { group in
                    for index in 0..<200 {
                        group.addTask {
                            do {
                                try await writer.commit(.put(device("g-\(index)", revision: 1)))
                                // Durable before the await returned: another connection sees it.
                                if try await reader.devices(ids: ["g-\(index)"]).isEmpty { missing.withLock { $0 += 1 } }
                            } catch {
                                missing.withLock { $0 += 1 }
                            }
                        }
                    }
                }
                #expect(missing.withLock { $0 } == 0)
                let stats = writer.stats
                #expect(stats.durableWrites == 200)
                #expect(stats.commits < 200, "one transaction per write: \(stats.commits)")
                #expect(stats.durableFailures == 0 && stats.flushErrors == 0 && stats.healthy)
                #expect(stats.commitSeconds.count == stats.commits)
                print("group commit (\(engine)): 200 durable writes in \(stats.commits) transactions, max commit \(stats.commitSeconds.maximum * 1000) ms")
            }
            #expect(try await reader.counts().owned == 200)
            await reader.close()
        }
    }

    @Test("write-behind on a stepped clock: nothing is written before the window, everything (coalesced to the newest) exactly when it ends", arguments: Engine.allCases)
    func writeBehindWindow(_ engine: Engine) async throws {
        let clock = ManualClock()
        var settings = StoreSettings()
        settings.writeBehindInterval = .milliseconds(250)
        settings.countsInterval = .seconds(3600)
        settings.clock = clock.storeClock
        try await withStore(engine) { store, reopen in
            let reader = reopen()
            try await reader.open()
            try await withWriter(store, settings: settings) { writer in
                let devices = 50
                var revision: Int64 = 0
                for round in 1...4 {
                    let start = clock.now
                    // Changes of every device, then newer ones within the window: coalesced.
                    revision += 1
                    for index in 0..<devices { writer.writeBehind(.put(device("w-\(index)", revision: revision))) }
                    // The writer sleeps until the oldest change is due (an event: its sleep).
                    try #require(await clock.waitForSleeper(until: start + .milliseconds(250)), "round \(round): the writer waits for the window")
                    clock.advance(to: start + .milliseconds(249))
                    revision += 1
                    for index in 0..<devices { writer.writeBehind(.put(device("w-\(index)", revision: revision))) }
                    #expect(writer.stats.commits == round - 1, "round \(round): nothing written before the window ends")
                    #expect(try await reader.devices(after: nil, limit: 1000).allSatisfy { $0.revision < revision - 1 }, "round \(round): nothing of this round on disk yet")
                    clock.advance(to: start + .milliseconds(250))
                    // Its commit (an event: the writer's count), then the rows.
                    try #require(await eventually(timeout: .seconds(30)) { writer.stats.commits == round && writer.stats.queued == 0 }, "round \(round): written when the window ended")
                    let rows = try await reader.devices(after: nil, limit: 1000)
                    #expect(rows.count == devices && rows.allSatisfy { $0.revision == revision }, "round \(round): every device at its newest change")
                    clock.advance(by: .milliseconds(100))
                }
                let stats = writer.stats
                #expect(stats.commits == 4 && stats.rowsWritten == 4 * devices, "one transaction per window, one row per device: \(stats.commits), \(stats.rowsWritten)")
                #expect(stats.writeBehindWrites == 8 * devices && stats.coalesced >= 4 * devices)
                // On the stepped clock the age at commit is exactly the window.
                #expect(stats.writeBehindAgeSeconds.maximum == 0.25, "\(stats.writeBehindAgeSeconds.maximum)")
                print("write-behind (\(engine)): \(stats.writeBehindWrites) changes in \(stats.commits) transactions, each at the end of its 250 ms window")
            }
            await reader.close()
        }
    }

    @Test("a store that goes away: durable writes fail fast with unavailable, write-behind waits, all caught up when it is back", arguments: Engine.allCases)
    func storeGoesAwayAndComesBack(_ engine: Engine) async throws {
        var settings = StoreSettings()
        settings.writeBehindInterval = .milliseconds(100)
        settings.commitTimeout = .seconds(2)
        settings.countsInterval = .milliseconds(200)
        try await withBrokenStore(engine) { store, breakStore, repairStore, reader in
            try await withWriter(store, settings: settings) { writer in
                try await commitRetrying(writer, device("before", revision: 1))
                try await breakStore()
                for index in 0..<20 { writer.writeBehind(.put(device("behind-\(index)", revision: 1))) }
                let started = ContinuousClock.now
                do {
                    try await writer.commit(.put(device("refused", revision: 1)))
                    Issue.record("a durable write succeeded while the store was down")
                } catch let error as StoreError {
                    guard case .unavailable = error else {
                        Issue.record("unexpected \(error)")
                        return
                    }
                }
                // Answered within about the commit timeout (2 s), not held until the store is
                // back (the store stays broken until repairStore below): room for a loaded machine.
                #expect(ContinuousClock.now - started < .seconds(12), "a durable write while the store is down answers, bounded by the commit timeout")
                #expect(await eventually(timeout: .seconds(10)) { !writer.isHealthy })
                let down = writer.stats
                #expect(down.flushErrors >= 1 && down.durableFailures >= 1 && down.lastError != nil)
                #expect(down.queued >= 20, "write-behind changes are kept while the store is down")
                print("store down (\(engine)): \(down.lastError ?? "-")")

                try await repairStore()
                #expect(await eventually(timeout: .seconds(15)) { writer.isHealthy && writer.stats.queued == 0 })
                try await commitRetrying(writer, device("after", revision: 1))
                let ids = Set(try await reader().devices(after: nil, limit: 1000).map(\.id))
                #expect(ids.isSuperset(of: ["before", "after"] + (0..<20).map { "behind-\($0)" }))
                #expect(!ids.contains("refused"), "the refused write was not adopted")
            }
        }
    }

    @Test("a PostgreSQL server that stops answering (its backends SIGSTOPped, connections open): durable writes answer unavailable in time, the writer is unhealthy, close is bounded; caught up once it answers")
    func serverStopsAnswering() async throws {
        try await withTestDatabase { server, database in
            var storeSettings = server.settings(database: database)
            storeSettings.reconnectDelay = .milliseconds(100)
            storeSettings.operationTimeout = .seconds(4)
            let store = PostgresDeviceStore(settings: storeSettings, logger: quietLogger("test"))
            try await store.open()
            var settings = StoreSettings()
            settings.writeBehindInterval = .milliseconds(100)
            settings.commitTimeout = .seconds(1)
            settings.countsInterval = .milliseconds(200)
            settings.logger = quietLogger("test.store")
            let writer = StoreWriter(store: store, settings: settings)
            let running = Task { await writer.run() }
            try await commitRetrying(writer, device("before", revision: 1))

            // The server's backends for this database stop (as a hung host or a lost network
            // path looks from here: the connection stays open, nothing comes back).
            let backends = try await backendPIDs(server, database: database)
            try #require(!backends.isEmpty, "the store's connections are on the server")
            for pid in backends { kill(pid, SIGSTOP) }
            var resumed = false
            defer { if !resumed { for pid in backends { kill(pid, SIGCONT) } } }

            for index in 0..<10 { writer.writeBehind(.put(device("behind-\(index)", revision: 1))) }
            let started = ContinuousClock.now
            await #expect(throws: StoreError.self) { try await writer.commit(.put(device("refused", revision: 1))) }
            let answered = ContinuousClock.now - started
            // The transaction holding it may still commit once the server answers (it was in
            // flight): the caller undoes at an equal or higher revision, as the gateway does, and
            // the undo is ordered after it.
            writer.writeBehind(.delete(id: "refused", revision: 1, tombstone: false))
            print("server stopped: a durable write answered unavailable after \(answered) (commit timeout 1 s)")
            #expect(answered < .seconds(8), "answered by the commit timeout, not held by the silent server")
            #expect(await eventually(timeout: .seconds(10)) { !writer.isHealthy }, "the writer is unhealthy while a transaction hangs")

            // The server answers again: the abandoned connections were closed; new ones catch up.
            for pid in backends { kill(pid, SIGCONT) }
            resumed = true
            #expect(await eventually(timeout: .seconds(30)) { writer.isHealthy && writer.stats.queued == 0 }, "caught up: \(writer.stats.lastError ?? "-")")
            try await commitRetrying(writer, device("after", revision: 1))
            let reader = PostgresDeviceStore(settings: server.settings(database: database), logger: quietLogger("test"))
            try await reader.open()
            let ids = Set(try await reader.devices(after: nil, limit: 1000).map(\.id))
            await reader.close()
            #expect(ids.isSuperset(of: ["before", "after"] + (0..<10).map { "behind-\($0)" }), "\(ids.sorted())")
            #expect(!ids.contains("refused"), "the write answered unavailable is undone on disk too")

            // Stopped again, then shut down: close gives up in bounded time instead of hanging.
            writer.writeBehind(.put(device("at-close", revision: 1)))
            let again = try await backendPIDs(server, database: database)
            for pid in again { kill(pid, SIGSTOP) }
            let closing = ContinuousClock.now
            await writer.close()
            await running.value
            for pid in again { kill(pid, SIGCONT) }
            print("server stopped at shutdown: close returned after \(ContinuousClock.now - closing)")
            #expect(ContinuousClock.now - closing < .seconds(40), "close is bounded")
        }
    }

    @Test("close commits what is queued; writes after close are refused")
    func closeFlushes() async throws {
        var settings = StoreSettings()
        settings.writeBehindInterval = .seconds(1)
        try await withStore(.sqlite) { store, reopen in
            let writer = StoreWriter(store: store, settings: settings)
            let running = Task { await writer.run() }
            for index in 0..<100 { writer.writeBehind(.put(device("c-\(index)", revision: 1))) }
            await writer.close()
            await running.value
            await #expect(throws: StoreError.closed) { try await writer.commit(.put(device("late", revision: 1))) }
            let reader = reopen()
            try await reader.open()
            #expect(try await reader.counts().owned == 100)
            await reader.close()
        }
    }
}

/// A clock the test steps (``StoreClock``): `now` moves only with ``advance(to:)``; a sleeper
/// wakes when it passes the sleeper's deadline.
final class ManualClock: Sendable {
    private struct State {
        var now: Duration = .zero
        var sleepers: [UInt64: (until: Duration, continuation: CheckedContinuation<Void, any Error>)] = [:]
        var next: UInt64 = 0
    }

    private let state = Mutex(State())

    var now: Duration { state.withLock { $0.now } }

    var storeClock: StoreClock {
        StoreClock(now: { [self] in now }, sleep: { [self] until in try await sleep(until: until) })
    }

    func advance(to instant: Duration) {
        let due = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.now = max(state.now, instant)
            let due = state.sleepers.filter { $0.value.until <= state.now }
            for id in due.keys { state.sleepers[id] = nil }
            return due.values.map(\.continuation)
        }
        for continuation in due { continuation.resume() }
    }

    func advance(by duration: Duration) { advance(to: now + duration) }

    /// Waits (polling, bounded) until something sleeps until exactly `instant`.
    func waitForSleeper(until instant: Duration) async -> Bool {
        await eventually(timeout: .seconds(30)) { state.withLock { $0.sleepers.values.contains { $0.until == instant } } }
    }

    private func sleep(until: Duration) async throws {
        let id = state.withLock { state -> UInt64 in
            defer { state.next += 1 }
            return state.next
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let now = state.withLock { state -> Bool in
                    if until <= state.now || Task.isCancelled { return true }
                    state.sleepers[id] = (until, continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLock { $0.sleepers.removeValue(forKey: id)?.continuation }
            continuation?.resume(throwing: CancellationError())
        }
        try Task.checkCancellation()
    }
}

/// Runs `body` with a store of `engine` that the test can break for real and repair:
/// - SQLite: the data directory is a 2 MiB tmpfs; breaking fills it (disk full), repairing frees it;
/// - PostgreSQL: breaking forbids connections to the test database and terminates the store's
///   (the server refuses it, as when it is down or restarting); repairing allows them again.
/// `reader` opens a second store on the same database.
func withBrokenStore(
    _ engine: Engine,
    _ body: (_ store: any DeviceStore, _ breakStore: () async throws -> Void, _ repairStore: () async throws -> Void, _ reader: () async throws -> any DeviceStore)
        async throws -> Void
) async throws {
    switch engine {
    case .sqlite:
        try await withTemporaryDirectory { directory in
            guard mount(tmpfs: directory, bytes: 2 << 20) else {
                throw TestFailure("mounting a 2 MiB tmpfs on \(directory) failed (the disk-full test needs root, as CI runs)")
            }
            defer { unmount(directory) }
            let store = SQLiteDeviceStore(directory: directory + "/node", logger: quietLogger("test"))
            try await store.open()
            let filler = directory + "/filler"
            var readers: [SQLiteDeviceStore] = []
            try await body(
                store,
                {
                    // Fill the file system to the last byte.
                    FileManager.default.createFile(atPath: filler, contents: nil)
                    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: filler))
                    let chunk = Data(count: 64 * 1024)
                    while (try? handle.write(contentsOf: chunk)) != nil {}
                    let small = Data(count: 512)
                    while (try? handle.write(contentsOf: small)) != nil {}
                    try? handle.close()
                },
                { try FileManager.default.removeItem(atPath: filler) },
                {
                    let reader = SQLiteDeviceStore(directory: directory + "/node", logger: quietLogger("test"))
                    try await reader.open()
                    readers.append(reader)
                    return reader
                })
            for reader in readers { await reader.close() }
            await store.close()
        }
    case .postgresql:
        try await withTestDatabase { server, database in
            var settings = server.settings(database: database)
            settings.reconnectDelay = .milliseconds(100)
            let store = PostgresDeviceStore(settings: settings, logger: quietLogger("test"))
            try await store.open()
            var readers: [PostgresDeviceStore] = []
            try await body(
                store,
                {
                    try await server.execute("ALTER DATABASE \(database) ALLOW_CONNECTIONS false")
                    try await server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database)' AND pid <> pg_backend_pid()")
                },
                { try await server.execute("ALTER DATABASE \(database) ALLOW_CONNECTIONS true") },
                {
                    let reader = PostgresDeviceStore(settings: server.settings(database: database), logger: quietLogger("test"))
                    try await reader.open()
                    readers.append(reader)
                    return reader
                })
            for reader in readers { await reader.close() }
            await store.close()
        }
    }
}

/// `mount -t tmpfs -o size=BYTES tmpfs DIR`.
func mount(tmpfs directory: String, bytes: Int) -> Bool {
    run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", directory]) == 0
}

func unmount(_ directory: String) {
    _ = run("/bin/umount", ["-l", directory])
}

func run(_ executable: String, _ arguments: [String]) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    do { try process.run() } catch { return -1 }
    process.waitUntilExit()
    return process.terminationStatus
}

/// A durable write that succeeds while the store is healthy: retried when a loaded machine made
/// one commit exceed the short ``StoreSettings/commitTimeout`` of a test about store failures.
private func commitRetrying(_ writer: StoreWriter, _ row: StoredDevice) async throws {
    for attempt in 1...10 {
        do {
            try await writer.commit(.put(row))
            return
        } catch StoreError.unavailable where attempt < 10 {
            continue
        }
    }
}

/// The server processes serving connections to `database` (not the one asking).
func backendPIDs(_ server: TestPostgres, database: String) async throws -> [pid_t] {
    let connection = try await server.connect()
    defer { Task { try? await connection.close() } }
    let rows = try await connection.query(
        "SELECT pid FROM pg_stat_activity WHERE datname = \(database) AND pid <> pg_backend_pid()", logger: quietLogger("test.pg"))
    var pids: [pid_t] = []
    for try await pid in rows.decode(Int32.self) { pids.append(pid) }
    return pids
}
