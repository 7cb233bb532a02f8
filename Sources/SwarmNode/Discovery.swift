import Foundation
import Logging
import NIOPosix
import SwarmCore

#if canImport(Glibc)
import Glibc
#endif

extension SwarmNode {
    /// Resolves the ``SwarmNodeSettings/discovery`` names every
    /// ``SwarmNodeSettings/discoveryInterval`` and hands the tracker the configured seeds plus
    /// every address found (`onSeeds`). Lookups run on NIO's blocking thread pool, never on the
    /// node or the cooperative pool; a name that does not resolve is logged and skipped (the
    /// last good answer for it is kept).
    func discoverPeers() async {
        var lastGood: [String: [String]] = [:]
        var lastSeeds: [String]?
        while !Task.isCancelled, lifecycle == .running || lifecycle == .draining || lifecycle == .starting {
            for name in settings.discovery {
                do {
                    let found = try await Self.resolve(name)
                    if found != lastGood[name] {
                        logger.info("discovery: \(name) → \(found.joined(separator: ", "))")
                    }
                    lastGood[name] = found
                } catch {
                    logger.warning("discovery: \(name) did not resolve (\(error)); keeping \(lastGood[name]?.count ?? 0) address(es)")
                }
            }
            var seeds = settings.seeds
            for name in settings.discovery { seeds.append(contentsOf: lastGood[name] ?? []) }
            var seen = Set<String>()
            seeds = seeds.filter { seen.insert($0).inserted }
            if seeds != lastSeeds {
                lastSeeds = seeds
                let update = seeds
                apply { tracker, now in tracker.onSeeds(update, now: now) }
            }
            try? await Task.sleep(for: settings.discoveryInterval)
        }
    }

    /// Errors of a discovery lookup.
    struct DiscoveryError: Error, CustomStringConvertible {
        var description: String
    }

    /// `host:port` → every address (`ip:port`, IPv6 as `[ip]:port`) the host resolves to, sorted.
    static func resolve(_ name: String) async throws -> [String] {
        guard let (host, port) = splitAddress(name) else { throw DiscoveryError(description: "'\(name)' is not host:port") }
        return try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_family = AF_UNSPEC
            var result: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &result)
            guard status == 0, let first = result else {
                throw DiscoveryError(description: String(cString: gai_strerror(status)))
            }
            defer { freeaddrinfo(first) }
            var addresses = Set<String>()
            var cursor: UnsafeMutablePointer<addrinfo>? = first
            while let info = cursor {
                var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                    let ip = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    addresses.insert(info.pointee.ai_family == AF_INET6 ? "[\(ip)]:\(port)" : "\(ip):\(port)")
                }
                cursor = info.pointee.ai_next
            }
            return addresses.sorted()
        }
    }
}
