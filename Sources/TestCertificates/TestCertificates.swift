import Foundation
import SwarmTLS
import SwarmTransport

/// A throwaway certificate authority for tests and benchmarks: a CA and node certificates made by
/// the `openssl` command-line tool (Debian package `openssl`) in a fresh temporary directory.
///
/// Keys are P-256; node certificates allow both TLS server and client use (a node accepts and
/// dials) and name `127.0.0.1` as an IP address. Call ``remove()`` when done.
public final class TestCertificateAuthority: Sendable {
    /// A node's certificate and key files.
    public struct Issued: Sendable, Hashable {
        /// The PEM certificate.
        public let certificate: String
        /// The PEM private key (unencrypted).
        public let privateKey: String
    }

    /// Errors of running `openssl`.
    public struct OpenSSLFailed: Error, CustomStringConvertible {
        public let description: String
    }

    /// The temporary directory holding every file.
    public let directory: String
    /// The CA certificate (the trust bundle nodes are given).
    public let certificate: String
    private let key: String

    /// Creates the directory and a self-signed CA called `name`, valid for two days.
    public init(name: String = "test-cluster-ca") throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("swarm-tls-\(name)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.certificate = "\(directory)/ca.pem"
        self.key = "\(directory)/ca.key"
        try Self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", self.key, "-out", self.certificate, "-days", "2", "-subj", "/CN=\(name)",
        ])
    }

    /// Issues a certificate for `node`, signed by this CA and valid for `days` days from now;
    /// `days: 0` makes one that expires within the second.
    public func issue(_ node: String, days: Int = 2) throws -> Issued {
        let base = "\(self.directory)/\(node)"
        let extensions = "\(base).ext"
        try Data(
            """
            basicConstraints = critical, CA:FALSE
            keyUsage = critical, digitalSignature
            extendedKeyUsage = serverAuth, clientAuth
            subjectAltName = IP:127.0.0.1, DNS:localhost

            """.utf8
        ).write(to: URL(fileURLWithPath: extensions))
        try Self.openssl([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "\(base).key", "-out", "\(base).csr", "-subj", "/CN=\(node)",
        ])
        try Self.openssl([
            "x509", "-req", "-in", "\(base).csr", "-CA", self.certificate, "-CAkey", self.key,
            "-CAcreateserial", "-out", "\(base).pem", "-days", "\(days)", "-extfile", extensions,
        ])
        return Issued(certificate: "\(base).pem", privateKey: "\(base).key")
    }

    /// Deletes the directory and everything in it.
    public func remove() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    private static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw OpenSSLFailed(
                description: "openssl \(arguments.first ?? "") exited \(process.terminationStatus): "
                    + String(decoding: output, as: UTF8.self))
        }
    }
}

extension TestCertificateAuthority {
    /// The files of `issued` with `trustRoots` (default: this CA) as the CA bundle.
    public func files(_ issued: Issued, trusting trustRoots: String? = nil) -> ClusterTLSFiles {
        ClusterTLSFiles(
            certificateChain: issued.certificate, privateKey: issued.privateKey, trustRoots: trustRoots ?? self.certificate)
    }

    /// Issues a certificate for `node` and returns the mutual-TLS layer presenting it and
    /// trusting `trustRoots` (default: this CA).
    public func security(for node: String, trusting trustRoots: String? = nil) throws -> ChannelSecurity {
        try ClusterTLS.security(files: self.files(try self.issue(node), trusting: trustRoots))
    }
}
