import Foundation
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
            try await withWriter(store) { writer in
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

    @Test("write-behind: coalesced per device, on disk within the window (measured)", arguments: Engine.allCases)
    func writeBehindWindow(_ engine: Engine) async throws {
        var settings = StoreSettings()
        settings.writeBehindInterval = .milliseconds(250)
        try await withStore(engine) { store, reopen in
            let reader = reopen()
            try await reader.open()
            try await withWriter(store, settings: settings) { writer in
                let devices = 50
                let rounds = 120
                // Each round bumps every device's revision; record when each round was queued.
                let queuedAt = Box<[Int64: ContinuousClock.Instant]>([:])
                let producer = Task {
                    for round in 1...rounds {
                        queuedAt.withLock { $0[Int64(round)] = .now }
                        for index in 0..<devices { writer.writeBehind(.put(device("w-\(index)", revision: Int64(round)))) }
                        try? await Task.sleep(for: .milliseconds(10))
                    }
                }
                // Poll the database from another connection: the lag of a round is the time from
                // its queueing until every device's row shows it (or a later one).
                var worstLag: Duration = .zero
                var seenRound: Int64 = 0
                let deadline = ContinuousClock.now + .seconds(30)
                while seenRound < Int64(rounds) && ContinuousClock.now < deadline {
                    let rows = try await reader.devices(after: nil, limit: 1000)
                    let now = ContinuousClock.now
                    let onDisk = rows.count == devices ? rows.map(\.revision).min()! : 0
                    if onDisk > seenRound {
                        for round in (seenRound + 1)...onDisk {
                            if let queued = queuedAt.withLock({ $0[round] }) { worstLag = max(worstLag, now - queued) }
                        }
                        seenRound = onDisk
                    }
                    // Rounds still not on disk count as lagging too.
                    if let oldest = queuedAt.withLock({ $0[seenRound + 1] }) { worstLag = max(worstLag, now - oldest) }
                    try await Task.sleep(for: .milliseconds(10))
                }
                _ = await producer.value
                let stats = writer.stats
                print("write-behind (\(engine)): \(stats.writeBehindWrites) changes in \(stats.commits) transactions, worst lag seen \(worstLag), max age at commit \(Int(stats.writeBehindAgeSeconds.maximum * 1000)) ms, interval 250 ms")
                #expect(seenRound == Int64(rounds))
                #expect(stats.writeBehindWrites == devices * rounds)
                #expect(stats.commits * 20 < stats.writeBehindWrites, "not one transaction per change")
                #expect(stats.coalesced > 0)
                #expect(worstLag < .seconds(1), "a change reached the database \(worstLag) after it was queued (window 250 ms)")
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
                try await writer.commit(.put(device("before", revision: 1)))
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
                #expect(ContinuousClock.now - started < .seconds(5))
                #expect(await eventually(timeout: .seconds(10)) { !writer.isHealthy })
                let down = writer.stats
                #expect(down.flushErrors >= 1 && down.durableFailures >= 1 && down.lastError != nil)
                #expect(down.queued >= 20, "write-behind changes are kept while the store is down")
                print("store down (\(engine)): \(down.lastError ?? "-")")

                try await repairStore()
                #expect(await eventually(timeout: .seconds(15)) { writer.isHealthy && writer.stats.queued == 0 })
                try await writer.commit(.put(device("after", revision: 1)))
                let ids = Set(try await reader().devices(after: nil, limit: 1000).map(\.id))
                #expect(ids.isSuperset(of: ["before", "after"] + (0..<20).map { "behind-\($0)" }))
                #expect(!ids.contains("refused"), "the refused write was not adopted")
            }
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
