#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FuzzSupport
import GatewayConfig

/// Input: `file contents 0x00 environment 0x00 flags`. The environment and the flags are lines
/// `NAME=value`. The file is written to a scratch file and `GatewayConfiguration.load` reads it
/// with that environment and those flags (`overrides`), as `swarm-gateway` does at start-up.
/// `SWARM_GATEWAY_CONFIG` is dropped from the environment: the file is always given, and a fuzzed
/// path could name a device such as /dev/zero (operator input, not a parser bug).
///
/// Invariants: the loader returns a configuration or a `GatewayConfigError` (typed throws), it
/// never traps or hangs; a loaded configuration's description never shows the cluster secret, the
/// API token or a broker password (compared against the description of the same configuration
/// with the secrets removed, so a secret that happens to equal other text is not a false alarm).
func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) {
    let input = FuzzInput(data, size)
    let parts = input.bytes.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
    let file = parts.first.map(Array.init) ?? []
    let environment = pairs(parts.count > 1 ? parts[1] : [])
        .filter { $0.key != GatewayConfiguration.configFileVariable }
    let overrides = pairs(parts.count > 2 ? parts[2] : [])

    let path = scratchPath
    guard let handle = fopen(path, "wb") else { fatalError("cannot write \(path)") }
    _ = file.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, handle) }
    fclose(handle)

    let configuration: GatewayConfiguration
    do {
        configuration = try GatewayConfiguration.load(file: path, environment: environment, overrides: overrides)
    } catch {
        _ = error.description
        return
    }
    let shown = configuration.description
    var bare = configuration
    bare.clusterSecret = nil
    bare.apiToken = nil
    bare.brokers = bare.brokers.map { var broker = $0; broker.password = nil; return broker }
    let bareShown = bare.description
    let secrets = [configuration.clusterSecret?.value, configuration.apiToken?.value] + configuration.brokers.map { $0.password?.value }
    for case let secret? in secrets where secret.count >= 4 {
        fuzzCheck(!shown.contains(secret) || bareShown.contains(secret), "a secret appears in the configuration's description")
    }
}

/// `NAME=value` lines (the first `=` splits; a later line for the same name wins).
func pairs(_ bytes: ArraySlice<UInt8>) -> [String: String] {
    var result: [String: String] = [:]
    for line in bytes.split(separator: 0x0A) {
        let text = String(decoding: line, as: UTF8.self)
        guard let equals = text.firstIndex(of: "=") else { continue }
        result[String(text[..<equals])] = String(text[text.index(after: equals)...])
    }
    return result
}

/// The scratch file: in `$SWARM_FUZZ_SCRATCH` (scripts/fuzz.sh points it at the target's
/// fuzz-artifacts directory), else /tmp.
let scratchPath = (getenv("SWARM_FUZZ_SCRATCH").map { String(cString: $0) } ?? "/tmp") + "/swarm-fuzz-config-\(getpid()).json"

@main
enum Main {
    static func main() {
        fuzzMain { data, size in
            fuzzConfig(data, size)
            return 0
        }
    }
}

#if SWARM_LIBFUZZER
/// libFuzzer's conventional entry point. `main` above drives the fuzzing; a debug link pulls in
/// libFuzzer's own `main` as well, which refers to this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzConfig(data, size)
    return 0
}
#endif
