import Foundation
import Testing
@testable import HTTPServer

/// Echoes what it received: method, path, query, body size and the body file's bytes.
struct EchoHandler: HTTPHandler {
    let directory: String
    let maxBody: Int
    let kept: KeptFiles

    func decideBody(for request: HTTPRequest) -> BodyDecision {
        if request.headers["authorization"] != "Bearer secret" { return .reject(.error(401, "unauthorized", "token")) }
        if let length = request.contentLength, length > maxBody { return .reject(.error(413, "too_large", "limit \(maxBody)")) }
        return .store(directory: directory, maxBytes: maxBody)
    }

    func respond(to request: HTTPRequest) -> HTTPResponse {
        if let seconds = request.query["sleep"].flatMap(Double.init) { Thread.sleep(forTimeInterval: seconds) }
        if request.path == "/file" { return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain")], body: .file(#filePath)) }
        var object: [String: Any] = ["method": request.method, "path": request.path, "query": request.query,
                                     "bytes": request.bodyBytes, "client": request.clientAddress]
        if let file = request.bodyFile, request.query["keep"] == "1" {
            let kept = directory + "/kept-\(UUID().uuidString)"
            try? FileManager.default.moveItem(atPath: file, toPath: kept)
            self.kept.add(kept)
            object["kept"] = kept
        }
        return .json(200, try! JSONSerialization.data(withJSONObject: object))
    }
}

final class KeptFiles: @unchecked Sendable {
    private let lock = NSLock()
    private var files: [String] = []
    func add(_ path: String) { lock.withLock { files.append(path) } }
}

@Suite("HTTP server wrapper", .serialized)
struct HTTPServerTests {
    let directory: String
    let server: HTTPServer
    let client: RawClient

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-http-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var configuration = HTTPServerConfiguration()
        configuration.port = 0
        configuration.threads = 2
        configuration.timeoutSeconds = 3
        server = try HTTPServer(configuration: configuration,
                                handler: EchoHandler(directory: directory, maxBody: 50_000_000, kept: KeptFiles()))
        client = RawClient(port: server.port)
    }

    func json(_ data: Data) -> [String: Any] { (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:] }

    func strayUploads() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasPrefix("upload-") }
    }

    @Test func routesHeadsAndQueries() throws {
        #expect(server.port > 0)
        let response = try client.request("GET", "/v1/jobs?state=done&limit=5")
        #expect(response.status == 200)
        let object = json(response.body)
        #expect(object["path"] as? String == "/v1/jobs")
        #expect((object["query"] as? [String: String]) == ["state": "done", "limit": "5"])
        let file = try client.request("GET", "/file")
        #expect(file.status == 200 && String(decoding: file.body, as: UTF8.self).contains("routesHeadsAndQueries"))
    }

    @Test func streamsBodiesToDisk() throws {
        let body = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let response = try client.request("POST", "/upload?keep=1", headers: ["Authorization": "Bearer secret"], body: body)
        #expect(response.status == 200)
        let object = json(response.body)
        #expect(object["bytes"] as? Int == body.count)
        let kept = try #require(object["kept"] as? String)
        #expect(try Data(contentsOf: URL(fileURLWithPath: kept)) == body)
        #expect(strayUploads().isEmpty, "the body file was handed over, nothing else left")
    }

    @Test func rejectsBeforeReadingTheBody() throws {
        let unauthorised = try client.request("POST", "/upload", body: Data(repeating: 1, count: 1000))
        #expect(unauthorised.status == 401)
        // 413 is answered from the head: the client never sends its 60 MB.
        let fd = try client.connect()
        client.send(fd, Data("POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nContent-Length: 60000000\r\n\r\n".utf8))
        let tooLarge = client.receive(fd)
        close(fd)
        #expect(tooLarge.status == 413)
        #expect(json(tooLarge.body)["error"] != nil)
        Thread.sleep(forTimeInterval: 0.2)
        #expect(strayUploads().isEmpty)
    }

    @Test func clientGoneMidUploadLeavesNothing() throws {
        for _ in 0..<3 {
            let fd = try client.connect()
            client.send(fd, Data("POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nContent-Length: 1000000\r\n\r\n".utf8))
            client.send(fd, Data(repeating: 9, count: 300_000))
            Thread.sleep(forTimeInterval: 0.1)
            close(fd)
        }
        #expect(waitUntil(5) { strayUploads().isEmpty }, "aborted uploads cleaned: \(strayUploads())")
        // A short body (fewer bytes than Content-Length, then silence) times out and is cleaned too.
        let fd = try client.connect()
        client.send(fd, Data("POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nContent-Length: 5000\r\n\r\n".utf8))
        client.send(fd, Data(repeating: 9, count: 100))
        // The server has started storing it (the body file exists) ...
        #expect(waitUntil(5) { !strayUploads().isEmpty })
        // ... and its 3 s inactivity timeout removes it while the connection is still open.
        #expect(waitUntil(10) { strayUploads().isEmpty }, "timed-out upload cleaned: \(strayUploads())")
        close(fd)
        #expect(waitUntil(5) { strayUploads().isEmpty })
    }

    /// Polls `condition` every 50 ms for up to `seconds`.
    func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return condition()
    }

    @Test func manyConcurrentClients() throws {
        let client = self.client
        let failures = KeptFiles()
        let counter = Counter()
        DispatchQueue.concurrentPerform(iterations: 40) { index in
            if let response = try? client.request("GET", "/ping?i=\(index)"), response.status == 200 {
                counter.increment()
            } else {
                failures.add("\(index)")
            }
        }
        #expect(counter.value == 40)
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
