import SwarmJSON

/// The time of the last change at every leaf of a JSON state (the twin's `lastUpdated`): a tree
/// of the state's shape whose leaves are milliseconds since the Unix epoch (`.int`). Pure.
///
/// A merge patch (RFC 7386) changes a state; ``stamp(_:patch:before:after:at:)`` updates the
/// times: a member the patch removes (`null`) loses its time; a leaf whose value changed gets
/// `at`; an object the patch reaches into is walked member by member; a leaf that became an
/// object (or an object that became a leaf) is stamped as a whole. Members the patch does not
/// name keep their times, and a patched leaf whose value did not change keeps its time.
enum LeafTimes {
    /// The new times after `patch` turned `before` into `after` at `at` (milliseconds).
    static func stamp(_ times: JSONValue, patch: JSONValue, before: JSONValue, after: JSONValue, at: Int64) -> JSONValue {
        guard case .object(let members) = patch else {
            // A non-object patch replaces the whole state.
            return before == after ? times : stampAll(after, at: at)
        }
        var result = times.objectValue ?? [:]
        let old = before.objectValue ?? [:]
        let new = after.objectValue ?? [:]
        for (key, value) in members {
            guard let now = new[key] else {
                result[key] = nil  // removed (null in the patch)
                continue
            }
            let was = old[key]
            if case .object = value, case .object = now {
                if case .object = was {
                    result[key] = stamp(result[key] ?? .emptyObject, patch: value, before: was!, after: now, at: at)
                } else {
                    result[key] = stampAll(now, at: at)
                }
            } else if was != now {
                result[key] = stampAll(now, at: at)
            }
        }
        return .object(result)
    }

    /// Every leaf of `value` stamped `at`: objects keep their shape (an empty object stays empty).
    static func stampAll(_ value: JSONValue, at: Int64) -> JSONValue {
        if case .object(let members) = value {
            return .object(members.mapValues { stampAll($0, at: at) })
        }
        return .int(at)
    }

    /// The times as RFC 3339 UTC strings (what the twin shows).
    static func rendered(_ times: JSONValue) -> JSONValue {
        switch times {
        case .object(let members): return .object(members.mapValues(rendered))
        case .int(let millis): return .string(Timestamp.iso(millis))
        default: return times
        }
    }
}
