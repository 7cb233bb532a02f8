import Foundation
import GatewayStore
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO

/// What both SQLite engines (device rows, events) do the same way: open a database file in WAL
/// mode, run schema migrations, and turn SQLite errors into ``StoreError``s.
enum SQLiteSupport {
    /// Creates the file's directory when missing, starts `threadPool` and opens the file in WAL
    /// mode with the given `synchronous` level (`FULL`, `NORMAL`) and a `swarm_schema` table.
    /// On failure the pool is shut down again.
    static func open(path: String, location: String, threadPool: NIOThreadPool, synchronous: String, logger: Logger) async throws -> SQLiteConnection {
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw StoreError.invalidConfiguration("cannot create the data directory \(directory): \(error.localizedDescription)")
        }
        threadPool.start()
        let opened: SQLiteConnection
        do {
            opened = try await SQLiteConnection.open(
                storage: .file(path: path), threadPool: threadPool, logger: logger, on: MultiThreadedEventLoopGroup.singleton.any())
        } catch {
            try? await threadPool.shutdownGracefully()
            throw unavailable(error, location: location)
        }
        do {
            let mode = try await opened.query("PRAGMA journal_mode=WAL").first?.columns.first?.data.string
            guard mode?.lowercased() == "wal" else {
                throw StoreError.invalidConfiguration("\(path): SQLite refused WAL mode (journal_mode=\(mode ?? "?"))")
            }
            _ = try await opened.query("PRAGMA synchronous=\(synchronous)")
            _ = try await opened.query(
                "CREATE TABLE IF NOT EXISTS swarm_schema (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL, build TEXT NOT NULL)")
        } catch {
            try? await opened.close()
            try? await threadPool.shutdownGracefully()
            throw unavailable(error, location: location)
        }
        return opened
    }

    /// The highest version recorded in `swarm_schema` (0: none).
    static func schemaVersion(_ connection: SQLiteConnection) async throws -> Int {
        let rows = try await connection.query("SELECT COALESCE(MAX(version), 0) FROM swarm_schema")
        return Int(rows.first?.columns.first?.data.integer ?? 0)
    }

    /// Runs `step` in one transaction with the row recording it (`build` in its `build` column).
    static func migrate(_ connection: SQLiteConnection, _ step: SchemaMigration, build: String, location: String, logger: Logger) async throws {
        _ = try await connection.query("BEGIN IMMEDIATE")
        do {
            for statement in step.statements { _ = try await connection.query(statement) }
            _ = try await connection.query(
                "INSERT INTO swarm_schema (version, applied_at, build) VALUES (?, ?, ?)",
                [.integer(SQLiteInt64(step.version)), .integer(SQLiteInt64(SQLiteDeviceStore.nowMillis())), .text(build)])
            _ = try await connection.query("COMMIT")
        } catch {
            _ = try? await connection.query("ROLLBACK")
            throw error
        }
        logger.notice("\(location): schema migrated to version \(step.version) (\(step.summary))")
    }

    /// `error` as the store's error (disk full and I/O errors named as such).
    static func unavailable(_ error: any Error, location: String) -> StoreError {
        if let error = error as? StoreError { return error }
        if let error = error as? SQLiteError {
            switch error.reason {
            case .full: return .unavailable(store: location, reason: "disk full (\(error.message))")
            case .ioError: return .unavailable(store: location, reason: "I/O error (\(error.message))")
            default: return .unavailable(store: location, reason: error.description)
            }
        }
        return .unavailable(store: location, reason: "\(error)")
    }
}
