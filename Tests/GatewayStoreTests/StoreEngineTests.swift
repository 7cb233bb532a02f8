import Foundation
import GatewayStore
import GatewayStoreEngines
import NIOCore
import PostgresNIO
import SQLiteNIO
import Testing

@Suite("schema and revision rules (pure)")
struct SchemaRuleTests {
    @Test("plan: empty store migrates from 0, current stays, newer is refused")
    func plans() {
        #expect(SchemaPlan.plan(found: 0, latest: 2) == .migrate(from: 0, to: 2))
        #expect(SchemaPlan.plan(found: 1, latest: 2) == .migrate(from: 1, to: 2))
        #expect(SchemaPlan.plan(found: 2, latest: 2) == .current)
        #expect(SchemaPlan.plan(found: 3, latest: 2) == .tooNew(found: 3, supported: 2))
        let steps = SchemaPlan.steps(SQLiteDeviceStore.migrations, from: 1, to: 2)
        #expect(steps.map(\.version) == [2])
        #expect(SchemaPlan.steps(PostgresDeviceStore.migrations, from: 0, to: latestSchemaVersion).map(\.version) == Array(1...latestSchemaVersion))
        #expect(SQLiteDeviceStore.migrations.count == latestSchemaVersion)
        #expect(PostgresDeviceStore.migrations.count == latestSchemaVersion)
    }

    @Test("revisions strictly increase whatever the clock does")
    func revisions() {
        #expect(Revision.next(after: 0, nowMicros: 1_000) == 1_000)
        #expect(Revision.next(after: 5_000, nowMicros: 1_000) == 5_001)
        #expect(Revision.next(after: 5_000, nowMicros: 5_000) == 5_001)
        #expect(Revision.next(after: .max, nowMicros: 1) == .max)
        var revision: Int64 = 0
        for clock in [10, 10, 9, 3, 50, 50] as [Int64] {
            let next = Revision.next(after: revision, nowMicros: clock)
            #expect(next > revision)
            revision = next
        }
    }

    @Test("the schemaTooNew error names the version found and the one supported")
    func newerMessage() {
        let text = StoreError.schemaTooNew(store: "sqlite /x", found: 7, supported: 2).description
        #expect(text.contains("schema version 7"))
        #expect(text.contains("up to 2"))
    }
}

@Suite("store engines against a real SQLite file and a real PostgreSQL server")
struct StoreEngineTests {
    @Test("rows: put, read back, revision-conditional replace, delete, tombstone, pagination, counts", arguments: Engine.allCases)
    func rows(_ engine: Engine) async throws {
        try await withStore(engine) { store, reopen in
            try await store.apply(StoreBatch(devices: (0..<25).map { .put(device(String(format: "d-%03d", $0), revision: 100, version: Int64($0))) }))
            // An older copy never replaces a newer row; an equal or newer one does.
            try await store.apply(StoreBatch(devices: [.put(device("d-001", revision: 99, version: 50, node: "stale"))]))
            try await store.apply(StoreBatch(devices: [.put(device("d-002", revision: 101, version: 7, role: .replica, node: "gw-2"))]))
            let fetched = try await store.devices(ids: ["d-001", "d-002", "nope"]).sorted { $0.id < $1.id }
            #expect(fetched.map(\.id) == ["d-001", "d-002"])
            #expect(fetched[0].node == "gw-1" && fetched[0].desiredVersion == 1 && fetched[0].revision == 100)
            #expect(fetched[1].role == .replica && fetched[1].desiredVersion == 7 && fetched[1].node == "gw-2")
            #expect(String(decoding: fetched[0].state, as: UTF8.self) == #"{"id":"d-001","version":1,"revision":100}"#)

            // Deletes are conditional on the revision; a tombstone keeps older copies out.
            try await store.apply(
                StoreBatch(devices: [
                    .delete(id: "d-003", revision: 99, tombstone: false),  // older than the row: stays
                    .delete(id: "d-004", revision: 100, tombstone: false),
                    .delete(id: "d-005", revision: 200, tombstone: true),
                ]))
            try await store.apply(StoreBatch(devices: [.put(device("d-005", revision: 150)), .put(device("d-004", revision: 100))]))
            #expect(try await store.devices(ids: ["d-003"]).count == 1)
            #expect(try await store.devices(ids: ["d-004"]).count == 1, "a plain delete leaves no tombstone: the device may come back")
            #expect(try await store.devices(ids: ["d-005"]).isEmpty, "a copy older than the tombstone is not revived")
            try await store.apply(StoreBatch(devices: [.put(device("d-005", revision: 201))]))
            #expect(try await store.devices(ids: ["d-005"]).count == 1, "a newer device of the same id is")
            let tombstones = try await store.tombstones(since: 0)
            #expect(tombstones.map(\.id) == ["d-005"] && tombstones[0].revision == 200)

            // Keyset pagination sees every row once, in id order, from another connection.
            let other = reopen()
            try await other.open()
            var seen: [String] = []
            var cursor: String?
            while true {
                let page = try await other.devices(after: cursor, limit: 7)
                if page.isEmpty { break }
                seen += page.map(\.id)
                cursor = page.last!.id
            }
            #expect(seen == (0..<25).map { String(format: "d-%03d", $0) })
            let counts = try await other.counts()
            #expect(counts == StoreCounts(owned: 24, replicas: 1, tombstones: 1))
            // Purge removes tombstones older than the cut.
            try await store.apply(StoreBatch(purgeTombstonesBefore: Int64(Date().timeIntervalSince1970 * 1000) + 1000))
            #expect(try await other.tombstones(since: 0).isEmpty)
            await other.close()
        }
    }

