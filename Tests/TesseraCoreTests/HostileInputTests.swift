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
