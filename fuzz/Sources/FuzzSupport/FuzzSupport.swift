#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if SWARM_LIBFUZZER
import CLibFuzzer
#endif

/// The `main` of every harness. Built with SWARM_LIBFUZZER (scripts/fuzz.sh), it hands the
/// command line to libFuzzer's driver; otherwise it replays the files named on the command line
/// (see ``replayInputs(_:)``).
///
/// Why not libFuzzer's own `main` and an `@_cdecl("LLVMFuzzerTestOneInput")` entry: SwiftPM links
/// every executable target with `main` aliased to the module's entry point, which a module
/// without one (`-parse-as-library`) does not have; calling `LLVMFuzzerRunDriver` from a normal
/// `@main` works with plain SwiftPM flags and keeps the harnesses ordinary executables.
public func fuzzMain(_ body: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    #if SWARM_LIBFUZZER
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, body))
    #else
    replayInputs { data, size in _ = body(data, size) }
    exit(0)
    #endif
}

/// A cursor over the fuzzer's input: harnesses carve the bytes into the values they feed the code
/// under test. Every read past the end yields zeros / empty slices, so any input is usable.
public struct FuzzInput {
    public let bytes: [UInt8]
    public private(set) var index = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        self.bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    }

    /// Bytes not consumed yet.
    public var remaining: Int { bytes.count - index }

    public mutating func byte() -> UInt8 {
        guard index < bytes.count else { return 0 }
        defer { index += 1 }
        return bytes[index]
    }

    public mutating func uint16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }

    /// Up to `count` bytes.
    public mutating func take(_ count: Int) -> ArraySlice<UInt8> {
        let end = min(bytes.count, index + max(0, count))
        defer { index = end }
        return bytes[index..<end]
    }

    /// Everything not consumed yet.
    public mutating func rest() -> ArraySlice<UInt8> { take(remaining) }
}

/// An invariant of the code under test. A violation is a bug: it traps, and libFuzzer saves the
/// input as a crash artifact.
public func fuzzCheck(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    if !condition {
        fatalError("fuzz invariant violated: \(message())", file: file, line: line)
    }
}

/// The `main` of a harness built without libFuzzer: runs `body` once per file named on the command
/// line (directories: every file in them), so a crash input or a corpus can be replayed under a
/// debugger with a plain `swift build` of this package.
public func replayInputs(_ body: (UnsafePointer<UInt8>?, Int) -> Void) {
    var files: [String] = []
    for argument in CommandLine.arguments.dropFirst() {
        if let directory = opendir(argument) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name != "." && name != ".." { files.append(argument + "/" + name) }
            }
            closedir(directory)
        } else {
            files.append(argument)
        }
    }
    for file in files.sorted() {
        guard let bytes = readFile(file) else {
            print("replay: cannot read \(file)")
            continue
        }
        bytes.withUnsafeBufferPointer { body($0.baseAddress, $0.count) }
    }
    print("replay: \(files.count) input(s), no crash")
}

private func readFile(_ path: String) -> [UInt8]? {
    guard let handle = fopen(path, "rb") else { return nil }
    defer { fclose(handle) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = fread(&chunk, 1, chunk.count, handle)
        if count <= 0 { break }
        bytes.append(contentsOf: chunk[0..<count])
    }
    return bytes
}
