import ArgumentParser
import Foundation
import GatewayStore
import GatewayStoreEngines
import Logging

/// `swarm-gateway backup`: an online copy of a node's SQLite store.
struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Copy a node's SQLite store to a file while the node runs (SQLite online backup).",
        discussion: """
            Writes a consistent copy of DIR/gateway.sqlite to FILE (which must not exist) through a \
            connection of its own: SQLite's VACUUM INTO, one read transaction, so the node keeps \
            serving and writing meanwhile. Restore it with `swarm-gateway restore` while the node \
            is stopped. With the PostgreSQL store, back up the database with pg_dump instead.
            """)

    @Option(name: .customLong("data-dir"), help: "The node's data directory (env SWARM_GATEWAY_DATA_DIRECTORY).")
    var dataDirectory: String?

    @Option(help: "The backup file to write (must not exist).")
    var to: String

    func run() async throws {
        let directory = try resolvedDataDirectory(dataDirectory)
        let started = ContinuousClock.now
        do {
            let (version, counts) = try await SQLiteDeviceStore.backup(directory: directory, to: to, logger: Logger(label: "swarm.backup"))
            print("backup of \(directory) written to \(to): schema version \(version), \(counts.owned) owned device(s), \(counts.replicas) replica(s), \(counts.tombstones) tombstone(s), \(ContinuousClock.now - started)")
        } catch {
            throw OperatorError(message: "backup failed: \(error)")
        }
    }
}

/// `swarm-gateway restore`: puts a backup in place of a stopped node's store.
struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a backup into a node's data directory (the node must be stopped).",
        discussion: """
            Checks that no node holds DIR (its LOCK file), that FILE is a store this build can \
            open (its schema version is not newer), then moves the current gateway.sqlite (and its \
            -wal/-shm files) aside as gateway.sqlite.before-restore-TIMESTAMP and copies FILE in \
            its place. Start the node afterwards: it serves the restored twins, and newer copies \
            held by the other nodes (successor replicas) win over older restored rows.
            """)

    @Option(name: .customLong("data-dir"), help: "The node's data directory (env SWARM_GATEWAY_DATA_DIRECTORY).")
    var dataDirectory: String?

    @Option(help: "The backup file (written by `swarm-gateway backup`).")
    var from: String

    func run() async throws {
        let directory = try resolvedDataDirectory(dataDirectory)
        guard FileManager.default.fileExists(atPath: from) else { throw OperatorError(message: "restore: \(from) does not exist") }
        guard DataDirectoryLock.isFree(directory) else {
            throw OperatorError(message: "restore: \(directory) is in use by a running node; stop it first")
        }
        let lock: DataDirectoryLock
        do { lock = try DataDirectoryLock(directory: directory, holder: "swarm-gateway restore pid \(getpid())") } catch {
            throw OperatorError(message: "restore: \(error)")
        }
        // The copy must open with this build (not newer, not damaged) before anything moves.
        let check = SQLiteDeviceStore(file: from, logger: Logger(label: "swarm.restore"))
        let version: Int
        let counts: StoreCounts
        do {
            try await check.openForInspection()
            version = try await check.schemaVersion()
            counts = try await check.counts()
            await check.close()
        } catch {
            await check.close()
            throw OperatorError(message: "restore: \(from) is not a usable store: \(error)")
        }
        guard version <= latestSchemaVersion else {
            throw OperatorError(message: "restore: \(from) has schema version \(version), newer than this build's \(latestSchemaVersion)")
        }
        let database = (directory as NSString).appendingPathComponent(SQLiteDeviceStore.fileName)
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        let manager = FileManager.default
        do {
            for suffix in ["", "-wal", "-shm"] where manager.fileExists(atPath: database + suffix) {
                try manager.moveItem(atPath: database + suffix, toPath: "\(database).before-restore-\(stamp)\(suffix)")
            }
            try manager.copyItem(atPath: from, toPath: database)
        } catch {
            throw OperatorError(message: "restore: \(error.localizedDescription)")
        }
        _ = lock
        print("restored \(from) into \(database): schema version \(version), \(counts.owned + counts.replicas) device row(s); the previous files are kept as \(SQLiteDeviceStore.fileName).before-restore-\(stamp)*")
    }
}

/// `--data-dir`, else `SWARM_GATEWAY_DATA_DIRECTORY`.
func resolvedDataDirectory(_ given: String?) throws -> String {
    if let given, !given.isEmpty { return given }
    if let environment = ProcessInfo.processInfo.environment["SWARM_GATEWAY_DATA_DIRECTORY"], !environment.isEmpty { return environment }
    throw ValidationError("--data-dir is required (or SWARM_GATEWAY_DATA_DIRECTORY): the node's data directory, by default ./data/<node name>")
}
