import ArgumentParser
import Foundation
import TesseraCore

struct ThroughputCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput",
        abstract: "Does this machine keep pace with its scanners? Measures every stage and gives a verdict.")

    @Option(name: .customLong("slide"), help: "Slides to measure on (default: a generated 20x slide).")
    var slides: [String] = []

    @Option(name: .customLong("slide-mpp"), help: "Microns per pixel of given slides that do not record it.")
    var slideMPP: Double?

    @Option(help: "Model name under models/ or a path to an .onnx file.")
    var model = ModelCatalog.defaultModel

    @Option(help: "Slides per hour arriving (e.g. 162 or 162/h); overrides --scanner.")
    var arrival: String?

    @Option(help: "Scanner preset for the arrival rate: gt450.")
    var scanner = "gt450"

    @Option(name: .customLong("scanners"), help: "Number of such scanners.")
    var scannerCount = 1

    @Option(name: .customLong("slide-area"), help: "Scanned area of the generated slide, e.g. 15x15mm.")
    var slideArea = "15x15mm"

    @Option(name: .customLong("tissue-fraction"), help: "Share of the generated slide covered by tissue.")
    var tissueFraction = 0.45

    @Option(help: "Job queue URL (postgres://...) for the end-to-end run, to include the shared queue in the measurement (default: $TESSERA_QUEUE, else a scratch SQLite queue).")
    var queue: String?

    @Option(help: "Engine precision: fp32, bf16, int8 (needs the model's INT8 calibration) or auto; fp32 is measured too, for the gain.")
    var precision = "fp32"

    @Option(help: "Cores to use.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Seconds the stage measurements may take in all.")
    var duration = 20.0

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        var options = ThroughputOptions()
        options.slides = slides
        options.model = model
        options.scanner = scanner
        options.threads = max(1, threads)
        options.precision = precision
        options.slideMPP = slideMPP
        options.queue = queue ?? DataDirectory.defaultQueue
        options.durationSeconds = max(3, duration)
        options.tissueFraction = min(1, max(0, tissueFraction))
        let area = slideArea.lowercased().replacingOccurrences(of: "mm", with: "").split(separator: "x").compactMap { Double($0) }
        guard area.count == 2, area.allSatisfy({ $0 > 0 && $0 <= 100 }) else {
            printError("--slide-area must look like 15x15mm")
            throw ExitCode.failure
        }
        options.slideArea = (area[0], area[1])
        if let arrival {
            guard let value = Double(arrival.replacingOccurrences(of: "/h", with: "")), value > 0 else {
                printError("--arrival must be slides per hour, e.g. 162 or 162/h")
                throw ExitCode.failure
            }
            options.arrivalPerHour = value
        }
        let interactive = isatty(STDERR_FILENO) == 1 && ProcessInfo.processInfo.environment["CI"] == nil && !json
        do {
            var report = try ThroughputCheck.run(options) { stage in
                if interactive { FileHandle.standardError.write(Data("\r\u{1B}[K... \(stage)".utf8)) }
            }
            if interactive { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            if scannerCount > 1 {
                report.arrivalSlidesPerHour *= Double(scannerCount)
                report.arrivalSource += " x \(scannerCount) scanners"
                report.keepsPace = report.slidesPerHour >= report.arrivalSlidesPerHour
                report.headroom = report.slidesPerHour / report.arrivalSlidesPerHour - 1
            }
            print(json ? JSONOutput.line(report) : report.table)
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
    }
}
