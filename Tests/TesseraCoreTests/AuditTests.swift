import Foundation
import Testing
@testable import TesseraCore

@Suite("Audit log", .serialized)
struct AuditTests {
    func lines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    func object(_ line: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
    }

    /// Uploads, reads, downloads, a delete and refused tokens, through the real server.
    func exercise() throws -> (path: String, root: String) {
        let (server, client, root) = try APITests.startServer(workers: 0, tokens: ["lab-scanner:s3cret", "bare-secret"])
        defer { server.stop() }
        let tiff = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 22)))
        var named = client
        named.token = "s3cret"
        #expect(try named.call("POST", "/v1/slides?filename=case-1.tif", body: tiff).status == 202)
        var bare = client
        bare.token = "bare-secret"
        #expect(try bare.call("GET", "/v1/jobs/1/result").status == 409)
        #expect(try bare.call("GET", "/v1/jobs/1/tiles.csv").status == 409)
        var wrong = client
        wrong.token = "guess"
        #expect(try wrong.call("GET", "/v1/jobs").status == 401)
        #expect(try client.beforeBody("POST", "/v1/slides?filename=x.tif", contentLength: 1000).status == 401)
        #expect(try named.call("DELETE", "/v1/jobs/1").status == 200)
        #expect(try named.call("GET", "/v1/jobs/1").status == 200, "a status read is not audited")
        return (AuditLog.path(inDataDirectory: root + "/data"), root)
    }

    @Test func apiRequestsFormAVerifiedChain() throws {
        let (path, _) = try exercise()
        let entries = try lines(path).map(object)
        #expect(entries.map { $0["action"] as? String ?? "" }
            == ["upload", "result_read", "download", "auth_failure", "auth_failure", "delete"])
        #expect(entries.map { $0["outcome"] as? Int ?? 0 } == [202, 409, 409, 401, 401, 200])
        #expect(entries[0]["client"] as? String == "lab-scanner" && entries[0]["object"] as? String == "job 1, file case-1.tif")
        #expect(entries[1]["client"] is NSNull, "a bare secret is an unnamed token")
        #expect(entries.allSatisfy { $0["address"] as? String == "127.0.0.1" })
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains("s3cret") && !text.contains("bare-secret") && !text.contains("guess"), "no secret is logged")
        let result = AuditLog.verify(path: path)
        #expect(result == AuditLog.Verification(lines: 6))
    }

    @Test func tamperingIsDetectedAtItsLine() throws {
        let (path, _) = try exercise()
        let original = try lines(path)
        func check(_ edited: [String]) throws -> AuditLog.Verification {
            try (edited.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            return AuditLog.verify(path: path)
        }
        var changed = original
        changed[3] = changed[3].replacingOccurrences(of: "\"outcome\":401", with: "\"outcome\":200")
        #expect(changed[3] != original[3])
        #expect(try check(changed).firstBadLine == 4)
        var removed = original
        removed.remove(at: 2)
        #expect(try check(removed).firstBadLine == 3)
        #expect(try check(Array(original.reversed())).firstBadLine == 1)
        #expect(try check(original).firstBadLine == nil, "the untouched log verifies")
    }

    @Test(.needsTesseraBinary) func auditCommandsVerifyAndExport() throws {
        let (path, root) = try exercise()
        func tessera(_ arguments: [String]) throws -> (Int32, String, String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Support.binary!)
            process.arguments = arguments
            let out = Pipe(), err = Pipe()
            process.standardOutput = out
            process.standardError = err
            try process.run()
            let output = out.fileHandleForReading.readDataToEndOfFile()
            let error = err.fileHandleForReading.readDataToEndOfFile()
            Support.finish(process, within: 30)
            return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
        }
        let verified = try tessera(["audit", "verify", "--data", root + "/data"])
        #expect(verified.0 == 0 && verified.1.contains("6 entries"))
        let exported = try tessera(["audit", "export", "--data", root + "/data"])
        #expect(exported.0 == 0 && exported.1.split(separator: "\n").count == 6)
        var edited = try lines(path)
        edited[1] = edited[1].replacingOccurrences(of: "\"action\":\"result_read\"", with: "\"action\":\"status\"")
        try (edited.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let tampered = try tessera(["audit", "verify", "--data", root + "/data"])
        #expect(tampered.0 != 0 && tampered.2.contains("line 2"), "\(tampered.2)")
    }
}
