import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Testing
@testable import TesseraCore

/// Blocking HTTP calls for tests.
struct HTTPClient {
    let base: String
    var token: String?

    func call(_ method: String, _ path: String, body: Data? = nil, contentType: String? = "application/octet-stream",
              headers: [String: String] = [:]) throws -> (status: Int, headers: [String: String], body: Data) {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = method
        request.httpBody = body
        if body != nil, let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox()
        URLSession.shared.dataTask(with: request) { data, response, error in
            let http = response as? HTTPURLResponse
            var headers: [String: String] = [:]
            for (key, value) in http?.allHeaderFields ?? [:] { headers[String(describing: key).lowercased()] = String(describing: value) }
            box.set((http?.statusCode ?? 0, headers, data ?? Data()), error)
            done.signal()
        }.resume()
        done.wait()
        if let error = box.error { throw error }
        return box.value!
    }

    /// Sends only the request head (announcing `contentLength` body bytes, sending none) and returns
    /// the server's answer: what a server that decides before the body must be able to give. (A full
    /// upload through URLSession may instead fail with a broken pipe when the server answers early.)
    func beforeBody(_ method: String, _ path: String, contentLength: Int, contentType: String = "application/octet-stream",
                    declaredLength: String? = nil)
        throws -> (status: Int, headers: [String: String], body: Data) {
        let url = URL(string: base)!
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(url.port ?? 80).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(declaredLength ?? String(contentLength))\r\n"
        head += "Content-Type: \(contentType)\r\n"
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        head += "\r\n"
        _ = head.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        // Read until the head and the announced body have arrived (or the server closes / 10 s pass).
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var headers: [String: String] = [:]
        var status = 0
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received.append(contentsOf: buffer.prefix(count))
            guard let end = received.range(of: Data("\r\n\r\n".utf8)) else { continue }
            let lines = String(decoding: received[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
            status = Int(lines.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
            for line in lines.dropFirst() {
                if let colon = line.firstIndex(of: ":") {
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
            }
            let length = Int(headers["content-length"] ?? "") ?? 0
            if received.count - end.upperBound >= length {
                return (status, headers, Data(received[end.upperBound..<(end.upperBound + length)]))
            }
        }
        return (status, headers, Data())
    }

    func json(_ method: String, _ path: String, body: Data? = nil) throws -> (Int, [String: Any]) {
        let response = try call(method, path, body: body)
        return (response.status, (try? JSONSerialization.jsonObject(with: response.body)) as? [String: Any] ?? [:])
    }
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: (Int, [String: String], Data)?
    private var failure: (any Error)?
    func set(_ value: (Int, [String: String], Data), _ error: (any Error)?) { lock.withLock { stored = value; failure = error } }
    var value: (Int, [String: String], Data)? { lock.withLock { stored } }
    var error: (any Error)? { lock.withLock { failure } }
}

@Suite("HTTP API", .serialized)
struct APITests {
    static func startServer(workers: Int = 1, tokens: [String] = [], maxUpload: Int = 1 << 30) throws -> (Server, HTTPClient, String) {
        let root = Support.temporaryDirectory()
        var options = ServeOptions(dataDirectory: root + "/data")
        options.api.modelsDirectory = try Support.tinyModels()
        options.api.defaultModel = "tiny"
        options.api.tokens = tokens
        options.api.maxUploadBytes = maxUpload
        options.port = 0
        options.workers = workers
        options.threads = 2
        var logger = Logger(label: "tests")
        logger.logLevel = .critical
        let server = try Server(options: options, logger: logger)
        try server.start()
        return (server, HTTPClient(base: "http://127.0.0.1:\(server.port)"), root)
    }

    func storedFiles(_ root: String) -> [String] {
        let slides = (try? FileManager.default.contentsOfDirectory(atPath: root + "/data/slides")) ?? []
        let uploads = (try? FileManager.default.contentsOfDirectory(atPath: root + "/data/uploads")) ?? []
        return slides + uploads
    }

    @Test func uploadRunsToDoneAndServesResults() throws {
        let (server, client, root) = try Self.startServer()
        defer { server.stop() }
        let slide = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 3000, height: 2000, seed: 21)))
        let upload = try client.call("POST", "/v1/slides?filename=case-17.tif", body: slide)
        #expect(upload.status == 202)
        let location = try #require(upload.headers["location"])
        let job = try #require((try JSONSerialization.jsonObject(with: upload.body)) as? [String: Any])
        #expect(location == "/v1/jobs/\(job["id"] as? Int ?? 0)")
        #expect((job["slide"] as? [String: Any])?["name"] as? String == "case-17.tif")
        var state = ""
        let deadline = Date().addingTimeInterval(90)
        while Date() < deadline {
            state = (try client.json("GET", location).1["state"] as? String) ?? ""
            if ["done", "failed"].contains(state) { break }
            Thread.sleep(forTimeInterval: 0.3)
        }
        #expect(state == "done")
        let summary = try client.json("GET", location + "/result")
        #expect(summary.0 == 200 && (summary.1["tiles_tissue"] as? Int ?? 0) > 0)
        for (file, type) in [("tiles.csv", "text/csv"), ("annotations.geojson", "application/geo+json"),
                             ("heatmap.png", "image/png"), ("overlay.png", "image/png")] {
            let response = try client.call("GET", location + "/" + file)
            #expect(response.status == 200 && response.headers["content-type"] == type && !response.body.isEmpty, "\(file)")
        }
        // The same content again is the same job; PUT (curl -T) works like POST.
        let again = try client.call("PUT", "/v1/slides?filename=other-name.tif", body: slide)
        #expect(again.status == 200 && again.headers["location"] == location)
        let listed = try client.json("GET", "/v1/jobs?state=done")
        #expect((listed.1["jobs"] as? [Any])?.count == 1)
        let metrics = String(decoding: try client.call("GET", "/metrics").body, as: UTF8.self)
        #expect(metrics.contains("tessera_jobs{state=\"done\"} 1") && metrics.contains("tessera_upload_bytes_total \(2 * slide.count)"))
        let page = String(decoding: try client.call("GET", "/").body, as: UTF8.self)
        #expect(page.contains("case-17.tif") && page.contains("/overlay.png"))
        #expect(storedFiles(root).count == 1, "one stored slide, no leftovers")
    }

