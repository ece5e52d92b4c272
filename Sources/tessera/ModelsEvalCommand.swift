import ArgumentParser
import Foundation
import TesseraCore

extension ModelsCommand {
    /// `tessera models eval MODEL --patches DIR`: accuracy on labelled patches.
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure a model's accuracy on folders of labelled patch images (one folder per class).",
            discussion: """
            Each image is prepared as the slide pipeline prepares tiles (libvips resize, the card's \
            normalisation). Folder names must be the model's classes, or be mapped with --class-map \
            (FOLDER=CLASS, or FOLDER=ignore to leave a folder out). With --manifest CSV (a 'file' column \
            relative to DIR, optional 'group' and 'split' columns) only the listed images are evaluated \
            and the 95% intervals resample whole groups.
            """)

        @Argument(help: "Model name or path.") var model: String
        @Option(help: "Folder with one subfolder of images per class.") var patches: String
        @Option(name: .customLong("class-map"), help: "Folder-to-class mapping, e.g. colon_aca=TUM,colon_n=NORM,lung_n=ignore.")
        var classMap: String?
        @Option(name: .customLong("patch-mpp"), help: "Pixel size of the images (um/px): resample to the model's MPP and centre-crop.")
        var patchMPP: Double?
        @Option(help: "CSV of the images to use: file[,group][,split].") var manifest: String?
        @Option(help: "With --manifest: only rows whose split column equals this.") var split: String?
        @Option(help: "fp32, bf16, int8 (reads the calibration `models quantize` wrote) or auto (what the recorded precision check allows).")
        var precision: String = "fp32"
        @Flag(name: .customLong("record-precision"),
              help: "Score the images in FP32, INT8 and BF16, time the three engines, and write precision.json beside the model for --precision auto.")
        var recordPrecision = false
        @Option(help: "Cores to use.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
        @Option(help: "Images per batch.") var batch: Int = 32
        @Option(help: "Bootstrap resamples for the 95% intervals (0 = none).") var bootstrap: Int = 1000
        @Flag(help: "Print one JSON line instead of the table.") var json = false

        func run() throws {
            do {
                var options = ModelEvaluationOptions(model: model, patches: patches)
                options.classMap = try classMap.map(ModelEvaluationOptions.parseClassMap) ?? [:]
                options.patchMPP = patchMPP
                options.manifest = manifest
                options.split = split
                options.precision = precision
                options.useEnvironment()
                options.threads = threads
                options.batch = batch
                options.bootstrap = bootstrap
                if recordPrecision {
                    let (check, path, choice) = try PrecisionChoice.record(options)
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                    let line = String(decoding: try encoder.encode(check), as: UTF8.self)
                    if !json {
                        print(String(format: "INT8 against FP32 on %d images: agreement %.2f%%, balanced accuracy %.4f -> %.4f (%+.2f points), %.0f -> %.0f images/s (%.2fx, %@)",
                                     check.images, check.agreement * 100, check.balancedAccuracyFP32, check.balancedAccuracyINT8,
                                     -check.dropPoints, check.imagesPerSecondFP32, check.imagesPerSecondINT8, check.speedup, check.isa))
                        if let a = check.agreementBF16, let b = check.balancedAccuracyBF16, let s = check.imagesPerSecondBF16 {
                            print(String(format: "BF16 against FP32 on %d images: agreement %.2f%%, balanced accuracy %.4f -> %.4f (%+.2f points), %.0f -> %.0f images/s (%.2fx, %@)",
                                         check.images, a * 100, check.balancedAccuracyFP32, b, -(check.dropPointsBF16 ?? 0),
                                         check.imagesPerSecondFP32, s, check.speedupBF16 ?? 0, check.isa))
                        }
                        print("wrote \(path); --precision auto now means \(choice.reason)")
                    }
                    print(line)
                    return
                }
                let evaluation = try ModelEvaluator.run(options)
                if json {
                    print(try ModelEvaluator.json(evaluation))
                } else {
                    print(ModelEvaluator.text(evaluation))
                    print(try ModelEvaluator.json(evaluation))
                }
            } catch {
                printError("\(error)")
                throw ExitCode.failure
            }
        }
    }
}
