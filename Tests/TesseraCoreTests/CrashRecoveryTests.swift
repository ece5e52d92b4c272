import Foundation
import Testing
@testable import TesseraCore

/// kill -9 of a real `tessera run` process at random points, then a restart: the job ends done
/// exactly once with the same outputs as an uninterrupted run, and the database stays sound.
@Suite("Crash recovery", .serialized)
struct CrashRecoveryTests {
    func run(_ binary: String, _ arguments: [String], environment: [String: String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    @Test(.enabled(if: Support.binary != nil, "build the tessera binary first (scripts/test.sh does)"))
    func killedRunsResumeToIdenticalOutputs() throws {
        let binary = try #require(Support.binary)
        let models = try Support.tinyModels()
        let slides = [try Support.syntheticSlide(width: 6000, height: 4000, tissue: 0.5, seed: 7),
                      try Support.syntheticSlide(width: 3000, height: 2000, tissue: 0.5, seed: 8)]
        let environment = ["TESSERA_MODELS": models, "CI": "1"]
        func arguments(_ root: String) -> [String] {
            ["run"] + slides + ["--model", "tiny", "--out", root + "/out", "--data", root + "/data", "--threads", "2"]
        }
        let reference = Support.temporaryDirectory()
        let clean = try run(binary, arguments(reference), environment: environment)
        Support.finish(clean)
        #expect(clean.terminationStatus == 0)

        let crashed = Support.temporaryDirectory()
        var generator = SystemRandomNumberGenerator()
        var kills = 0
        for _ in 0..<6 {
            let process = try run(binary, arguments(crashed), environment: environment)
            Thread.sleep(forTimeInterval: Double.random(in: 0.3...2.0, using: &generator))
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                kills += 1
            }
            Support.finish(process)
        }
        let final = try run(binary, arguments(crashed), environment: environment)
        Support.finish(final)
        #expect(final.terminationStatus == 0)
        #expect(kills > 0)

        let store = try DataDirectory.openStore(crashed + "/data")
        #expect(try store.integrityCheck() == "ok")
        let jobs = try store.jobs()
        #expect(jobs.count == 2 && jobs.allSatisfy { $0.state == .done })
        for job in jobs {
            #expect(try store.events(of: job.id).filter { $0.message == "done" }.count == 1, "done exactly once")
        }
        for slide in slides {
            let name = (slide as NSString).lastPathComponent
            for file in ["tiles.csv", "annotations.geojson", "heatmap.png", "overlay.png"] {
                let a = try Data(contentsOf: URL(fileURLWithPath: "\(reference)/out/\(name)/\(file)"))
                let b = try Data(contentsOf: URL(fileURLWithPath: "\(crashed)/out/\(name)/\(file)"))
                #expect(a == b, "\(name)/\(file) identical after \(kills) kills")
            }
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: crashed + "/out").filter { $0.hasPrefix(".") }
            #expect(leftovers.isEmpty, "no partial output folders: \(leftovers)")
        }
    }
}