    @Test func badRequestsGetClearErrorsAndQueueNothing() throws {
        let (server, client, root) = try Self.startServer(workers: 0, maxUpload: 5_000_000)
        defer { server.stop() }
        func code(_ response: (status: Int, headers: [String: String], body: Data)) -> String {
            let object = (try? JSONSerialization.jsonObject(with: response.body)) as? [String: Any]
            return (object?["error"] as? [String: Any])?["code"] as? String ?? ""
        }
        let text = Data("patient list\n".utf8)
        var response = try client.call("POST", "/v1/slides?filename=a.svs", body: text)
        #expect(response.status == 422 && code(response) == "not_a_slide")
        let tiff = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 22)))
        response = try client.call("POST", "/v1/slides?filename=cut.tif", body: tiff.prefix(3000))
        #expect(response.status == 422)
        // Decided from the head: answered before the client sends the body.
        response = try client.beforeBody("POST", "/v1/slides?filename=a.tif", contentLength: tiff.count, contentType: "text/plain")
        #expect(response.status == 415)
        response = try client.beforeBody("POST", "/v1/slides", contentLength: tiff.count)
        #expect(response.status == 400 && code(response) == "missing_filename")
        response = try client.beforeBody("POST", "/v1/slides?filename=a.tif&model=../../etc", contentLength: tiff.count)
        #expect(response.status == 400 && code(response) == "unknown_model")
        response = try client.beforeBody("POST", "/v1/slides?filename=big.tif", contentLength: 6_000_000)
        #expect(response.status == 413)
        #expect(try client.call("GET", "/v1/jobs/99").status == 404)
        #expect(try client.call("GET", "/v1/nothing").status == 404)
        #expect(try client.call("PATCH", "/v1/jobs").status == 405)
        #expect(try client.json("GET", "/v1/jobs").1["jobs"] as? [Any] == nil || (try client.json("GET", "/v1/jobs").1["jobs"] as? [Any])?.isEmpty == true)
        #expect(storedFiles(root).isEmpty, "nothing stored from failed uploads")

        // Path traversal in the file name: stored under the server's own name, the name kept as a base name.
        response = try client.call("POST", "/v1/slides?filename=../../../tmp/evil.tif", body: tiff)
        #expect(response.status == 202)
        let job = (try JSONSerialization.jsonObject(with: response.body)) as? [String: Any]
        #expect((job?["slide"] as? [String: Any])?["name"] as? String == "evil.tif")
        let stored = try FileManager.default.contentsOfDirectory(atPath: root + "/data/slides")
        #expect(stored.count == 1 && stored[0].hasPrefix(((job?["slide"] as? [String: Any])?["sha256"] as? String) ?? "?"))
        let id = job?["id"] as? Int ?? 0
        // Not done yet (no workers): results are a conflict; cancel works once, then the job is final.
        #expect(try client.call("GET", "/v1/jobs/\(id)/result").status == 409)
        #expect(try client.json("DELETE", "/v1/jobs/\(id)").1["state"] as? String == "cancelled")
    }

    @Test func bearerTokenIsCheckedBeforeTheBody() throws {
        let (server, client, root) = try Self.startServer(workers: 0, tokens: ["s3cret", "other"])
        defer { server.stop() }
        let tiff = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 22)))
        // Refused from the head alone: the client is told before it sends a byte of the body.
        #expect(try client.beforeBody("POST", "/v1/slides?filename=a.tif", contentLength: tiff.count).status == 401)
        var wrong = client
        wrong.token = "s3crex"
        #expect(try wrong.call("GET", "/v1/jobs").status == 401)
        #expect(storedFiles(root).isEmpty)
        var right = client
        right.token = "other"
        #expect(try right.call("POST", "/v1/slides?filename=a.tif", body: tiff).status == 202)
        #expect(try client.call("GET", "/healthz").status == 200, "health needs no token")
    }

    @Test func serverAnswersWhatItsOpenAPIDocumentSays() throws {
        let document = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Support.root.appendingPathComponent("docs/openapi.json"))) as? [String: Any]
        let paths = try #require(document?["paths"] as? [String: [String: Any]])
        let (server, client, _) = try Self.startServer(workers: 0)
        defer { server.stop() }
        var checked = 0
        for (template, operations) in paths {
            let path = template.replacingOccurrences(of: "{id}", with: "1")
            for (method, operation) in operations {
                let responses = try #require((operation as? [String: Any])?["responses"] as? [String: Any])
                let query = path == "/v1/slides" ? "?filename=x.svs" : ""
                let body: Data? = ["post", "put"].contains(method) ? Data("not a slide".utf8) : nil
                let status = try client.call(method.uppercased(), path + query, body: body).status
                #expect(responses.keys.contains(String(status)), "\(method.uppercased()) \(path) answered \(status), documented \(responses.keys.sorted())")
                checked += 1
            }
        }
        #expect(checked >= 12)
    }
}
