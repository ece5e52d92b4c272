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
        @Option(help: "fp32 or int8 (int8 reads the calibration `models quantize` wrote).") var precision: String = "fp32"
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
