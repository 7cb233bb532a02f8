import Crypto
import _CryptoExtras
import FoundationEssentials

/// Mosquitto 2's password hashes, made in Swift (no `mosquitto_passwd` process per login):
/// PBKDF2-HMAC-SHA512 with a 12-byte random salt and 101 iterations, the defaults of
/// `mosquitto_passwd` and of the dynamic security plugin.
///
/// - password file line: `user:$7$101$<salt, base64>$<hash, base64>` (``fileEntry(user:password:)``);
/// - dynamic security JSON: `"password": <hash, base64>, "salt": <salt, base64>, "iterations": 101`
///   (``dynamicSecurityFields(password:)``).
public enum MosquittoPassword {
    /// PBKDF2 iterations (Mosquitto's default).
    public static let iterations = 101
    /// Salt length in bytes (Mosquitto's).
    public static let saltLength = 12

    /// The `$7$…` hash of `password` (with a fresh random salt unless one is given).
    public static func hash(_ password: String, salt: [UInt8]? = nil, iterations: Int = iterations) -> String {
        let salt = salt ?? randomSalt()
        let derived = pbkdf2SHA512(password: Array(password.utf8), salt: salt, iterations: iterations)
        return "$7$\(iterations)$\(Data(salt).base64EncodedString())$\(Data(derived).base64EncodedString())"
    }

    /// One password file line, `user:$7$…`.
    public static func fileEntry(user: String, password: String) -> String {
        "\(user):\(hash(password))"
    }

    /// The password fields of a dynamic security plugin client: base64 hash, base64 salt and the
    /// iteration count.
    public static func dynamicSecurityFields(password: String) -> (hash: String, salt: String, iterations: Int) {
        let salt = randomSalt()
        let derived = pbkdf2SHA512(password: Array(password.utf8), salt: salt, iterations: iterations)
        return (Data(derived).base64EncodedString(), Data(salt).base64EncodedString(), iterations)
    }

    /// True when `password` matches a `$7$…` hash (as Mosquitto checks it).
    public static func verify(_ password: String, against encoded: String) -> Bool {
        let parts = encoded.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[1] == "7", let rounds = Int(parts[2]), rounds > 0,
            let salt = Data(base64Encoded: String(parts[3])), let expected = Data(base64Encoded: String(parts[4]))
        else { return false }
        return pbkdf2SHA512(password: Array(password.utf8), salt: Array(salt), iterations: rounds) == Array(expected)
    }

    static func randomSalt() -> [UInt8] {
        (0..<saltLength).map { _ in UInt8.random(in: 0...255) }
    }

    /// PBKDF2 (RFC 8018) with HMAC-SHA512 and one 64-byte block, by BoringSSL
    /// (`_CryptoExtras`): a provisioning burst hashes one password per device, and the loop of
    /// ``pbkdf2SHA512Reference(password:salt:iterations:)`` in Swift costs several times more.
    static func pbkdf2SHA512(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        guard
            let key = try? KDF.Insecure.PBKDF2.deriveKey(
                from: password, salt: salt, using: .sha512, outputByteCount: 64, unsafeUncheckedRounds: max(1, iterations))
        else { return pbkdf2SHA512Reference(password: password, salt: salt, iterations: iterations) }
        return key.withUnsafeBytes { Array($0) }
    }

    /// The same in Swift over HMAC: T = U1 ⊕ … ⊕ Uc, U1 = HMAC(P, S ‖ INT(1)),
    /// Ui = HMAC(P, Ui−1). The tests check both agree.
    static func pbkdf2SHA512Reference(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let keyed = HMAC<SHA512>(key: SymmetricKey(data: password))
        var first = keyed
        first.update(data: salt + [0, 0, 0, 1])
        var block = Array(first.finalize())
        var result = block
        for _ in 1..<max(1, iterations) {
            var next = keyed
            next.update(data: block)
            block = Array(next.finalize())
            for index in result.indices { result[index] ^= block[index] }
        }
        return result
    }
}
