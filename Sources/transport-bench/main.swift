// One-way throughput between two ClusterTransports in one process over 127.0.0.1:
// `swift run -c release transport-bench [frames] [payloadBytes] [--tls]`.
// `--tls`: mutual TLS between the two (SwarmTLS), with a throwaway CA the openssl CLI makes.
import NIOCore
import NIOPosix
import SwarmCore
import SwarmTLS
import SwarmTransport
import Synchronization
import TestCertificates

/// Frames received so far, bumped once per delivered batch.
final class Counter: Sendable {
    let frames = Atomic<Int>(0)
}

let useTLS = CommandLine.arguments.contains("--tls")
let arguments = CommandLine.arguments.filter { $0 != "--tls" }
let total = arguments.count > 1 ? Int(arguments[1]) ?? 5_000_000 : 5_000_000
let payloadBytes = arguments.count > 2 ? Int(arguments[2]) ?? 16 : 16

let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
let secret = ClusterSecret("benchmark-cluster-secret-0123456789")
let counter = Counter()
let authority = useTLS ? try TestCertificateAuthority(name: "transport-bench-ca") : nil
defer { authority?.remove() }
func settings(_ node: String) throws -> TransportSettings {
    var settings = TransportSettings(secret: secret)
    settings.security = try authority?.security(for: node)
    return settings
}
let sender = ClusterTransport(node: NodeID(name: "bench-a", incarnation: 1), settings: try settings("bench-a"), eventLoopGroup: group) { _ in }
let receiver = ClusterTransport(node: NodeID(name: "bench-b", incarnation: 1), settings: try settings("bench-b"), eventLoopGroup: group) { event in
    if case .frames(let frames, _) = event { counter.frames.add(frames.count, ordering: .relaxed) }
}
try await sender.start()
try await receiver.start()
sender.connect(host: "127.0.0.1", port: receiver.boundPort!)
var connection: PeerConnection?
while connection == nil {
    try await Task.sleep(for: .milliseconds(10))
    connection = sender.connection(to: "bench-b")
}
let clock = ContinuousClock()
let start = clock.now
var overflows = 0
let payload = ByteBuffer(repeating: 7, count: payloadBytes)
for _ in 0..<total {
    while connection!.send(type: 1, payload: payload) == .overflow {
        overflows += 1
        try await Task.sleep(for: .microseconds(50))
    }
}
while counter.frames.load(ordering: .relaxed) < total { try await Task.sleep(for: .milliseconds(1)) }
let elapsed = clock.now - start
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let rate = Double(total) / seconds
print("\(useTLS ? "mutual TLS" : "plain TCP"): frames: \(total), payload: \(payloadBytes) B, time: \(elapsed), rate: \(Int(rate)) frames/s, overflow retries: \(overflows)")
await sender.shutdown()
await receiver.shutdown()
try await group.shutdownGracefully()
