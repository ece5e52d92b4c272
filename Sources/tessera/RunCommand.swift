import ArgumentParser
import Foundation
import Logging
import TesseraCore

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Analyse slides with a model through the embedded job queue; writes one output folder per slide.")

    @Argument(help: "Slide files, or folders of slides.")
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

    @Option(name: .customLong("max-slide-pixels"),
            help: "Most pixels (width x height) a slide's level may declare; larger slides are refused before decoding.")
    var maxSlidePixels = SlideLimits.defaultMaxPixels

    @Option(name: .customLong("min-tissue"), help: "Minimum tissue fraction of a tile.")
    var minTissue = 0.5

    @Option(help: "Engine precision: fp32; bf16; int8 with the calibration `tessera models quantize` wrote for the model; or auto (bf16 or int8 when the model's recorded check allows it, see `models eval --record-precision`).")
    var precision = "fp32"

    @Flag(help: "Also write per-tile embeddings (penultimate-layer features).")
    var embeddings = false

    @Flag(help: "Take slides in sub-folders of a folder given as input too.")
    var recursive = false

    @Flag(name: .customLong("retry-failed"), help: "Run slides whose earlier job failed or was cancelled again.")
    var retryFailed = false

    @Option(name: .customLong("progress-seconds"), help: "Seconds between progress lines when standard error is not a terminal.")
    var progressSeconds = 5.0

    @Flag(help: "Print one JSON object per slide.")
    var json = false

    @Flag(help: "Log what the worker does to standard error.")
    var verbose = false

    @OptionGroup var budget: JobBudgetOptions

    func run() throws {
        var options = RunOptions()
        options.model = model
        options.outputDirectory = out
        options.dataDirectory = data
        options.queue = queue ?? DataDirectory.defaultQueue
        options.threads = max(1, threads)
        options.parameters = AnalysisParameters(mpp: mpp, slideMPP: slideMPP, minTissue: minTissue, embeddings: embeddings,
                                                precision: precision.lowercased())
        options.retryFailed = retryFailed
        options.recursive = recursive
        options.isolation = budget.isolation(logLevel: verbose ? "info" : "error")
        options.slideLimits = SlideLimits(maxPixels: maxSlidePixels)
        var logger = Logger(label: "tessera.run")
        logger.logLevel = verbose ? .info : .error
        let report = ProgressReport.forStandardError(interval: progressSeconds)
        let progress: @Sendable (SlideJob, Int, Int) -> Void = { job, done, total in report.update(job.slide.originalName, done, total) }
        // Ctrl-C / SIGTERM: stop at the next batch; the job keeps its checkpoints for the next run.
        let stop = options.stop
        let sources = onTerminationSignal { stop.set() }
        defer { sources.forEach { $0.cancel() } }
        let reports: [RunReport]
        do {
            reports = try SlideRun.run(paths: slides, options: options, logger: logger, progress: progress)
        } catch let interrupted as SlideRun.Interrupted {
            report.finish()
            printError(interrupted.description)
            throw ExitCode(130)
        } catch {
            report.finish()
            printError("\(error)")
            throw ExitCode.failure
        }
        report.finish()
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
