import ArgumentParser
import Foundation
import Logging
import TesseraCore

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Analyse slides with a model through the embedded job queue; writes one output folder per slide.")

    @Argument(help: "Slide files.")
    var slides: [String]

    @Option(help: "Model name under models/ or a path to an .onnx file.")
    var model = ModelCatalog.defaultModel

    @Option(help: "Folder for the results (one sub-folder per slide).")
    var out = "out"

    @Option(help: "Data folder holding the job database (default: $TESSERA_DATA or ~/.local/share/tessera).")
    var data = DataDirectory.defaultPath

    @Option(help: "Job queue URL, e.g. postgres://user@host:5432/tessera, shared by worker replicas (default: $TESSERA_QUEUE, else SQLite in the data folder).")
    var queue: String?

    @Option(help: "Cores to use.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Patch microns per pixel (default: the model's).")
    var mpp: Double?

    @Option(name: .customLong("slide-mpp"), help: "Microns per pixel of slides that do not record it.")
    var slideMPP: Double?

    @Option(name: .customLong("min-tissue"), help: "Minimum tissue fraction of a tile.")
    var minTissue = 0.5

    @Flag(help: "Also write per-tile embeddings (penultimate-layer features).")
    var embeddings = false

    @Flag(help: "Print one JSON object per slide.")
    var json = false

    @Flag(help: "Log what the worker does to standard error.")
    var verbose = false

    func run() throws {
        var options = RunOptions()
        options.model = model
        options.outputDirectory = out
        options.dataDirectory = data
        options.queue = queue ?? DataDirectory.defaultQueue
        options.threads = max(1, threads)
        options.parameters = AnalysisParameters(mpp: mpp, slideMPP: slideMPP, minTissue: minTissue, embeddings: embeddings)
        var logger = Logger(label: "tessera.run")
        logger.logLevel = verbose ? .info : .error
        let bar = ProgressBar.forStandardError()
        let reports: [RunReport]
        var progress: (@Sendable (SlideJob, Int, Int) -> Void)?
        if let bar {
            progress = { job, done, total in bar.update(job.slide.originalName, done, total) }
        }
        do {
            reports = try SlideRun.run(paths: slides, options: options, logger: logger, progress: progress)
        } catch {
            bar?.finish()
            printError("\(error)")
            throw ExitCode.failure
        }
        bar?.finish()
        for report in reports {
            if json {
                print(JSONOutput.line(report))
            } else {
                let detail = report.state == "done"
                    ? "\(report.tilesTissue ?? 0) tissue tiles" + (report.tilesPerSecond.map { String(format: ", %.0f tiles/s", $0) } ?? "")
                        + " -> \(report.outputDir ?? "-")"
                    : (report.error ?? "")
                print("\(report.slide): \(report.state) \(detail)")
            }
        }
        if reports.contains(where: { $0.state != "done" }) { throw ExitCode(2) }
    }
}

/// A one-line progress bar on a terminal (tiles/s, ETA); absent in CI or when stderr is not a TTY.
final class ProgressBar: @unchecked Sendable {
    // @unchecked: state guarded by `lock`.
    private let lock = NSLock()
    private var started = Date()
    private var current = ""
    private var lastDraw = Date.distantPast

    static func forStandardError() -> ProgressBar? {
        guard isatty(STDERR_FILENO) == 1, ProcessInfo.processInfo.environment["CI"] == nil else { return nil }
        return ProgressBar()
    }

    func update(_ name: String, _ done: Int, _ total: Int) {
        lock.withLock {
            if name != current {
                current = name
                started = Date()
            }
            guard Date().timeIntervalSince(lastDraw) > 0.1 || done == total else { return }
            lastDraw = Date()
            let fraction = total > 0 ? Double(done) / Double(total) : 1
            let elapsed = Date().timeIntervalSince(started)
            let rate = elapsed > 0 ? Double(done) / elapsed : 0
            let eta = rate > 0 ? Double(total - done) / rate : 0
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
            let line = String(format: "\r[%@] %3.0f%% %d/%d tiles %.0f tiles/s ETA %.0fs  %@\u{1B}[K",
                              bar, fraction * 100, done, total, rate, eta, name)
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    func finish() {
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
