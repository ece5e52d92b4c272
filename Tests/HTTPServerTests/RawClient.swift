import Foundation

/// A minimal HTTP/1.1 client over a plain socket, so tests control every byte (short bodies,
/// wrong lengths, disconnects mid-upload).
struct RawClient {
    let port: UInt16
    /// The loopback address the client's socket is bound to (all of 127.0.0.0/8 is loopback on
    /// Linux), so one test can be several clients.
    var source = "127.0.0.1"
    /// Receive timeout in seconds.
    var timeout = 30

    func connect() throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            close(fd)
            throw POSIXError(.EADDRNOTAVAIL)
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard status == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
        var timeout = timeval(tv_sec: self.timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    func send(_ fd: Int32, _ data: Data) {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n <= 0 { return }
                offset += n
            }
        }
    }

    /// Reads until the peer closes or the response is complete (by Content-Length).
    func receive(_ fd: Int32) -> (status: Int, headers: [String: String], body: Data) {
        var buffer = Data()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { break }
            buffer.append(contentsOf: chunk[0..<n])
            if let parsed = parse(buffer), parsed.complete { break }
        }
        return parse(buffer).map { ($0.status, $0.headers, $0.body) } ?? (0, [:], Data())
    }

    private func parse(_ data: Data) -> (status: Int, headers: [String: String], body: Data, complete: Bool)? {
        guard let end = data.range(of: Data("\r\n\r\n".utf8)) else { return nil }
        let head = String(decoding: data[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            if let colon = line.firstIndex(of: ":") {
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        let status = Int(head.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
        if status == 100 { return parse(Data(data[end.upperBound...])) }
        let body = Data(data[end.upperBound...])
        let complete = headers["content-length"].flatMap(Int.init).map { body.count >= $0 } ?? false
        return (status, headers, body, complete)
    }

    /// One request with a full body.
    func request(_ method: String, _ path: String, headers: [String: String] = [:], body: Data = Data())
        throws -> (status: Int, headers: [String: String], body: Data) {
        let fd = try connect()
        defer { close(fd) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        var all = headers
        if !body.isEmpty || method == "POST" || method == "PUT" { all["Content-Length"] = all["Content-Length"] ?? "\(body.count)" }
        for (name, value) in all { head += "\(name): \(value)\r\n" }
        send(fd, Data((head + "\r\n").utf8) + body)
        return receive(fd)
    }
}