    @Test("a batch is one transaction: a failing row leaves nothing of the batch behind", arguments: Engine.allCases)
    func atomicity(_ engine: Engine) async throws {
        try await withStore(engine) { store, _ in
            try await store.apply(StoreBatch(devices: [.put(device("a", revision: 1))]))
            // A constraint of the test's own that refuses the id "boom".
            switch engine {
            case .sqlite:
                let connection = try await SQLiteConnection.open(storage: .file(path: (store as! SQLiteDeviceStore).path))
                _ = try await connection.query(
                    "CREATE TRIGGER refuse_boom BEFORE INSERT ON swarm_devices WHEN NEW.id = 'boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END")
                try await connection.close()
            case .postgresql:
                try await TestPostgres.fromEnvironment().execute(
                    "ALTER TABLE swarm_devices ADD CONSTRAINT refuse_boom CHECK (id <> 'boom')", database: (store as! PostgresDeviceStore).settings.database)
            }
            await #expect(throws: StoreError.self) {
                try await store.apply(
                    StoreBatch(devices: [.put(device("b", revision: 1)), .delete(id: "a", revision: 5, tombstone: true), .put(device("boom", revision: 1))]))
            }
            #expect(try await store.devices(ids: ["b"]).isEmpty)
            #expect(try await store.devices(ids: ["a"]).count == 1)
            #expect(try await store.tombstones(since: 0).isEmpty)
            try await store.apply(StoreBatch(devices: [.put(device("c", revision: 1))]))
            #expect(try await store.devices(ids: ["a", "c"]).count == 2, "the store works again after a failed transaction")
        }
    }

    @Test("a store written at schema version 1 is migrated, its rows intact", arguments: Engine.allCases)
    func migrationFromVersion1(_ engine: Engine) async throws {
        switch engine {
        case .sqlite:
            try await withTemporaryDirectory { directory in
                // What a build that knew only version 1 created and wrote.
                let old = SQLiteDeviceStore(directory: directory, logger: quietLogger("test"))
                try await old.open(upTo: 1)
                #expect(try await old.schemaVersion() == 1)
                await old.close()
                let connection = try await SQLiteConnection.open(storage: .file(path: directory + "/" + SQLiteDeviceStore.fileName))
                for index in 0..<10 {
                    _ = try await connection.query(
                        "INSERT INTO swarm_devices (id, role, desired_version, revision, node, state) VALUES (?, 0, ?, ?, 'gw-old', ?)",
                        [.text("old-\(index)"), .integer(index), .integer(1000 + index), .blob(ByteBuffer(string: "{\"v\":\(index)}"))])
                }
                try await connection.close()

                let current = SQLiteDeviceStore(directory: directory, logger: quietLogger("test"))
                try await current.open()
                #expect(try await current.schemaVersion() == latestSchemaVersion)
                let rows = try await current.devices(after: nil, limit: 100)
                #expect(rows.count == 10)
                #expect(rows.first { $0.id == "old-3" }?.desiredVersion == 3)
                #expect(rows.first { $0.id == "old-3" }.map { String(decoding: $0.state, as: UTF8.self) } == "{\"v\":3}")
                // Version 2's table works.
                try await current.apply(StoreBatch(devices: [.delete(id: "old-3", revision: 5000, tombstone: true)]))
                #expect(try await current.tombstones(since: 0).map(\.id) == ["old-3"])
                await current.close()
            }
        case .postgresql:
            try await withTestDatabase { server, database in
                let old = PostgresDeviceStore(settings: server.settings(database: database), logger: quietLogger("test"))
                try await old.open(upTo: 1)
                #expect(try await old.schemaVersion() == 1)
                await old.close()
                for index in 0..<10 {
                    try await server.execute(
                        "INSERT INTO swarm_devices (id, role, desired_version, revision, node, state) VALUES ('old-\(index)', 0, \(index), \(1000 + index), 'gw-old', convert_to('{\"v\":\(index)}', 'UTF8'))",
                        database: database)
                }
                let current = PostgresDeviceStore(settings: server.settings(database: database), logger: quietLogger("test"))
                try await current.open()
                #expect(try await current.schemaVersion() == latestSchemaVersion)
                let rows = try await current.devices(after: nil, limit: 100)
                #expect(rows.count == 10)
                #expect(rows.first { $0.id == "old-3" }.map { String(decoding: $0.state, as: UTF8.self) } == "{\"v\":3}")
                try await current.apply(StoreBatch(devices: [.delete(id: "old-3", revision: 5000, tombstone: true)]))
                #expect(try await current.tombstones(since: 0).map(\.id) == ["old-3"])
                await current.close()
            }
        }
    }

    @Test("a store written by a newer build is refused with its version", arguments: Engine.allCases)
    func newerSchemaRefused(_ engine: Engine) async throws {
        try await withStore(engine) { store, reopen in
            try await store.apply(StoreBatch(devices: [.put(device("kept", revision: 1))]))
            switch engine {
            case .sqlite:
                let path = (store as! SQLiteDeviceStore).path
                let connection = try await SQLiteConnection.open(storage: .file(path: path))
                _ = try await connection.query("INSERT INTO swarm_schema (version, applied_at, build) VALUES (9, 0, 'swarm-gateway schema 9')")
                try await connection.close()
            case .postgresql:
                let settings = (store as! PostgresDeviceStore).settings
                try await TestPostgres.fromEnvironment().execute(
                    "INSERT INTO swarm_schema (version, applied_at, build) VALUES (9, 0, 'swarm-gateway schema 9')", database: settings.database)
            }
            let newer = reopen()
            do {
                try await newer.open()
                Issue.record("a store at schema version 9 was opened")
            } catch let error as StoreError {
                #expect(error == .schemaTooNew(store: newer.location, found: 9, supported: latestSchemaVersion))
                #expect(error.description.contains("schema version 9"))
            }
            await newer.close()
            // Nothing was changed by the refused open.
            #expect(try await store.devices(ids: ["kept"]).count == 1)
        }
    }

    @Test("several nodes migrating one PostgreSQL database at once all end at the latest version")
    func concurrentMigration() async throws {
        try await withTestDatabase { server, database in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        let store = PostgresDeviceStore(settings: server.settings(database: database), logger: quietLogger("test"))
                        try await store.open()
                        let version = try await store.schemaVersion()
                        await store.close()
                        return version
                    }
                }
                for try await version in group { #expect(version == latestSchemaVersion) }
            }
        }
    }

    @Test("SQLite: WAL mode on disk, online backup while the writer writes")
    func sqliteBackup() async throws {
        try await withTemporaryDirectory { directory in
            let store = SQLiteDeviceStore(directory: directory + "/node", logger: quietLogger("test"))
            try await store.open()
            let mode = try await SQLiteConnection.open(storage: .file(path: store.path))
            let journal = try await mode.query("PRAGMA journal_mode").first?.columns.first?.data.string
            try await mode.close()
            #expect(journal == "wal")
            // A loaded machine may take seconds for one commit; the commit bound is not this test's subject.
            var settings = StoreSettings()
            settings.commitTimeout = .seconds(60)
            try await withWriter(store, settings: settings) { writer in
                try await writer.commit((0..<500).map { .put(device("b-\($0)", revision: 1)) })
                // Keep writing while the backup runs.
                let busy = Task {
                    var revision: Int64 = 2
                    while !Task.isCancelled {
                        try? await writer.commit((0..<50).map { .put(device("b-\($0)", revision: revision)) })
                        revision += 1
                    }
                }
                let copy = directory + "/backup.sqlite"
                let (version, counts) = try await SQLiteDeviceStore.backup(directory: directory + "/node", to: copy, logger: quietLogger("test"))
                busy.cancel()
                _ = await busy.value
                #expect(version == latestSchemaVersion)
                #expect(counts.owned == 500)
                // A second backup to the same file is refused, not overwritten.
                await #expect(throws: StoreError.self) {
                    _ = try await SQLiteDeviceStore.backup(directory: directory + "/node", to: copy, logger: quietLogger("test"))
                }
                // The copy opens as a store of its own.
                let restored = SQLiteDeviceStore(file: copy, logger: quietLogger("test"))
                try await restored.open()
                #expect(try await restored.devices(after: nil, limit: 1000).count == 500)
                await restored.close()
            }
        }
    }

    @Test("the data directory lock keeps a second holder out and names the first")
    func directoryLock() async throws {
        try await withTemporaryDirectory { directory in
            var lock: DataDirectoryLock? = try DataDirectoryLock(directory: directory, holder: "gw-1 pid 42")
            #expect(!DataDirectoryLock.isFree(directory))
            do {
                _ = try DataDirectoryLock(directory: directory, holder: "gw-2")
                Issue.record("a second lock was taken")
            } catch let error as StoreError {
                #expect(error == .locked(path: directory, holder: "gw-1 pid 42"))
            }
            _ = lock
            lock = nil
            #expect(DataDirectoryLock.isFree(directory))
            _ = try DataDirectoryLock(directory: directory, holder: "gw-2")
        }
    }
}
