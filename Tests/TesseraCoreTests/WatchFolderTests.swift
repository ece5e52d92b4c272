import Foundation
import Testing
@testable import TesseraCore

/// The watch-folder daemon as users run it: a real `tessera watch` process, real files, real timing.
@Suite("Watch folder", .serialized, .needsTesseraBinary)
struct WatchFolderTests {
    struct Daemon {
        let process: Process
        let root: String
        var input: String { root + "/in" }
        var output: String { root + "/out" }
        var data: String { root + "/data" }
    }

    func start(root: String, settle: Double = 2.5, poll: Double = 0.5, model: String = "tiny", threads: Int = 2) throws -> Daemon {
        let models = try Support.tinyModels()
        try FileManager.default.createDirectory(atPath: root + "/in", withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Support.binary!)
        process.arguments = ["watch", root + "/in", "--out", root + "/out", "--data", root + "/data", "--model", model,
                             "--settle", "\(settle)", "--poll", "\(poll)", "--move", "--threads", "\(threads)"]
        process.environment = ProcessInfo.processInfo.environment.merging(["TESSERA_MODELS": models, "CI": "1"]) { $1 }
        _ = FileManager.default.createFile(atPath: root + "/watch.log", contents: nil)
        let log = FileHandle(forWritingAtPath: root + "/watch.log")
        log?.seekToEndOfFile()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        return Daemon(process: process, root: root)
    }

    /// SIGTERM, as systemd sends it; a daemon still running 60 s later is killed and the test fails.
    func stop(_ daemon: Daemon) {
        if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(60)
        while daemon.process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if daemon.process.isRunning {
            kill(daemon.process.processIdentifier, SIGKILL)
            let log = (try? String(contentsOfFile: daemon.root + "/watch.log", encoding: .utf8)) ?? ""
            Issue.record("tessera watch ignored SIGTERM for 60 s; log:\n\(log.suffix(2000))")
        }
        daemon.process.waitUntilExit()
    }

