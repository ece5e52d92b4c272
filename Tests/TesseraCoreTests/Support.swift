import Foundation
import PostgresTestSupport
import Testing
@testable import TesseraCore

enum Support {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let shared = root.deletingLastPathComponent().appendingPathComponent("shared/data")
    static let sharedAvailable = FileManager.default.fileExists(atPath: shared.appendingPathComponent("slides").path)

    static func temporaryDirectory() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-core-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A models folder holding `tiny`: the small compact CNN test fixture (32 px input, 3 classes).
    static func tinyModels() throws -> String {
        let directory = temporaryDirectory() + "/models"
        try FileManager.default.createDirectory(atPath: directory + "/tiny", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: root.appendingPathComponent("Tests/EngineTests/Fixtures/compact_cnn_32.onnx").path,
                                         toPath: directory + "/tiny/model.onnx")
        let card = """
            {"name": "tiny", "task": "classification", "classes": ["A", "B", "C"],
             "input": {"name": "input", "size": 32, "mpp": 2.0,
                       "normalisation": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
             "output": {"kind": "logits"}}
            """
        try card.write(toFile: directory + "/tiny/model.json", atomically: true, encoding: .utf8)
        // The same network read at 0.5 um/px: 16x the tiles of "tiny", for runs that must last a few seconds.
        try FileManager.default.createDirectory(atPath: directory + "/tiny-fine", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: directory + "/tiny/model.onnx", toPath: directory + "/tiny-fine/model.onnx")
        try card.replacingOccurrences(of: "\"tiny\"", with: "\"tiny-fine\"").replacingOccurrences(of: "2.0", with: "0.5")
            .write(toFile: directory + "/tiny-fine/model.json", atomically: true, encoding: .utf8)
        return directory
    }

    /// A synthetic slide (cached per test process).
    static func syntheticSlide(width: Int = 4000, height: Int = 3000, tissue: Double = 0.45, seed: UInt64 = 1) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tessera-synthetic-\(width)x\(height)-\(Int(tissue * 100))-\(seed)-\(getpid()).tif").path
        if !FileManager.default.fileExists(atPath: path) {
            try SyntheticSlide.write(to: path, width: width, height: height, mpp: 0.5, tissueFraction: tissue, seed: seed)
        }
        return path
    }

    /// Waits for `process` to exit; one still running after `seconds` is killed and the test fails,
    /// so a hung child can never hang the suite.
    static func finish(_ process: Process, within seconds: Double = 120, sourceLocation: SourceLocation = #_sourceLocation) {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            Issue.record("\(process.arguments?.first ?? "process") still running after \(Int(seconds)) s; killed",
                         sourceLocation: sourceLocation)
        }
        process.waitUntilExit()
    }

    /// The built `tessera` binary (scripts/test.sh builds it before the tests run).
    static var binary: String? {
        for configuration in ["debug", "release"] {
            let path = root.appendingPathComponent(".build/\(configuration)/tessera").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }
}

extension Trait where Self == ConditionTrait {
    /// Skips a test (or suite) that runs the `tessera` binary when it has not been built.
    static var needsTesseraBinary: Self {
        .enabled(if: Support.binary != nil, "build the tessera binary first (scripts/test.sh does)")
    }

    /// Skips a test that starts a PostgreSQL server when its binaries are not installed.
    static var needsPostgres: Self {
        .enabled(if: PostgresTestServer.available, "PostgreSQL server binaries not installed (apt-get install postgresql)")
    }
}

extension Support {
    /// Runs the built `tessera` binary in `directory` and returns its exit status, standard output and error.
    static func tessera(_ arguments: [String], in directory: String? = nil, environment: [String: String] = [:],
                        within seconds: Double = 120) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary!)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let root = temporaryDirectory()
        FileManager.default.createFile(atPath: root + "/out", contents: nil)
        FileManager.default.createFile(atPath: root + "/err", contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: root + "/out")
        process.standardError = FileHandle(forWritingAtPath: root + "/err")
        try process.run()
        finish(process, within: seconds)
        return (process.terminationStatus, (try? String(contentsOfFile: root + "/out", encoding: .utf8)) ?? "",
                (try? String(contentsOfFile: root + "/err", encoding: .utf8)) ?? "")
    }

    /// A slide that records no microns per pixel: a synthetic slide copied to PPM by the `vips` command.
    static func slideWithoutMPP(seed: UInt64 = 41) throws -> String {
        let path = temporaryDirectory() + "/no-mpp.ppm"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/vips")
        process.arguments = ["copy", try syntheticSlide(width: 1500, height: 1000, seed: seed), path]
        try process.run()
        process.waitUntilExit()
        return path
    }

    /// Makes the card of model `name` in `models` say `classes` and `size`, keeping the rest.
    static func rewriteCard(_ models: String, _ name: String, size: Int) throws {
        let path = models + "/" + name + "/model.json"
        var card = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        var input = card["input"] as? [String: Any] ?? [:]
        input["size"] = size
        card["input"] = input
        try JSONSerialization.data(withJSONObject: card).write(to: URL(fileURLWithPath: path))
    }
}
