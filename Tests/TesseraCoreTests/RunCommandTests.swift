import Foundation
import Testing
@testable import TesseraCore

/// `tessera run` as users type it: the real binary, real working directories.
@Suite("Run command", .serialized, .needsTesseraBinary)
struct RunCommandTests {
    @Test func twoWorkingDirectoriesFillBothOutFolders() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        let slide = try Support.syntheticSlide(width: 1500, height: 1000, seed: 61)
        for project in ["p1", "p2"] {
            try FileManager.default.createDirectory(atPath: root + "/" + project, withIntermediateDirectories: true)
            let result = try Support.tessera(["run", slide, "--model", "tiny", "--data", root + "/data", "--out", "results"],
                                             in: root + "/" + project, environment: ["TESSERA_MODELS": models])
            #expect(result.status == 0, "\(result.err)")
            let folder = root + "/" + project + "/results/" + (slide as NSString).lastPathComponent
            #expect(FileManager.default.fileExists(atPath: folder + "/summary.json"), "results in \(project)")
            #expect(FileManager.default.fileExists(atPath: folder + "/overlay.png"))
            #expect(result.out.contains("-> " + folder), "the report names the absolute folder: \(result.out)")
        }
        #expect(try DataDirectory.openStore(root + "/data").jobs().count == 1, "the second run reused the job")
    }

    @Test func aFixedModelCardRerunsTheFailedJob() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        let slide = try Support.syntheticSlide(width: 1500, height: 1000, seed: 62)
        let arguments = ["run", slide, "--model", "tiny", "--data", root + "/data", "--out", root + "/out"]
        try Support.rewriteCard(models, "tiny", size: 2)
        let broken = try Support.tessera(arguments, environment: ["TESSERA_MODELS": models])
        #expect(broken.status == 2 && broken.out.contains("failed"))
        let again = try Support.tessera(arguments, environment: ["TESSERA_MODELS": models])
        #expect(again.status == 2 && again.out.contains("--retry-failed"), "an old failure says how to run it again: \(again.out)")
        try Support.rewriteCard(models, "tiny", size: 32)
        let fixed = try Support.tessera(arguments, environment: ["TESSERA_MODELS": models])
        #expect(fixed.status == 0 && fixed.out.contains(" done "), "\(fixed.out) \(fixed.err)")
    }

    @Test func retryFailedRunsAFailedJobAgain() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        let slide = try Support.syntheticSlide(width: 1500, height: 1000, seed: 63)
        let arguments = ["run", slide, "--model", "tiny", "--data", root + "/data", "--out", root + "/out", "--json"]
        let store = try DataDirectory.openStore(root + "/data")
        // A job of this slide, model and parameters failed earlier (say its file was unreadable then).
        let intake = SlideIntake(store: store, dataDirectory: root + "/data", modelsDirectory: models, interface: .commandLine)
        _ = try intake.submit(.init(path: slide, model: "tiny"))
        let (_, lease) = try #require(try store.claim(owner: "earlier"))
        try store.fail(lease, reason: JobFailure(.readFailed, "cannot read pixels").stored, permanent: true)
        let old = try Support.tessera(arguments, environment: ["TESSERA_MODELS": models])
        #expect(old.status == 2 && old.out.contains("\"error_code\":\"read_failed\""), "\(old.out)")
        let retried = try Support.tessera(arguments + ["--retry-failed"], environment: ["TESSERA_MODELS": models])
        #expect(retried.status == 0 && retried.out.contains("\"state\":\"done\""), "\(retried.out)")
        #expect(try store.jobs().count == 1)
    }

    @Test func badPlacesAreOneLineErrors() throws {
        let root = Support.temporaryDirectory()
        try "x".write(toFile: root + "/file", atomically: true, encoding: .utf8)
        let slide = try Support.syntheticSlide(width: 1500, height: 1000, seed: 64)
        let data = try Support.tessera(["run", slide, "--data", root + "/file", "--out", root + "/out"])
        #expect(data.status == 1 && data.err.contains("data folder") && !data.err.contains("NSCocoaErrorDomain"), "\(data.err)")
        #expect(data.err.split(separator: "\n").count == 1)
        let watch = try Support.tessera(["watch", root + "/missing", "--out", root + "/out", "--data", root + "/data"])
        #expect(watch.status == 1 && watch.err.contains("no such folder"), "\(watch.err)")
        #expect(!FileManager.default.fileExists(atPath: root + "/missing"), "a missing IN folder is not created")
    }

    @Test func progressLinesWithoutATerminal() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        // Large enough to take well over a second on a fast CPU: a progress line every 0.2 s, and the
        // rate appears once half a second has passed.
        let slide = try Support.syntheticSlide(width: 6000, height: 4000, seed: 65)
        let result = try Support.tessera(["run", slide, "--model", "tiny-fine", "--threads", "1", "--data", root + "/data",
                                          "--out", root + "/out", "--progress-seconds", "0.2"],
                                         environment: ["TESSERA_MODELS": models])
        #expect(result.status == 0)
        let lines = result.err.split(separator: "\n").filter { $0.contains(" tiles (") }
        #expect(result.err.contains("tiles/s, ETA"), "a line with the rate: \(result.err)")
        #expect(lines.count >= 2 && lines.allSatisfy { $0.hasPrefix("tessera: ") && !$0.contains("\u{1B}") }, "\(result.err)")
    }

    @Test func ctrlCSaysHowToResume() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        let slide = try Support.syntheticSlide(width: 8000, height: 6000, tissue: 0.5, seed: 13)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Support.binary!)
        process.arguments = ["run", slide, "--model", "tiny-fine", "--threads", "1", "--data", root + "/data", "--out", root + "/out"]
        process.environment = ProcessInfo.processInfo.environment.merging(["TESSERA_MODELS": models]) { $1 }
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let store = try DataDirectory.openStore(root + "/data")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, (try? store.jobs().first?.tilesDone ?? 0) ?? 0 == 0 { Thread.sleep(forTimeInterval: 0.05) }
        kill(process.processIdentifier, SIGINT)
        Support.finish(process, within: 30)
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 130 && text.contains("interrupted; run the same command again to resume"), "\(text)")
        #expect(try store.jobs().first?.state == .queued, "the job went back to the queue with its checkpoints")
    }
}
