import Foundation
import Logging
import Testing
@testable import TesseraCore

/// Truncated and oversized slides through the real intake, queue and runner: never a plain `done`
/// with other results than the whole file's, never minutes of decoding a header's promise.
@Suite("Slide completeness and size", .serialized)
struct CompletenessTests {
    static let logger: Logger = {
        var logger = Logger(label: "tests")
        logger.logLevel = .critical
        return logger
    }()

    func runOptions(models: String, root: String) -> RunOptions {
        var options = RunOptions()
        options.model = "tiny"
        options.modelsDirectory = models
        options.dataDirectory = root + "/data"
        options.outputDirectory = root + "/out"
        options.threads = 2
        return options
    }

    /// A TIFF header of a few KB declaring `width` x `height` px of JPEG tiles (65,520 px square,
    /// every tile one byte at offset 8): what a hostile upload looks like.
    static func hugeHeader(width: Int = 1_000_000, height: Int = 1_000_000) -> Data {
        let tile = 65_520
        let tiles = ((width + tile - 1) / tile) * ((height + tile - 1) / tile)
        var bytes: [UInt8] = [0x49, 0x49, 0x2A, 0x00, 8, 0, 0, 0]
        func int(_ value: Int, _ size: Int) { for i in 0..<size { bytes.append(UInt8((value >> (8 * i)) & 0xFF)) } }
        let entries: [(Int, Int, Int, Int)] = [  // tag, type, count, value (or offset)
            (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 7), (262, 3, 1, 2), (277, 3, 1, 3),
            (322, 3, 1, tile), (323, 3, 1, tile), (324, 4, tiles, 0), (325, 4, tiles, 0),
        ]
        let arrays = 8 + 2 + entries.count * 12 + 4
        int(entries.count, 2)
        for (index, (tag, type, count, value)) in entries.enumerated() {
            int(tag, 2); int(type, 2); int(count, 4)
            int(index == 8 ? arrays : index == 9 ? arrays + 4 * tiles : value, 4)
        }
        int(0, 4)
        for _ in 0..<tiles { int(8, 4) }
        for _ in 0..<tiles { int(1, 4) }
        bytes += [UInt8](repeating: 0, count: 2048)
        return Data(bytes)
    }

    /// Copies of `source` cut at about ten offsets (and one that only loses bytes nothing points
    /// at), run with the intact copy: each is either refused as incomplete, or done with the intact
    /// slide's very tiles.csv.
    func checkTruncatedCorpus(source: String) throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        let ext = (source as NSString).pathExtension
        let data = try Data(contentsOf: URL(fileURLWithPath: source))
        let folder = root + "/slides"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let intact = folder + "/intact.\(ext)"
        try data.write(to: URL(fileURLWithPath: intact))
        let fractions = [0.03, 0.15, 0.3, 0.45, 0.55, 0.65, 0.75, 0.85, 0.93, 0.98, 0.999]
        var cuts = fractions.map { Int(Double(data.count) * $0) } + [data.count - 1]
        cuts = Array(Set(cuts)).sorted()
        var paths = [intact]
        for length in cuts {
            let path = folder + "/cut-\(length).\(ext)"
            try data.prefix(length).write(to: URL(fileURLWithPath: path))
            paths.append(path)
        }
        // Trailing bytes nothing points at, then cut inside them: still the whole slide.
        let padded = folder + "/padded.\(ext)"
        try (data + Data(repeating: 0, count: 1000)).write(to: URL(fileURLWithPath: padded))
        paths.append(padded)

