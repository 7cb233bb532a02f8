import NIOCore
import Testing

@testable import SwarmTransport

@Suite("Reconnect backoff")
struct BackoffTests {
    @Test("delays grow exponentially, stay within [d/2, d] and never exceed the cap")
    func bounds() {
        var settings = BackoffSettings()
        settings.initial = .milliseconds(100)
        settings.maximum = .seconds(2)
        for attempt in 0..<40 {
            var bound = 100_000_000.0 * Double(1 << min(attempt, 20))
            bound = min(bound, 2_000_000_000)
            for _ in 0..<20 {
                let delay = Double(settings.delay(attempt: attempt).nanoseconds)
                #expect(delay >= bound / 2 - 1 && delay <= bound + 1, "attempt \(attempt): \(delay)")
            }
        }
    }

    @Test("delays are jittered")
    func jitter() {
        let settings = BackoffSettings()
        let delays = Set((0..<50).map { _ in settings.delay(attempt: 3).nanoseconds })
        #expect(delays.count > 1)
    }
}
