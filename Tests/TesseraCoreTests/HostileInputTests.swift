import Foundation
import Testing
@testable import TesseraCore

/// Uploads and requests that are malformed, odd or hostile, against a real server on loopback.
@Suite("HTTP API: hostile and unlucky input", .serialized)
struct HostileInputTests {
    /// `curl -T -`: the slide from standard input, sent with `Transfer-Encoding: chunked`.
    static func curlChunked(_ file: String, _ url: String, headers: [String] = []) throws -> (status: Int, body: String) {
        let output = Support.temporaryDirectory() + "/curl-body"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sS", "-o", output, "-w", "%{http_code}", "-T", "-"] + headers.flatMap { ["-H", $0] } + [url]
        process.standardInput = FileHandle(forReadingAtPath: file)
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        Support.finish(process, within: 60)
        let status = Int(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)) ?? 0
        return (status, (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/usr/bin/curl"), "needs curl"))
    func chunkedUploadsAreAcceptedWithinTheLimit() throws {
        let (server, client, root) = try APITests.startServer(workers: 0, maxUpload: 3_000_000)
        defer { server.stop() }
        let small = try Support.syntheticSlide(width: 1500, height: 1000, seed: 22)
        let accepted = try Self.curlChunked(small, client.base + "/v1/slides?filename=piped.tif")
        #expect(accepted.status == 202, "\(accepted.body)")
        #expect(accepted.body.contains("piped.tif"))
        let large = try Support.syntheticSlide(width: 6000, height: 4000, seed: 23)
        let size = (try FileManager.default.attributesOfItem(atPath: large)[.size] as? Int) ?? 0
        #expect(size > 3_000_000, "the slide is over the limit")
        let refused = try Self.curlChunked(large, client.base + "/v1/slides?filename=big.tif")
        #expect(refused.status == 413, "\(refused.body)")
        let uploads = (try? FileManager.default.contentsOfDirectory(atPath: root + "/data/uploads")) ?? []
        #expect(uploads.isEmpty, "nothing left of the refused upload: \(uploads)")
    }
}

extension HostileInputTests {
    func errorCode(_ body: Data) -> String {
        let object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any]
        return (object?["error"] as? [String: Any])?["code"] as? String ?? ""
    }

    @Test func bearerSchemeIsCaseInsensitive() throws {
        let (server, client, _) = try APITests.startServer(workers: 0, tokens: ["s3cret"])
        defer { server.stop() }
        for header in ["bearer s3cret", "BEARER s3cret", "Bearer  s3cret"] {
            #expect(try client.call("GET", "/v1/jobs", headers: ["Authorization": header]).status == 200, "\(header)")
        }
        #expect(try client.call("GET", "/v1/jobs", headers: ["Authorization": "bearer s3crex"]).status == 401)
        #expect(try client.call("GET", "/v1/jobs", headers: ["Authorization": "Basic s3cret"]).status == 401)
    }

    @Test func hugeDeclaredLengthIsTooLargeNotMissing() throws {
        let (server, client, _) = try APITests.startServer(workers: 0)
        defer { server.stop() }
        let response = try client.beforeBody("POST", "/v1/slides?filename=a.tif", contentLength: 0, declaredLength: "9223372036854775808")
        #expect(response.status == 413 && errorCode(response.body) == "too_large")
        let junk = try client.beforeBody("POST", "/v1/slides?filename=a.tif", contentLength: 0, declaredLength: "12abc")
        #expect(junk.status == 400)
    }

    @Test func controlCharactersInFileNamesKeepTheExtension() throws {
        let (server, client, root) = try APITests.startServer(workers: 0)
        defer { server.stop() }
        let tiff = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 22)))
        let response = try client.call("POST", "/v1/slides?filename=a%00b%0A%01.tif", body: tiff)
        #expect(response.status == 202)
        let job = (try JSONSerialization.jsonObject(with: response.body)) as? [String: Any]
        #expect((job?["slide"] as? [String: Any])?["name"] as? String == "a_b__.tif")
        let stored = try FileManager.default.contentsOfDirectory(atPath: root + "/data/slides")
        #expect(stored.count == 1 && stored[0].hasSuffix(".tif"), "\(stored)")
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/usr/bin/curl"), "needs curl"))
    func abortedUploadLeavesNoTemporaryFile() throws {
        let (server, client, root) = try APITests.startServer(workers: 0)
        defer { server.stop() }
        let slide = try Support.syntheticSlide(width: 6000, height: 4000, seed: 23)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sS", "-o", "/dev/null", "--limit-rate", "300k", "-T", slide, client.base + "/v1/slides?filename=cut.tif"]
        try process.run()
        let uploads = root + "/data/uploads"
        func stored() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: uploads)) ?? [] }
        var started = false
        for _ in 0..<100 where !started {
            Thread.sleep(forTimeInterval: 0.05)
            started = !stored().isEmpty
        }
        #expect(started, "the upload began")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        var gone = false
        for _ in 0..<10 where !gone {
            Thread.sleep(forTimeInterval: 0.05)
            gone = stored().isEmpty
        }
        #expect(gone, "removed within 0.5 s of the abort: \(stored())")
    }

    @Test(.enabled(if: Support.sharedAvailable, "needs ../shared/data"))
    func slideWithoutMPPIsRefusedAtUpload() throws {
        let (server, client, root) = try APITests.startServer(workers: 0)
        defer { server.stop() }
        let tcga = try Data(contentsOf: Support.shared.appendingPathComponent("slides/tcga-cr-7395-01a-01-ts1.svs"))
        let response = try client.call("POST", "/v1/slides?filename=tcga.svs", body: tcga)
        #expect(response.status == 422 && errorCode(response.body) == "missing_mpp")
        #expect(String(decoding: response.body, as: UTF8.self).contains("slide_mpp query parameter"),
                "the message names the API parameter, not a CLI flag")
        #expect(try client.json("GET", "/v1/jobs").1["jobs"] as? [Any] == nil
            || (try client.json("GET", "/v1/jobs").1["jobs"] as? [Any])?.isEmpty == true, "no job queued")
        let slides = (try? FileManager.default.contentsOfDirectory(atPath: root + "/data/slides")) ?? []
        #expect(slides.isEmpty)
    }
}
