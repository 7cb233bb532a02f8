import Foundation
import Glibc

/// A blocking HTTP/1.1 client for the checks: one request per connection (`Connection: close`),
/// every step bounded by `timeout` (connect, send, receive). The harness talks from the root
/// namespace to each node's API address on the bridge, which faults never cut.
struct HTTP {
    struct Response {
        var status: Int
        var body: Data
        func json() -> Any? { try? JSONSerialization.jsonObject(with: body) }
    }

    static func request(_ method: String, host: String, port: Int, path: String, body: Data? = nil, timeout: Double = 3) -> Response? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { return nil }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\nAccept: application/json\r\n"
        if let body {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        } else if method != "GET" {
            head += "Content-Length: 0\r\n"
        }
        head += "\r\n"
        var bytes = Array(head.utf8)
        if let body { bytes += Array(body) }
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return nil }
            sent += n
        }
        var raw = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = Proc.now() + timeout
        var headerEnd: Int?
        var contentLength: Int?
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { return nil }
            if n == 0 { break }
            raw += buffer[0..<n]
            if headerEnd == nil, let end = Self.find(raw, [13, 10, 13, 10]) {
                headerEnd = end + 4
                let headText = String(decoding: raw[0..<end], as: UTF8.self).lowercased()
                for line in headText.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    contentLength = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces))
                }
            }
            if let headerEnd, let contentLength, raw.count >= headerEnd + contentLength { break }
            if Proc.now() > deadline { return nil }
        }
        guard let headerEnd else { return nil }
        let statusLine = String(decoding: raw[0..<min(raw.count, 32)], as: UTF8.self)
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        var body = Array(raw[headerEnd...])
        if let contentLength {
            body = Array(body.prefix(contentLength))
        } else if String(decoding: raw[0..<headerEnd], as: UTF8.self).lowercased().contains("transfer-encoding: chunked") {
            body = Self.dechunk(body)
        }
        return Response(status: status, body: Data(body))
    }

    static func get(_ host: String, _ port: Int, _ path: String, timeout: Double = 3) -> Response? {
        request("GET", host: host, port: port, path: path, timeout: timeout)
    }

    static func find(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }

    static func dechunk(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        var i = 0
        while i < data.count {
            guard let lineEnd = find(Array(data[i...]), [13, 10]) else { break }
            let sizeText = String(decoding: data[i..<(i + lineEnd)], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size > 0 else { break }
            let start = i + lineEnd + 2
            guard start + size <= data.count else { break }
            out += data[start..<(start + size)]
            i = start + size + 2
        }
        return out
    }
}
