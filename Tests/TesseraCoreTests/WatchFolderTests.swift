import Foundation
import Testing
@testable import TesseraCore

/// The watch-folder daemon as users run it: a real `tessera watch` process, real files, real timing.
@Suite("Watch folder", .serialized, .enabled(if: Support.binary != nil, "build the tessera binary first (scripts/test.sh does)"))
struct WatchFolderTests {
    struct Daemon {
        let process: Process
        let root: String
        var input: String { root + "/in" }
        var output: String { root + "/out" }
        var data: String { root + "/data" }
    }

    func start(root: String, settle: Double = 2.5, poll: Double = 0.5) throws -> Daemon {
        let models = try Support.tinyModels()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Support.binary!)
        process.arguments = ["watch", root + "/in", "--out", root + "/out", "--data", root + "/data", "--model", "tiny",
                             "--settle", "\(settle)", "--poll", "\(poll)", "--move", "--threads", "2"]
        process.environment = ProcessInfo.processInfo.environment.merging(["TESSERA_MODELS": models, "CI": "1"]) { $1 }
        FileManager.default.createFile(atPath: root + "/watch.log", contents: nil)
        let log = FileHandle(forWritingAtPath: root + "/watch.log")
        log?.seekToEndOfFile()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        return Daemon(process: process, root: root)
    }

    func stop(_ daemon: Daemon) {
        if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGTERM) }
        daemon.process.waitUntilExit()
    }

    /// Polls `condition` every 0.2 s for up to `seconds`.
    func waitFor(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.2)
        }
        return try condition()
    }

    func jobCount(_ daemon: Daemon) -> Int {
        guard FileManager.default.fileExists(atPath: daemon.data + "/jobs.sqlite"),
              let store = try? DataDirectory.openStore(daemon.data) else { return 0 }
        return (try? store.jobs().count) ?? 0
    }

    @Test func slowWriterIsTakenOnceAndNeverEarly() throws {
        let daemon = try start(root: Support.temporaryDirectory())
        defer { stop(daemon) }
        let source = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 3000, height: 2000, seed: 11)))
        let target = daemon.input + "/slow.tif"
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input) })
        FileManager.default.createFile(atPath: target, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: target))
        let chunk = source.count / 4 + 1
        for offset in stride(from: 0, to: source.count, by: chunk) {
            handle.write(source[offset..<min(source.count, offset + chunk)])
            try handle.synchronize()
            // Pauses longer than the poll interval, shorter than the settle time.
            Thread.sleep(forTimeInterval: 1.2)
            #expect(jobCount(daemon) == 0, "no job while the file is still growing")
        }
        try handle.close()
        #expect(waitFor(60) { FileManager.default.fileExists(atPath: daemon.output + "/slow.tif/summary.json") })
        let store = try DataDirectory.openStore(daemon.data)
        let jobs = try store.jobs()
        #expect(jobs.count == 1 && jobs.first?.state == .done)
        #expect(jobs.first?.slide.size == source.count, "the job saw the complete file")
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input + "/done/slow.tif") })
    }

    @Test func corruptFileLandsInFailedAndTheDaemonGoesOn() throws {
        let daemon = try start(root: Support.temporaryDirectory(), settle: 1)
        defer { stop(daemon) }
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input) })
        try Data("not a slide at all".utf8).write(to: URL(fileURLWithPath: daemon.input + "/broken.svs"))
        try Data([0x49, 0x49, 0x2A, 0x00, 0x08, 0, 0, 0, 1, 2]).write(to: URL(fileURLWithPath: daemon.input + "/truncated.tif"))
        // A file still being written under a temporary name is left alone until renamed.
        let good = try Support.syntheticSlide(width: 1500, height: 1000, seed: 12)
        try FileManager.default.copyItem(atPath: good, toPath: daemon.input + "/good.tif.part")
        #expect(waitFor(30) { FileManager.default.fileExists(atPath: daemon.input + "/failed/broken.svs.reason.txt") })
        #expect(waitFor(30) { FileManager.default.fileExists(atPath: daemon.input + "/failed/truncated.tif.reason.txt") })
        let reason = try String(contentsOfFile: daemon.input + "/failed/broken.svs.reason.txt", encoding: .utf8)
        #expect(reason.contains("not a slide Tessera can read"))
        Thread.sleep(forTimeInterval: 1.5)
        #expect(jobCount(daemon) == 0, "the .part file was not taken")
        try FileManager.default.moveItem(atPath: daemon.input + "/good.tif.part", toPath: daemon.input + "/good.tif")
        #expect(waitFor(60) { FileManager.default.fileExists(atPath: daemon.output + "/good.tif/summary.json") })
        #expect(daemon.process.isRunning)
    }

    @Test func restartMidJobResumesWithoutRepeating() throws {
        let root = Support.temporaryDirectory()
        var daemon = try start(root: root, settle: 0.5)
        let slide = try Support.syntheticSlide(width: 8000, height: 6000, tissue: 0.5, seed: 13)
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input) })
        try FileManager.default.copyItem(atPath: slide, toPath: daemon.input + "/big.tif.tmp")
        try FileManager.default.moveItem(atPath: daemon.input + "/big.tif.tmp", toPath: daemon.input + "/big.tif")
        // Wait until the job has checkpointed some tiles, then stop the daemon (SIGTERM) mid-job.
        let progressed = waitFor(60) {
            guard let store = try? DataDirectory.openStore(daemon.data), let job = try? store.jobs().first else { return false }
            return job.tilesDone > 0 && job.state == .running
        }
        #expect(progressed)
        stop(daemon)
        #expect(daemon.process.terminationStatus == 0, "SIGTERM exits cleanly")
        let store = try DataDirectory.openStore(daemon.data)
        let interrupted = try #require(try store.jobs().first)
        #expect(interrupted.state == .queued && interrupted.tilesDone > 0, "returned to the queue with its progress")
        daemon = try start(root: root, settle: 0.5)
        defer { stop(daemon) }
        #expect(waitFor(90) { FileManager.default.fileExists(atPath: daemon.output + "/big.tif/summary.json") })
        let jobs = try store.jobs()
        #expect(jobs.count == 1 && jobs[0].state == .done)
        #expect(try store.events(of: jobs[0].id).filter { $0.message == "done" }.count == 1)
    }

    @Test func fiftySlidesDroppedAtOnceAreAllProcessed() throws {
        let daemon = try start(root: Support.temporaryDirectory(), settle: 1)
        defer { stop(daemon) }
        let staging = Support.temporaryDirectory()
        for index in 0..<50 {
            try SyntheticSlide.write(to: "\(staging)/slide-\(index).tif", width: 800, height: 600, mpp: 0.5, tissueFraction: 0.5,
                                     seed: UInt64(100 + index))
        }
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input) })
        for index in 0..<50 {
            try FileManager.default.moveItem(atPath: "\(staging)/slide-\(index).tif", toPath: "\(daemon.input)/slide-\(index).tif")
        }
        let all = waitFor(180) {
            (0..<50).allSatisfy { FileManager.default.fileExists(atPath: "\(daemon.output)/slide-\($0).tif/summary.json") }
        }
        #expect(all)
        let store = try DataDirectory.openStore(daemon.data)
        #expect(try store.counts()[.done] == 50)
        #expect(waitFor(10) { (try? FileManager.default.contentsOfDirectory(atPath: daemon.input + "/done").count) == 50 })
    }
}