        let reports = try SlideRun.run(paths: paths, options: runOptions(models: models, root: root), logger: Self.logger)
        #expect(reports.count == paths.count)
        let intactReport = try #require(reports.first)
        #expect(intactReport.state == "done", "\(intactReport.error ?? "")")
        let expected = try Data(contentsOf: URL(fileURLWithPath: try #require(intactReport.outputDir) + "/tiles.csv"))
        #expect(!expected.isEmpty)
        var refused = 0
        for (path, report) in zip(paths.dropFirst(), reports.dropFirst()) {
            let name = (path as NSString).lastPathComponent
            if report.state == "done" {
                let tiles = try Data(contentsOf: URL(fileURLWithPath: try #require(report.outputDir) + "/tiles.csv"))
                #expect(tiles == expected, "\(name) ended done with other tiles than the intact slide")
            } else {
                #expect(report.state == "failed" && report.errorCode == "incomplete_slide",
                        "\(name): \(report.state) \(report.errorCode ?? "-") \(report.error ?? "")")
                #expect(report.error?.contains("truncated") == true || report.error?.contains("damaged") == true, "\(report.error ?? "")")
                refused += 1
            }
        }
        #expect(refused == cuts.count, "every real cut is refused")
        #expect(reports.last?.state == "done", "the padded copy is whole")
    }

    @Test func truncatedGeneratedPyramidIsNeverDoneWithOtherResults() throws {
        try checkTruncatedCorpus(source: try Support.syntheticSlide(width: 3000, height: 2000, seed: 61))
    }

    @Test(.enabled(if: Support.sharedAvailable, "../shared/data is absent: the truncated CMU-1-Small-Region.svs corpus is skipped"))
    func truncatedAperioSlideIsNeverDoneWithOtherResults() throws {
        try checkTruncatedCorpus(source: Support.shared.appendingPathComponent("slides/CMU-1-Small-Region.svs").path)
    }

    @Test func hugeDeclaredSizeIsRefusedAtUploadAndByRun() throws {
        let bomb = Self.hugeHeader()
        #expect(bomb.count < 8_000, "a few KB")
        let (server, client, root) = try APITests.startServer(workers: 0)
        defer { server.stop() }
        let response = try client.call("POST", "/v1/slides?filename=huge.tif", body: bomb)
        let object = (try? JSONSerialization.jsonObject(with: response.body)) as? [String: Any]
        let error = object?["error"] as? [String: Any]
        #expect(response.status == 422 && error?["code"] as? String == "slide_too_large", "\(response.status) \(String(decoding: response.body, as: UTF8.self))")
        #expect((error?["message"] as? String)?.contains("declares 1000000 x 1000000 px, over the 40000000000-pixel limit (--max-slide-pixels)") == true)
        #expect(try DataDirectory.openStore(root + "/data").jobs().isEmpty, "nothing queued")
        let slides = (try? FileManager.default.contentsOfDirectory(atPath: root + "/data/slides")) ?? []
        #expect(slides.isEmpty, "nothing stored")

        let runRoot = Support.temporaryDirectory()
        let path = runRoot + "/huge.tif"
        try bomb.write(to: URL(fileURLWithPath: path))
        let reports = try SlideRun.run(paths: [path], options: runOptions(models: try Support.tinyModels(), root: runRoot), logger: Self.logger)
        #expect(reports.first?.state == "failed" && reports.first?.errorCode == "slide_too_large", "\(reports)")
    }

    /// A worker on the queue of `root`, as `serve` and `watch` build it.
    func runner(root: String, models: String) throws -> (any JobQueue, JobRunner) {
        let store = try DataDirectory.openStore(root + "/data")
        let runner = JobRunner(store: store, models: ModelProvider(directory: models),
                               configuration: WorkerConfiguration(threads: 2, resultsDirectory: root + "/data/outputs"), logger: Self.logger)
        return (store, runner)
    }

    static func peakRSSBytes() -> Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return usage.ru_maxrss * 1024
    }

    @Test func hugeSlideQueuedByPathFailsFastWithoutMemory() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        let path = root + "/huge.tif"
        try Self.hugeHeader().write(to: URL(fileURLWithPath: path))
        let (store, runner) = try runner(root: root, models: models)
        let intake = SlideIntake(store: store, dataDirectory: root + "/data", modelsDirectory: models, interface: .commandLine)
        let (_, identity) = try intake.model("tiny")
        // Queued by path, past the intake (an older Tessera, a hand-made row, another replica).
        let stored = StoredSlide(sha256: String(repeating: "a", count: 64), path: path, originalName: "huge.tif", size: 4000)
        _ = try store.enqueue(slide: stored, model: identity.identifier,
                              parameters: AnalysisParameters(mpp: 2.0, slideMPP: 0.5).canonicalJSON, idempotencyKey: nil)
        let before = Self.peakRSSBytes()
        let started = Date()
        let (job, outcome) = try #require(try runner.runNext())
        let seconds = Date().timeIntervalSince(started)
        guard case .failed(let failure) = outcome else {
            Issue.record("expected a failure, got \(outcome)")
            return
        }
        #expect(failure.code == .slideTooLarge && !failure.transient, "\(failure)")
        #expect(seconds < 10, "fails fast: \(seconds) s")
        #expect(Self.peakRSSBytes() - before < 300_000_000, "no big allocation")
        let final = try store.job(job.id)
        #expect(final.state == .failed && final.attempts == 1, "permanent: not retried")
        #expect(final.error?.hasPrefix("[slide_too_large]") == true, "\(final.error ?? "")")
        #expect(try runner.runNext() == nil, "nothing left to run")
    }

    @Test func slideCutAfterIntakeFailsItsJobAsIncomplete() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        let path = root + "/later-cut.tif"
        try FileManager.default.copyItem(atPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 62), toPath: path)
        let (store, runner) = try runner(root: root, models: models)
        let intake = SlideIntake(store: store, dataDirectory: root + "/data", modelsDirectory: models, interface: .commandLine)
        let receipt = try intake.submit(.init(path: path, model: "tiny"))
        // The file is cut short after it was queued (a copy that was still running, a full disk).
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.truncate(atOffset: UInt64(receipt.job.slide.size * 2 / 3))
        try handle.close()
        let (_, outcome) = try #require(try runner.runNext())
        guard case .failed(let failure) = outcome else {
            Issue.record("expected a failure, got \(outcome)")
            return
        }
        #expect(failure.code == .incompleteSlide && !failure.transient, "\(failure)")
        #expect(failure.message.contains("later-cut.tif: incomplete slide (truncated"), "\(failure.message)")
        let final = try store.job(receipt.job.id)
        #expect(final.state == .failed && final.attempts == 1)
        #expect(final.outputDirectory == nil)
    }
}

extension JobOutcome: CustomStringConvertible {
    public var description: String {
        switch self {
        case .done(let directory, _): return "done(\(directory))"
        case .failed(let failure): return "failed(\(failure.stored))"
        case .leaseLost: return "leaseLost"
        case .stopped: return "stopped"
        case .cancelled(let reason): return "cancelled(\(reason))"
        }
    }
}