    /// Polls `condition` every `interval` seconds for up to `seconds`.
    func waitFor(_ seconds: Double, every interval: Double = 0.2, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: interval)
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
        _ = FileManager.default.createFile(atPath: target, contents: nil)
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
        #expect(waitFor(10) { (try? store.jobs().first?.state) == .done })
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
        // One thread and 0.5 um/px tiles of a 32 px network: thousands of tiles, a job of a few seconds.
        var daemon = try start(root: root, settle: 0.5, model: "tiny-fine", threads: 1)
        let slide = try Support.syntheticSlide(width: 8000, height: 6000, tissue: 0.5, seed: 13)
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input) })
        try FileManager.default.copyItem(atPath: slide, toPath: daemon.input + "/big.tif.tmp")
        try FileManager.default.moveItem(atPath: daemon.input + "/big.tif.tmp", toPath: daemon.input + "/big.tif")
        // Wait until the job has checkpointed some tiles, then stop the daemon (SIGTERM) mid-job.
        let progressed = waitFor(60, every: 0.02) {
            guard let store = try? DataDirectory.openStore(daemon.data), let job = try? store.jobs().first else { return false }
            return job.tilesDone > 0 && job.state == .running
        }
        try #require(progressed, "the job was seen running with checkpointed tiles")
        stop(daemon)
        #expect(daemon.process.terminationStatus == 0, "SIGTERM exits cleanly")
        let store = try DataDirectory.openStore(daemon.data)
        let interrupted = try #require(try store.jobs().first)
        #expect(interrupted.state == .queued && interrupted.tilesDone > 0, "returned to the queue with its progress")
        daemon = try start(root: root, settle: 0.5, model: "tiny-fine")
        defer { stop(daemon) }
        // Outputs are renamed into place just before the job is marked done: wait for both.
        #expect(waitFor(90) { (try? store.jobs().first?.state) == .done })
        #expect(FileManager.default.fileExists(atPath: daemon.output + "/big.tif/summary.json"))
        let jobs = try store.jobs()
        #expect(jobs.count == 1 && jobs[0].state == .done)
        #expect(try store.events(of: jobs[0].id).filter { $0.message == "done" }.count == 1)
    }

    @Test func sameContentUnderTwoNamesIsAnalysedOnceAndDeliveredTwice() throws {
        let daemon = try start(root: Support.temporaryDirectory(), settle: 0.5)
        defer { stop(daemon) }
        let slide = try Support.syntheticSlide(width: 1500, height: 1000, seed: 14)
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input) })
        try FileManager.default.copyItem(atPath: slide, toPath: daemon.input + "/first.tif")
        #expect(waitFor(60) { FileManager.default.fileExists(atPath: daemon.output + "/first.tif/summary.json") })
        try FileManager.default.copyItem(atPath: slide, toPath: daemon.input + "/second copy.tif")
        #expect(waitFor(60) { FileManager.default.fileExists(atPath: daemon.output + "/second_copy.tif/summary.json") })
        let store = try DataDirectory.openStore(daemon.data)
        #expect(try store.jobs().count == 1, "one analysis for one content")
        for file in ["tiles.csv", "annotations.geojson"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: daemon.output + "/first.tif/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: daemon.output + "/second_copy.tif/" + file))
            #expect(a == b && !a.isEmpty)
        }
        let hidden = try FileManager.default.contentsOfDirectory(atPath: daemon.output).filter { $0.hasPrefix(".") }
        #expect(hidden.isEmpty, "no temporary copies left: \(hidden)")
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input + "/done/second copy.tif") })
    }

    @Test func sigtermTheMomentItStartsStillStopsIt() throws {
        // A supervisor may stop the daemon before it has set up its signal handling; the
        // signal must not be lost (the process would then run until killed).
        for delay in [0.0, 0.05, 0.3] {
            let daemon = try start(root: Support.temporaryDirectory())
            Thread.sleep(forTimeInterval: delay)
            kill(daemon.process.processIdentifier, SIGTERM)
            #expect(waitFor(20, every: 0.05) { !daemon.process.isRunning }, "stopped when signalled after \(delay) s")
            stop(daemon)
        }
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
        // About 100 s alone on 2 cores; the suites running beside it in a full run can double that.
        let all = waitFor(300) {
            (0..<50).allSatisfy { FileManager.default.fileExists(atPath: "\(daemon.output)/slide-\($0).tif/summary.json") }
        }
        #expect(all)
        let store = try DataDirectory.openStore(daemon.data)
        #expect(waitFor(10) { (try? store.counts()[.done]) == 50 })
        #expect(waitFor(10) { (try? FileManager.default.contentsOfDirectory(atPath: daemon.input + "/done").count) == 50 })
    }

    /// Every folder OUT holds now, with the job of its summary.json (nil while it has none).
    func outFolders(_ daemon: Daemon) -> [String: Int?] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: daemon.output)) ?? []
        var result: [String: Int?] = [:]
        for name in names where !name.hasPrefix(".") && !name.hasSuffix(".reason.txt") {
            result[name] = ResultFolders.job(in: daemon.output + "/" + name)
        }
        return result
    }

    @Test func scannerPausingLongerThanSettleMakesOneJobOfTheWholeFile() throws {
        let settle = 1.0
        let daemon = try start(root: Support.temporaryDirectory(), settle: settle, poll: 0.25)
        defer { stop(daemon) }
        let source = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 3000, height: 2000, seed: 15)))
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input) })
        let target = daemon.input + "/paused.tif"
        _ = FileManager.default.createFile(atPath: target, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: target))
        handle.write(source.prefix(source.count / 2))
        try handle.synchronize()
        // The scanner pauses for twice the settle time: the half file has settled, but is not complete.
        let pauseEnd = Date().addingTimeInterval(2 * settle + 0.5)
        var seenDuringPause: [String: Int?] = [:]
        while Date() < pauseEnd {
            seenDuringPause.merge(outFolders(daemon)) { $1 }
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(jobCount(daemon) == 0, "no job of the half file")
        #expect(seenDuringPause.isEmpty, "nothing in OUT while the file is half written: \(seenDuringPause)")
        #expect(FileManager.default.fileExists(atPath: target), "the half file stays in IN (not filed into failed/)")
        handle.write(source.suffix(from: source.count / 2))
        try handle.close()
        var seen: [String: Int?] = [:]
        let delivered = waitFor(60, every: 0.05) {
            seen.merge(outFolders(daemon)) { $1 }
            return FileManager.default.fileExists(atPath: daemon.output + "/paused.tif/summary.json")
        }
        #expect(delivered)
        let store = try DataDirectory.openStore(daemon.data)
        let jobs = try store.jobs()
        #expect(jobs.count == 1 && jobs.first?.state == .done, "exactly one job: \(jobs.map { ($0.id, $0.state) })")
        #expect(jobs.first?.slide.size == source.count, "the job saw the whole file")
        #expect(Set(seen.keys) == ["paused.tif"], "OUT only ever held the one result folder: \(seen)")
        #expect(seen["paused.tif"] == .some(jobs.first?.id.rawValue), "and it is the whole file's job")
        let log = (try? String(contentsOfFile: daemon.root + "/watch.log", encoding: .utf8)) ?? ""
        #expect(log.components(separatedBy: "waiting for the rest of the file").count - 1 == 1, "logged once, not every scan:\n\(log.suffix(3000))")
    }

    @Test func fileChangedWhileAnalysedIsAbandonedAndTakenAgain() throws {
        let root = Support.temporaryDirectory()
        // One thread and 0.5 um/px tiles of a 32 px network: a job of several seconds.
        let daemon = try start(root: root, settle: 0.5, model: "tiny-fine", threads: 1)
        defer { stop(daemon) }
        let first = try Support.syntheticSlide(width: 8000, height: 6000, tissue: 0.5, seed: 13)
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: daemon.input) })
        try FileManager.default.copyItem(atPath: first, toPath: daemon.input + "/rescanned.tif.tmp")
        try FileManager.default.moveItem(atPath: daemon.input + "/rescanned.tif.tmp", toPath: daemon.input + "/rescanned.tif")
        let running = waitFor(60, every: 0.02) {
            guard let store = try? DataDirectory.openStore(daemon.data), let job = try? store.jobs().first else { return false }
            return job.tilesDone > 0 && job.state == .running
        }
        try #require(running, "the first job was seen running")
        // The scanner writes more into the file while the first job runs (the bytes the job reads stay
        // readable, so only the watch folder can tell that its results would be of another file).
        let handle = try #require(FileHandle(forWritingAtPath: daemon.input + "/rescanned.tif"))
        try handle.seekToEnd()
        handle.write(Data(repeating: 0, count: 65_536))
        try handle.close()
        let changedSize = try Data(contentsOf: URL(fileURLWithPath: first)).count + 65_536
        var seen: [String: Int?] = [:]
        let delivered = waitFor(90, every: 0.05) {
            seen.merge(outFolders(daemon)) { $1 }
            return FileManager.default.fileExists(atPath: daemon.output + "/rescanned.tif/summary.json")
        }
        #expect(delivered)
        let store = try DataDirectory.openStore(daemon.data)
        let jobs = try store.jobs().sorted { $0.id.rawValue < $1.id.rawValue }
        #expect(jobs.count == 2, "\(jobs.map { ($0.id, $0.state) })")
        guard jobs.count == 2 else { return }
        #expect(jobs[0].state == .cancelled, "the first job was abandoned: \(jobs[0].state) \(jobs[0].error ?? "")")
        #expect(jobs[1].state == .done && jobs[1].slide.size == changedSize, "the changed file was analysed")
        #expect(Set(seen.keys) == ["rescanned.tif"] && seen["rescanned.tif"] == .some(jobs[1].id.rawValue),
                "OUT never held the abandoned job's results: \(seen)")
    }
}
