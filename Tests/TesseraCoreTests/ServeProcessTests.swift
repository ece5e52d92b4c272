import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
@testable import TesseraCore

/// `tessera serve` as a process: killed during uploads, stopped with SIGTERM.
@Suite("Serve process", .serialized, .needsTesseraBinary)
struct ServeProcessTests {
    /// Starts the server (API only) on a free port and returns it with its base URL.
    func start(data: String, models: String, environment: [String: String] = [:]) throws -> (Process, HTTPClient) {
        try Support.serve(data: data, models: models, arguments: ["--workers", "0"], environment: environment)
    }

    @Test func killedDuringUploadsLeavesNoHalfJobs() throws {
        let models = try Support.tinyModels()
        let data = Support.temporaryDirectory() + "/data"
        let slide = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 3000, height: 2000, seed: 31)))
        for round in 0..<4 {
            let (server, client) = try start(data: data, models: models)
            // Distinct content per round; a large tail makes the upload take a while.
            var padded = slide
            padded.append(Data(repeating: UInt8(round), count: 150_000_000))
            let body = padded
            let outcome = ResultBox()
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                if let response = try? client.call("POST", "/v1/slides?filename=round-\(round).tif", body: body) {
                    outcome.set((response.status, response.headers, response.body), nil)
                }
                done.signal()
            }
            Thread.sleep(forTimeInterval: [0.05, 0.2, 0.5, 1.5][round])
            kill(server.processIdentifier, SIGKILL)
            Support.finish(server)
            done.wait()
            let (restarted, restartedClient) = try start(data: data, models: models)
            defer {
                kill(restarted.processIdentifier, SIGTERM)
                Support.finish(restarted, within: 60)
            }
            let jobs = try restartedClient.json("GET", "/v1/jobs").1["jobs"] as? [[String: Any]] ?? []
            let acknowledged = outcome.value.map { $0.0 == 202 } ?? false
            let named = jobs.contains { ($0["slide"] as? [String: Any])?["name"] as? String == "round-\(round).tif" }
            #expect(acknowledged == named, "round \(round): 202 \(acknowledged), job \(named)")
            let uploads = (try? FileManager.default.contentsOfDirectory(atPath: data + "/uploads")) ?? []
            #expect(uploads.isEmpty, "no partial upload files: \(uploads)")
            let stored = (try? FileManager.default.contentsOfDirectory(atPath: data + "/slides")) ?? []
            #expect(stored.count == jobs.count, "every stored slide belongs to a job")
        }
    }

    @Test func sigtermStopsCleanly() throws {
        let models = try Support.tinyModels()
        let (server, client) = try start(data: Support.temporaryDirectory() + "/data", models: models)
        #expect(try client.call("GET", "/healthz").status == 200)
        kill(server.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while server.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!server.isRunning)
        #expect(server.terminationStatus == 0)
    }
}

extension Support {
    /// `tessera serve` on a free port (log level error, `arguments` added) with its base URL.
    static func serve(data: String, models: String, arguments: [String], environment: [String: String] = [:],
                      sourceLocation: SourceLocation = #_sourceLocation) throws -> (Process, HTTPClient) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary!)
        process.arguments = ["serve", "--data", data, "--port", "0", "--log-level", "error"] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(["TESSERA_MODELS": models]) { $1 }.merging(environment) { $1 }
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self)
        let port = try #require(text.split(separator: ":").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) },
                                "serve printed its port: \(text)", sourceLocation: sourceLocation)
        return (process, HTTPClient(base: "http://127.0.0.1:\(port)"))
    }
}
