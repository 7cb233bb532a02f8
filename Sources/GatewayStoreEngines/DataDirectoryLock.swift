import Foundation
import GatewayStore

#if canImport(Glibc)
import Glibc
#endif

/// An exclusive lock on a node's data directory (`flock` on `LOCK` inside it), held for the life
/// of the node: a second node started on the same directory, or a restore into a directory a node
/// is using, is refused instead of corrupting the twins of both. The kernel drops the lock when
/// the process exits, however it exits (`kill -9` included), so a stale lock never blocks a
/// restart.
public final class DataDirectoryLock: Sendable {
    /// The directory.
    public let directory: String
    private let descriptor: Int32

    /// Takes the lock (creating the directory), writing `holder` (node name, pid) into the file;
    /// throws ``StoreError/locked(path:holder:)`` naming the current holder when it is taken.
    public init(directory: String, holder: String) throws {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw StoreError.invalidConfiguration("cannot create the data directory \(directory): \(error.localizedDescription)")
        }
        let path = (directory as NSString).appendingPathComponent("LOCK")
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw StoreError.invalidConfiguration("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let current = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            Glibc.close(fd)
            throw StoreError.locked(path: directory, holder: current.isEmpty ? "unknown" : current)
        }
        let text = Array("\(holder)\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        self.descriptor = fd
    }

    /// True when no process holds the lock of `directory` now (a restore checks this).
    public static func isFree(_ directory: String) -> Bool {
        let path = (directory as NSString).appendingPathComponent("LOCK")
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return true }
        defer { Glibc.close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        flock(fd, LOCK_UN)
        return true
    }

    /// Releases the lock.
    deinit {
        flock(descriptor, LOCK_UN)
        Glibc.close(descriptor)
    }
}
