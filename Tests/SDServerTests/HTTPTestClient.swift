import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 client on raw sockets, so tests control the connection itself: they
/// can stop halfway through a body, or close the socket while the server is working.
struct HTTPTestClient {
    let port: Int

    struct Reply {
        let status: Int
        let headers: [String: String]
        let body: [UInt8]
        var json: Any? { try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]) }
        var object: [String: Any] { json as? [String: Any] ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// A connected socket to the server; nil if the connection failed.
    func connect() -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else { close(fd); return nil }
        var timeout = timeval(tv_sec: 120, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }

    static func requestBytes(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [String: String] = [:]) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        return Array((head + "\r\n").utf8) + (body ?? [])
    }

    /// Reads until the server closes the connection; nil if it sent nothing.
    static func readReply(_ fd: Int32) -> Reply? {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        guard let end = data.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
        let head = String(decoding: data[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { return nil }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Reply(status: status, headers: headers, body: Array(data[end.upperBound...]))
    }

    func request(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [String: String] = [:]) -> Reply? {
        guard let fd = connect() else { return nil }
        defer { close(fd) }
        Self.send(fd, Self.requestBytes(method, path, body: body, headers: headers))
        return Self.readReply(fd)
    }

    func get(_ path: String, headers: [String: String] = [:]) -> Reply? { request("GET", path, headers: headers) }

    func post(_ path: String, json: Any, headers: [String: String] = [:]) -> Reply? {
        let body = try! JSONSerialization.data(withJSONObject: json)
        return request("POST", path, body: Array(body), headers: headers)
    }

    func post(_ path: String, raw: String, headers: [String: String] = [:]) -> Reply? {
        request("POST", path, body: Array(raw.utf8), headers: headers)
    }
}
