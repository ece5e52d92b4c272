import ArgumentParser
import Dispatch
import Foundation
import Logging
import TesseraCore

struct WatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Watch a folder: analyse every slide that finishes arriving there, once; results to OUT/<slide name>/.")

    @Argument(help: "The folder scanners write slides into.")
    var input: String

    @Option(help: "Folder for the results.")
    var out: String

    @Option(help: "Data folder holding the job database (default: $TESSERA_DATA or ~/.local/share/tessera).")
    var data = DataDirectory.defaultPath

    @Option(help: "Job queue URL, e.g. postgres://user@host:5432/tessera, shared by worker replicas (default: $TESSERA_QUEUE, else SQLite in the data folder).")
    var queue: String?

    @Option(help: "Model name under models/ or a path to an .onnx file.")
    var model = ModelCatalog.defaultModel

    @Option(help: "Seconds a file's size and modification time must stay unchanged before it is taken.")
    var settle = 30.0

    @Option(help: "Seconds between scans (inotify wakes scans earlier where the file system supports it).")
    var poll = 5.0

    @Flag(name: .customLong("move"), help: "Move processed slides into IN/done/ or IN/failed/ (with NAME.reason.txt).")
    var move = false

    @Option(help: "Cores to use.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("slide-mpp"), help: "Microns per pixel of slides that do not record it (slides that do keep their own).")
    var slideMPP: Double?

    @Option(help: "Engine precision: fp32; bf16; int8 with the calibration `tessera models quantize` wrote for the model; or auto (bf16 or int8 when the model's recorded check allows it, see `models eval --record-precision`).")
    var precision = "fp32"

    @Flag(help: "Also take slides in sub-folders of IN (results keep the sub-folder).")
    var recursive = false

    @Option(name: .customLong("max-slide-pixels"),
            help: "Most pixels (width x height) a slide's level may declare; larger slides are refused before decoding.")
    var maxSlidePixels = SlideLimits.defaultMaxPixels

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @OptionGroup var budget: JobBudgetOptions

    func run() throws {
        bootstrapLogging(level: logLevel)
        var options = WatchOptions(input: input, output: out)
        options.dataDirectory = data
        options.queue = queue ?? DataDirectory.defaultQueue
        options.model = model
        options.settleSeconds = max(0, settle)
        options.pollSeconds = max(0.1, poll)
        options.moveProcessed = move
        options.threads = max(1, threads)
        options.parameters = AnalysisParameters(slideMPP: slideMPP, precision: precision.lowercased())
        options.recursive = recursive
        options.isolation = budget.isolation(logLevel: logLevel)
        options.slideLimits = SlideLimits(maxPixels: maxSlidePixels)
        let stop = StopFlag()
        // SIGTERM / SIGINT: stop at the next batch; the running job goes back to the queue at its checkpoint.
        let sources = onTerminationSignal { stop.set() }
        do {
            let watcher = try WatchFolder(options: options, logger: Logger(label: "tessera.watch"), stop: stop)
            try watcher.run()
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        sources.forEach { $0.cancel() }
    }
}
