import Foundation
import NIOCore
import NIOSSL
import NIOTLS
import SwarmTransport

/// The three PEM files of a node's cluster TLS identity.
public struct ClusterTLSFiles: Sendable, Hashable {
    /// The node's certificate, optionally followed by intermediate CA certificates (PEM).
    public var certificateChain: String
    /// The node's private key (PEM, unencrypted).
    public var privateKey: String
    /// The cluster CA certificate(s) (PEM bundle): a peer's certificate must chain to one of them.
    public var trustRoots: String

    /// The files at the given paths.
    public init(certificateChain: String, privateKey: String, trustRoots: String) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.trustRoots = trustRoots
    }
}

/// Errors of ``ClusterTLS``: start-up errors name the file (never its contents); handshake
/// errors say why a peer was refused.
public enum ClusterTLSError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A file could not be read (missing, permissions, a directory…).
    case unreadableFile(what: String, path: String, reason: String)
    /// A file was read but does not hold what it should (no PEM certificate, no PEM key…).
    case invalidFile(what: String, path: String, reason: String)
    /// A certificate of the node's chain or of the CA bundle is expired or not valid yet.
    case certificateNotValidNow(what: String, path: String, reason: String)
    /// BoringSSL refused the combination (for example a key that does not match the certificate).
    case invalidConfiguration(String)
    /// The TLS negotiation with a peer failed; the text says why.
    case handshakeFailed(String)
    /// TLS failed on an established connection (for example the peer vanished without closing
    /// TLS).
    case connectionFailed(String)

    public var description: String {
        switch self {
        case .unreadableFile(let what, let path, let reason): return "cannot read the TLS \(what) \(path): \(reason)"
        case .invalidFile(let what, let path, let reason): return "invalid TLS \(what) \(path): \(reason)"
        case .certificateNotValidNow(let what, let path, let reason): return "TLS \(what) \(path): \(reason)"
        case .invalidConfiguration(let reason): return "invalid TLS configuration: \(reason)"
        case .handshakeFailed(let reason): return "TLS handshake failed: \(reason)"
        case .connectionFailed(let reason): return "TLS error: \(reason)"
        }
    }
}

