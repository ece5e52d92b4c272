import Foundation
import Testing
@testable import HTTPServer

/// Floods, slowloris, stalled uploads, trusted proxies and chunked bodies, all on loopback
/// (every address of 127.0.0.0/8 is a distinct client).
@Suite("HTTP connection guard", .serialized)
struct ConnectionGuardTests {
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-guard-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func start(_ adjust: (inout HTTPServerConfiguration) -> Void = { _ in }, maxBody: Int = 50_000_000) throws -> HTTPServer {
        var configuration = HTTPServerConfiguration()
        configuration.port = 0
        configuration.threads = 2
        adjust(&configuration)
        return try HTTPServer(configuration: configuration, handler: EchoHandler(directory: directory, maxBody: maxBody, kept: KeptFiles()))
    }

    func json(_ data: Data) -> [String: Any] { (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:] }

    func strayUploads() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasPrefix("upload-") }
    }

    /// Whether the server closed `fd` within `seconds` (recv sees end of stream or a reset).
    func closedByServer(_ fd: Int32, within seconds: Double) -> Bool {
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let deadline = Date().addingTimeInterval(seconds)
        var byte: UInt8 = 0
        while Date() < deadline {
            let n = recv(fd, &byte, 1, 0)
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { return true }
        }
        return false
    }

    /// Opens `count` sockets from `source`; some may be refused by the per-address limit.
    func openSockets(_ count: Int, from source: String, port: UInt16, sending head: String? = nil) -> [Int32] {
        let client = RawClient(port: port, source: source)
        return (0..<count).compactMap { _ in
            guard let fd = try? client.connect() else { return nil }
            if let head { client.send(fd, Data(head.utf8)) }
            return fd
        }
    }

    func timedGet(_ client: RawClient, _ path: String, headers: [String: String] = [:]) throws -> (status: Int, seconds: Double, body: [String: Any]) {
        let start = Date()
        let response = try client.request("GET", path, headers: headers)
        return (response.status, Date().timeIntervalSince(start), json(response.body))
    }

    @Test func floodFromOneAddressLeavesOthersAndProxiedClientsServed() throws {
        let server = try start { $0.trustedProxies = ["127.0.0.3"] }
        defer { server.stop() }
        var held: [Int32] = []
        defer { held.forEach { close($0) } }
        held += openSockets(200, from: "127.0.0.1", port: server.port)
        held += openSockets(70, from: "127.0.0.1", port: server.port, sending: "GET /slow HTTP/1.1\r\nHost: x\r\nX-")
        // More idle sockets than one address may hold, from the proxy, and 300 from 10 other addresses.
        held += openSockets(100, from: "127.0.0.3", port: server.port)
        for index in 0..<10 { held += openSockets(30, from: "127.0.1.\(index + 1)", port: server.port) }
        Thread.sleep(forTimeInterval: 0.3)
        var other = RawClient(port: server.port, source: "127.0.0.2")
        other.timeout = 5
        let direct = try timedGet(other, "/healthz")
        #expect(direct.status == 200 && direct.seconds < 1, "another address: \(direct.status) in \(direct.seconds) s")
        #expect(direct.body["client"] as? String == "127.0.0.2")
        var proxy = RawClient(port: server.port, source: "127.0.0.3")
        proxy.timeout = 5
        let proxied = try timedGet(proxy, "/healthz", headers: ["X-Forwarded-For": "10.9.9.9, 198.51.100.7"])
        #expect(proxied.status == 200 && proxied.seconds < 1, "behind the proxy: \(proxied.status) in \(proxied.seconds) s")
        #expect(proxied.body["client"] as? String == "198.51.100.7", "the address the proxy vouches for")
        // X-Forwarded-For from a peer that is not the trusted proxy is ignored.
        let spoofed = try timedGet(other, "/healthz", headers: ["X-Forwarded-For": "198.51.100.7"])
        #expect(spoofed.body["client"] as? String == "127.0.0.2")
        // The flooding address itself is refused beyond its share.
        let flooder = RawClient(port: server.port, source: "127.0.0.1", timeout: 2)
        #expect((try? flooder.request("GET", "/healthz").status) ?? 0 != 200)
    }

    @Test func perClientLimitBehindTheProxy() throws {
        let server = try start {
            $0.trustedProxies = ["127.0.0.3"]
            $0.perIPConnectionLimit = 3
        }
        defer { server.stop() }
        let upload = "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nX-Forwarded-For: 198.51.100.9\r\nContent-Length: 1000\r\n\r\n"
        let held = openSockets(3, from: "127.0.0.3", port: server.port, sending: upload)
        defer { held.forEach { close($0) } }
        #expect(held.count == 3)
        Thread.sleep(forTimeInterval: 0.3)
        let proxy = RawClient(port: server.port, source: "127.0.0.3", timeout: 5)
        #expect(try proxy.request("GET", "/healthz", headers: ["X-Forwarded-For": "198.51.100.9"]).status == 429)
        #expect(try proxy.request("GET", "/healthz", headers: ["X-Forwarded-For": "198.51.100.10"]).status == 200)
    }

    @Test func slowAndIdleHeadsAreClosed() throws {
        let server = try start { $0.headTimeoutSeconds = 0.5 }
        defer { server.stop() }
        let client = RawClient(port: server.port)
        let idle = try client.connect()
        defer { close(idle) }
        let slow = try client.connect()
        defer { close(slow) }
        client.send(slow, Data("GET / HTTP/1.1\r\n".utf8))
        for _ in 0..<4 {
            client.send(slow, Data("X".utf8))
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(closedByServer(idle, within: 2), "an idle socket is closed after the head timeout")
        #expect(closedByServer(slow, within: 2), "a head dribbled byte by byte is closed too")
        // A keep-alive connection idle after its response is closed the same way.
        let kept = try client.connect()
        defer { close(kept) }
        client.send(kept, Data("GET /ping HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(client.receive(kept).status == 200)
        #expect(closedByServer(kept, within: 2))
    }

    @Test func stalledUploadIsDroppedAndItsFileRemoved() throws {
        let server = try start {
            $0.bodyRateWindowSeconds = 0.5
            $0.minimumBodyBytesPerSecond = 10_000
        }
        defer { server.stop() }
        let client = RawClient(port: server.port)
        let fd = try client.connect()
        defer { close(fd) }
        client.send(fd, Data("POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nContent-Length: 1000000\r\n\r\n".utf8))
        client.send(fd, Data(repeating: 7, count: 2000))
        let start = Date()
        #expect(closedByServer(fd, within: 3), "a stalled body is dropped")
        #expect(Date().timeIntervalSince(start) < 2)
        Thread.sleep(forTimeInterval: 0.1)
        #expect(strayUploads().isEmpty, "its temporary file is gone at once: \(strayUploads())")
        // A body that keeps coming is not dropped.
        let body = Data(repeating: 3, count: 400_000)
        let response = try client.request("POST", "/upload", headers: ["Authorization": "Bearer secret"], body: body)
        #expect(response.status == 200 && json(response.body)["bytes"] as? Int == body.count)
    }

    /// Sends `body` with `Transfer-Encoding: chunked` in 64 KiB chunks.
    func chunkedUpload(_ client: RawClient, _ body: Data) throws -> (status: Int, body: [String: Any]) {
        let fd = try client.connect()
        defer { close(fd) }
        client.send(fd, Data("PUT /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".utf8))
        var offset = 0
        while offset < body.count {
            let chunk = body[offset..<min(body.count, offset + 65536)]
            client.send(fd, Data(String(chunk.count, radix: 16).utf8) + Data("\r\n".utf8) + chunk + Data("\r\n".utf8))
            offset += chunk.count
        }
        client.send(fd, Data("0\r\n\r\n".utf8))
        let response = client.receive(fd)
        return (response.status, json(response.body))
    }

    @Test func chunkedUploadsStreamWithTheLimitEnforced() throws {
        let server = try start(maxBody: 1_000_000)
        defer { server.stop() }
        let client = RawClient(port: server.port, timeout: 10)
        let small = Data((0..<700_000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        let accepted = try chunkedUpload(client, small)
        #expect(accepted.status == 200 && accepted.body["bytes"] as? Int == small.count)
        let refused = try chunkedUpload(client, Data(repeating: 1, count: 3_000_000))
        #expect(refused.status == 413)
        Thread.sleep(forTimeInterval: 0.1)
        #expect(strayUploads().isEmpty)
    }
}

extension ConnectionGuardTests {
    /// A slow answer to an upload (hashing, opening the slide) must not hold up the server thread.
    @Test func slowUploadAnswerDoesNotBlockOtherRequests() throws {
        let server = try start { $0.threads = 1 }
        defer { server.stop() }
        let client = RawClient(port: server.port, timeout: 10)
        let finished = DispatchSemaphore(value: 0)
        let status = Counter()
        Thread.detachNewThread {
            if let response = try? client.request("POST", "/upload?sleep=2", headers: ["Authorization": "Bearer secret"],
                                                  body: Data(repeating: 5, count: 100_000)), response.status == 200 {
                status.increment()
            }
            finished.signal()
        }
        Thread.sleep(forTimeInterval: 0.4)
        let start = Date()
        let ping = try client.request("GET", "/ping")
        let seconds = Date().timeIntervalSince(start)
        #expect(ping.status == 200 && seconds < 0.5, "GET answered in \(seconds) s while an upload was being checked")
        #expect(finished.wait(timeout: .now() + 10) == .success)
        #expect(status.value == 1, "the upload is answered once its check is done")
    }
}
