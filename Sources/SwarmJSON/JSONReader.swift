/// A strict RFC 8259 JSON reader over UTF-8 bytes, in two modes sharing one lexer:
///
/// - ``parse(_:)`` builds a ``JSONValue`` (what ``JSONValue/parse(_:limit:)`` uses);
/// - ``scan(_:)`` only checks the text and reports the top-level kind, allocating nothing: the
///   ingress path validates telemetry and reported payloads with it, and the device process
///   parses them once on the node that applies them.
///
/// Both modes accept exactly the same texts (the ingress validation must never accept what the
/// device process then fails to parse): one value with optional whitespace (space, tab, CR, LF)
/// around it; strings of valid UTF-8 without raw control characters, escapes as in the RFC with
/// surrogate pairs paired; numbers in the RFC grammar whose value is finite; at most
/// ``maxDepth`` nested arrays/objects. An integer literal (no fraction, no exponent) that fits
/// `Int64` becomes `.int`, every other number `.double`. A repeated object key keeps its last
/// value.
package struct JSONReader {
    /// The kind of a top-level value (what ``scan(_:)`` reports).
    package enum Kind: Equatable {
        case null, bool, number, string, array, object
    }

    package struct Failure: Error, CustomStringConvertible {
        package var description: String
    }

    package static let maxDepth = 512

    /// Parses `bytes` as one JSON value.
    package static func parse(_ bytes: [UInt8]) throws(Failure) -> JSONValue {
        try bytes.withUnsafeBufferPointer { (buffer) throws(Failure) -> JSONValue in
            var reader = JSONReader(buffer)
            let value = try reader.value(depth: 0)
            try reader.end()
            return value
        }
    }

    /// Checks that `bytes` is one JSON value (the same texts ``parse(_:)`` accepts) and returns
    /// the kind of the top-level value, building nothing.
    package static func scan(_ bytes: [UInt8]) throws(Failure) -> Kind {
        try bytes.withUnsafeBufferPointer { (buffer) throws(Failure) -> Kind in
            var reader = JSONReader(buffer)
            let kind = try reader.skip(depth: 0)
            try reader.end()
            return kind
        }
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    // MARK: Structure

    private mutating func value(depth: Int) throws(Failure) -> JSONValue {
        switch try peekValueStart() {
        case UInt8(ascii: "{"):
            try enter(depth)
            var members: [String: JSONValue] = [:]
            if try openContainer(closing: UInt8(ascii: "}")) { return .object(members) }
            repeat {
                let key = try stringValue()
                try expect(UInt8(ascii: ":"))
                members[key] = try value(depth: depth + 1)
            } while try nextMember(closing: UInt8(ascii: "}"))
            return .object(members)
        case UInt8(ascii: "["):
            try enter(depth)
            var items: [JSONValue] = []
            if try openContainer(closing: UInt8(ascii: "]")) { return .array(items) }
            repeat {
                items.append(try value(depth: depth + 1))
            } while try nextMember(closing: UInt8(ascii: "]"))
            return .array(items)
        case UInt8(ascii: "\""):
            return .string(try stringValue())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default:
            let (start, isInteger) = try number()
            if isInteger && index - start <= 18 { return .int(smallInteger(from: start)) }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if isInteger, let integer = Int64(text) { return .int(integer) }
            guard let double = Double(text), double.isFinite else { throw Failure(description: "number \(text.prefix(40)) is out of range") }
            return .double(double)
        }
    }

    private mutating func skip(depth: Int) throws(Failure) -> Kind {
        switch try peekValueStart() {
        case UInt8(ascii: "{"):
            try enter(depth)
            if try openContainer(closing: UInt8(ascii: "}")) { return .object }
            repeat {
                try skipString()
                try expect(UInt8(ascii: ":"))
                _ = try skip(depth: depth + 1)
            } while try nextMember(closing: UInt8(ascii: "}"))
            return .object
        case UInt8(ascii: "["):
            try enter(depth)
            if try openContainer(closing: UInt8(ascii: "]")) { return .array }
            repeat {
                _ = try skip(depth: depth + 1)
            } while try nextMember(closing: UInt8(ascii: "]"))
            return .array
        case UInt8(ascii: "\""):
            try skipString()
            return .string
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default:
            let (start, isInteger) = try number()
            // The same range check as `value(depth:)`, without a String: an integer literal of at
            // most 18 digits always fits, anything else goes through the same conversion.
            if !(isInteger && index - start <= 18) {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                if !(isInteger && Int64(text) != nil) {
                    guard let double = Double(text), double.isFinite else { throw Failure(description: "number \(text.prefix(40)) is out of range") }
                }
            }
            return .number
        }
    }

    private func enter(_ depth: Int) throws(Failure) {
        guard depth < Self.maxDepth else { throw Failure(description: "nested deeper than \(Self.maxDepth)") }
    }

    /// Skips whitespace and returns the first byte of a value (not consumed).
    private mutating func peekValueStart() throws(Failure) -> UInt8 {
        skipWhitespace()
        guard index < bytes.count else { throw Failure(description: index == 0 ? "empty payload" : "unexpected end of input") }
        return bytes[index]
    }

    /// Consumes the opening bracket; true (and the closing one consumed) when the container is empty.
    private mutating func openContainer(closing: UInt8) throws(Failure) -> Bool {
        index += 1
        skipWhitespace()
        guard index < bytes.count else { throw Failure(description: "unexpected end of input") }
        if bytes[index] == closing {
            index += 1
            return true
        }
        return false
    }

    /// After a member: true at a comma (another member follows), false at the closing bracket.
    private mutating func nextMember(closing: UInt8) throws(Failure) -> Bool {
        skipWhitespace()
        guard index < bytes.count else { throw Failure(description: "unexpected end of input") }
        let byte = bytes[index]
        index += 1
        if byte == UInt8(ascii: ",") { return true }
        if byte == closing { return false }
        throw unexpected(byte, at: index - 1)
    }

    private mutating func expect(_ wanted: UInt8) throws(Failure) {
        skipWhitespace()
        guard index < bytes.count else { throw Failure(description: "unexpected end of input") }
        guard bytes[index] == wanted else { throw unexpected(bytes[index], at: index) }
        index += 1
    }

    private mutating func end() throws(Failure) {
        skipWhitespace()
        guard index == bytes.count else { throw Failure(description: "trailing characters at offset \(index)") }
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - index >= count else { throw Failure(description: "unexpected end of input") }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
            throw unexpected(bytes[index + offset], at: index + offset)
        }
        index += count
    }

    private func unexpected(_ byte: UInt8, at offset: Int) -> Failure {
        let shown = byte >= 0x20 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
        return Failure(description: "unexpected \(shown) at offset \(offset)")
    }

    // MARK: Numbers

    /// Consumes a number in the RFC grammar; returns where it started and whether it is an
    /// integer literal (no fraction, no exponent).
    private mutating func number() throws(Failure) -> (start: Int, isInteger: Bool) {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, isDigit(bytes[index]) else {
            throw index < bytes.count ? unexpected(bytes[index], at: index) : Failure(description: "unexpected end of input")
        }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            skipDigits()
        }
        var isInteger = true
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            try requireDigits()
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            try requireDigits()
        }
        return (start, isInteger)
    }

    /// The value of an integer literal of at most 18 characters (always fits `Int64`).
    private func smallInteger(from start: Int) -> Int64 {
        var position = start
        let negative = bytes[position] == UInt8(ascii: "-")
        if negative { position += 1 }
        var value: Int64 = 0
        while position < index {
            value = value * 10 + Int64(bytes[position] - UInt8(ascii: "0"))
            position += 1
        }
        return negative ? -value : value
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private mutating func skipDigits() {
        while index < bytes.count, isDigit(bytes[index]) { index += 1 }
    }

    private mutating func requireDigits() throws(Failure) {
        guard index < bytes.count, isDigit(bytes[index]) else { throw Failure(description: "a digit expected at offset \(index)") }
        skipDigits()
    }

    // MARK: Strings

    private mutating func stringValue() throws(Failure) -> String {
        var collected: [UInt8] = []
        if let raw = try string(into: &collected, collect: true) {
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[raw]), as: UTF8.self)
        }
        return String(decoding: collected, as: UTF8.self)
    }

    private mutating func skipString() throws(Failure) {
        var unused: [UInt8] = []
        _ = try string(into: &unused, collect: false)
    }

    /// Consumes a string (after optional whitespace) and validates its escapes, surrogate pairs
    /// and UTF-8. Returns the range of its raw bytes when it has no escape (they are the text);
    /// otherwise, with `collect`, the decoded text is in `out`.
    private mutating func string(into out: inout [UInt8], collect: Bool) throws(Failure) -> Range<Int>? {
        skipWhitespace()
        guard index < bytes.count else { throw Failure(description: "unexpected end of input") }
        guard bytes[index] == UInt8(ascii: "\"") else { throw unexpected(bytes[index], at: index) }
        index += 1
        let start = index
        var runStart = index
        var escaped = false
        while true {
            guard index < bytes.count else { throw Failure(description: "unterminated string") }
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                if !escaped {
                    index += 1
                    return start..<(index - 1)
                }
                if collect { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index])) }
                index += 1
                return nil
            case UInt8(ascii: "\\"):
                if collect { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index])) }
                escaped = true
                index += 1
                try escape(into: &out, collect: collect)
                runStart = index
            case 0..<0x20:
                throw Failure(description: "unescaped control character in a string at offset \(index)")
            case 0x20..<0x80:
                index += 1
            default:
                try utf8Sequence()
            }
        }
    }

    private mutating func escape(into out: inout [UInt8], collect: Bool) throws(Failure) {
        guard index < bytes.count else { throw Failure(description: "unterminated string") }
        let byte = bytes[index]
        index += 1
        let simple: UInt8
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): simple = byte
        case UInt8(ascii: "b"): simple = 0x08
        case UInt8(ascii: "f"): simple = 0x0C
        case UInt8(ascii: "n"): simple = 0x0A
        case UInt8(ascii: "r"): simple = 0x0D
        case UInt8(ascii: "t"): simple = 0x09
        case UInt8(ascii: "u"):
            var scalar = UInt32(try hex4())
            if scalar >= 0xD800 && scalar < 0xDC00 {
                guard bytes.count - index >= 2, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                    throw Failure(description: "unpaired surrogate escape at offset \(index)")
                }
                index += 2
                let low = UInt32(try hex4())
                guard low >= 0xDC00 && low < 0xE000 else { throw Failure(description: "unpaired surrogate escape at offset \(index)") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if scalar >= 0xDC00 && scalar < 0xE000 {
                throw Failure(description: "unpaired surrogate escape at offset \(index)")
            }
            if collect, let unicode = Unicode.Scalar(scalar) { out.append(contentsOf: UTF8.encode(unicode)!) }
            return
        default:
            throw Failure(description: "invalid escape at offset \(index - 1)")
        }
        if collect { out.append(simple) }
    }

    private mutating func hex4() throws(Failure) -> UInt16 {
        guard bytes.count - index >= 4 else { throw Failure(description: "unterminated string") }
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw Failure(description: "invalid \\u escape at offset \(index)")
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }

    /// Consumes one multi-byte UTF-8 sequence (the first byte ≥ 0x80), refusing overlong forms,
    /// surrogates and code points above U+10FFFF.
    private mutating func utf8Sequence() throws(Failure) {
        let first = bytes[index]
        let length: Int
        var lower: UInt8 = 0x80
        var upper: UInt8 = 0xBF
        switch first {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; lower = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; upper = 0x9F
        case 0xF0: length = 4; lower = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; upper = 0x8F
        default: throw Failure(description: "invalid UTF-8 at offset \(index)")
        }
        guard bytes.count - index >= length else { throw Failure(description: "invalid UTF-8 at offset \(index)") }
        let second = bytes[index + 1]
        guard second >= lower && second <= upper else { throw Failure(description: "invalid UTF-8 at offset \(index)") }
        for offset in 2..<max(2, length) where bytes[index + offset] & 0xC0 != 0x80 {
            throw Failure(description: "invalid UTF-8 at offset \(index)")
        }
        index += length
    }
}
