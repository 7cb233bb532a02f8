/// Revisions of stored device state: a hybrid logical clock in microseconds since the Unix epoch.
///
/// Every change of a device's state gets `next(after: previous, now: wall clock)` = the larger of
/// `previous + 1` and the wall clock. So along one device's history (carried from node to node by
/// handoffs and checkpoints) revisions strictly increase whatever the clocks do, and a history
/// that starts later in wall-clock time (a device re-created after a deletion) starts above an
/// older one. Of two copies of one device, the one with the higher revision is the newer; stores
/// replace a row only with a write of a revision at least as high, so a slow node cannot
/// overwrite a newer row written by the node that hosts the device now.
public enum Revision {
    /// The revision of a change made after `previous` at wall-clock time `nowMicros`.
    public static func next(after previous: Int64, nowMicros: Int64) -> Int64 {
        previous == .max ? .max : max(previous + 1, nowMicros)
    }

    /// Microseconds since the Unix epoch from milliseconds.
    public static func micros(fromMillis millis: Int64) -> Int64 {
        let (value, overflow) = millis.multipliedReportingOverflow(by: 1000)
        return overflow ? .max : value
    }
}