/// Mutual TLS between cluster nodes: a ``ChannelSecurity`` for ``TransportSettings/security``.
///
/// Every node presents its certificate chain and verifies the peer's against the cluster CA
/// bundle, on accepted and dialed connections alike (the acceptor requires a client
/// certificate). TLS 1.2 at least; two nodes of this build negotiate TLS 1.3.
///
/// **No hostname check**: the trust anchor is the cluster CA, which must be dedicated to the
/// cluster (every certificate it signs is a cluster member's). Nodes are addressed by IP and
/// port, found through seeds or DNS discovery, and move between addresses (pods), so names in
/// certificates would add configuration without adding a check the CA does not already make. A
/// node's identity inside the cluster remains the name proven by the HMAC handshake on the
/// cluster secret, which still runs inside TLS.
public enum ClusterTLS {
    /// Reads and checks the files now (fail fast: unreadable, not PEM, expired or not yet valid,
    /// key not matching the certificate) and returns the layer every connection will use.
    ///
    /// - Parameter now: the time certificates must be valid at (tests).
    public static func security(files: ClusterTLSFiles, now: Date = Date()) throws -> ChannelSecurity {
        let chain = try self.certificates(at: files.certificateChain, what: "certificate chain", now: now)
        let roots = try self.certificates(at: files.trustRoots, what: "CA bundle", now: now)
        let key = try self.privateKey(at: files.privateKey)

        var server = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key),
            trustRoots: .certificates(roots)
        )
        server.minimumTLSVersion = .tlsv12
        server.certificateVerification = .noHostnameVerification
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = chain.map { .certificate($0) }
        client.privateKey = .privateKey(key)
        client.trustRoots = .certificates(roots)
        client.minimumTLSVersion = .tlsv12
        client.certificateVerification = .noHostnameVerification
        // Closing waits this long at most for the peer's close_notify (NIOSSL's default is 5 s):
        // a node shutting down must not hang on a peer that is partitioned away.
        server.shutdownTimeout = Self.shutdownTimeout
        client.shutdownTimeout = Self.shutdownTimeout

        let serverContext: NIOSSLContext
        let clientContext: NIOSSLContext
        do {
            serverContext = try NIOSSLContext(configuration: server)
            clientContext = try NIOSSLContext(configuration: client)
        } catch {
            throw ClusterTLSError.invalidConfiguration(
                "\(Self.reason(of: error)) (does the key \(files.privateKey) belong to the certificate \(files.certificateChain)?)"
            )
        }
        return ChannelSecurity(description: "mutual TLS, CA \(files.trustRoots)") { channel, role in
            let tls: any ChannelHandler
            switch role {
            case .acceptor: tls = NIOSSLServerHandler(context: serverContext)
            case .dialer: tls = try NIOSSLClientHandler(context: clientContext, serverHostname: nil)
            }
            try channel.pipeline.syncOperations.addHandlers([tls, TLSErrorTranslator()])
        }
    }

    static let shutdownTimeout: TimeAmount = .seconds(1)

    // MARK: Files

    private static func read(_ path: String, what: String) throws -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ClusterTLSError.unreadableFile(what: what, path: path, reason: "no such file")
        }
        guard !isDirectory.boolValue else {
            throw ClusterTLSError.unreadableFile(what: what, path: path, reason: "is a directory")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterTLSError.unreadableFile(what: what, path: path, reason: "permission denied or read error")
        }
        return Array(data)
    }

    private static func certificates(at path: String, what: String, now: Date) throws -> [NIOSSLCertificate] {
        let bytes = try self.read(path, what: what)
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(bytes)
        } catch {
            throw ClusterTLSError.invalidFile(what: what, path: path, reason: "not a PEM certificate file")
        }
        guard !certificates.isEmpty else {
            throw ClusterTLSError.invalidFile(what: what, path: path, reason: "no PEM certificate in it")
        }
        let seconds = Int(now.timeIntervalSince1970)
        for (index, certificate) in certificates.enumerated() {
            let which = certificates.count == 1 ? "certificate" : "certificate #\(index + 1)"
            if Int(certificate.notValidAfter) < seconds {
                throw ClusterTLSError.certificateNotValidNow(
                    what: what, path: path, reason: "\(which) expired on \(Self.format(certificate.notValidAfter))")
            }
            if Int(certificate.notValidBefore) > seconds {
                throw ClusterTLSError.certificateNotValidNow(
                    what: what, path: path, reason: "\(which) is not valid before \(Self.format(certificate.notValidBefore))")
            }
        }
        return certificates
    }

    private static func privateKey(at path: String) throws -> NIOSSLPrivateKey {
        let bytes = try self.read(path, what: "private key")
        do {
            return try NIOSSLPrivateKey(bytes: bytes, format: .pem)
        } catch {
            // The key's bytes are never part of an error.
            throw ClusterTLSError.invalidFile(
                what: "private key", path: path, reason: "not an unencrypted PEM private key")
        }
    }

    private static func format(_ time: time_t) -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(time)))
    }

    // MARK: Errors

    /// A short reason for a NIOSSL error: the BoringSSL reason codes, without file names and
    /// line numbers.
    static func reason(of error: any Error) -> String {
        if let error = error as? BoringSSLError { return Self.reason(of: error) }
        guard let error = error as? NIOSSLError else { return "\(error)" }
        switch error {
        case .handshakeFailed(let inner): return Self.reason(of: inner)
        case .uncleanShutdown: return "the peer closed the TCP connection without closing TLS"
        default: return "\(error)"
        }
    }

    /// `CERTIFICATE_VERIFY_FAILED` out of
    /// `Error: 268435581 error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED at file.cc:123`.
    private static func code(in text: String) -> String {
        guard let marker = text.range(of: "OPENSSL_internal:") else { return text }
        let rest = text[marker.upperBound...]
        let end = rest.range(of: " at ")?.lowerBound ?? rest.endIndex
        return String(rest[..<end])
    }

    private static func reason(of error: BoringSSLError) -> String {
        let codes: [String]
        switch error {
        case .sslError(let stack), .unknownError(let stack):
            codes = stack.map { Self.code(in: "\($0)") }
        default:
            return "\(error)"
        }
        let text = codes.joined(separator: ", ")
        func has(_ code: String) -> Bool { codes.contains { $0.contains(code) } }
        if has("WRONG_VERSION_NUMBER") || has("UNKNOWN_PROTOCOL") || has("HTTP_REQUEST")
            || has("RECORD_TOO_LARGE") || has("UNEXPECTED_RECORD") || has("PARSE_TLSEXT") || has("DECODE_ERROR")
        {
            return "the peer does not speak TLS: a plaintext node or not a cluster node (\(text))"
        }
        if has("CERTIFICATE_VERIFY_FAILED") {
            return "the peer's certificate is not signed by the cluster CA, or is expired (\(text))"
        }
        if has("PEER_DID_NOT_RETURN_A_CERTIFICATE") || has("CERTIFICATE_REQUIRED") {
            return "the peer presented no certificate (\(text))"
        }
        if has("ALERT_UNKNOWN_CA") || has("ALERT_BAD_CERTIFICATE") || has("ALERT_CERTIFICATE") {
            return "the peer refused this node's certificate: not signed by its cluster CA, or expired (\(text))"
        }
        return text
    }
}

/// Sits right behind the NIOSSL handler: turns its errors into ``ClusterTLSError`` with a short
/// reason, so that the transport's refusal line says why, in one line.
final class TLSErrorTranslator: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var negotiated = false

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent { self.negotiated = true }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is NIOSSLError || error is BoringSSLError else {
            context.fireErrorCaught(error)
            return
        }
        let reason = ClusterTLS.reason(of: error)
        context.fireErrorCaught(self.negotiated ? ClusterTLSError.connectionFailed(reason) : .handshakeFailed(reason))
    }
}
