import ArgumentParser
import TesseraCore

/// `tessera models ...`: model utilities.
struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models", abstract: "Inspect, evaluate, quantize and benchmark models.",
        subcommands: [List.self, Inspect.self, Eval.self, Bench.self, Quantize.self])

    /// `tessera models bench MODEL [--batch N] [--threads N] [--json]`.
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure inference throughput of an ONNX model (images/s, ms/batch, GFLOP/s).")

        @Argument(help: "Path to an .onnx file, or a model name under models/.")
        var model: String
        @Option(help: "Images per batch.") var batch: Int = 16
        @Option(help: "Cores to use.") var threads: Int = 1
        @Option(help: "Timed repeats after warm-up (median is reported).") var repeats: Int = 10
        @Option(help: "Warm-up batches.") var warmup: Int = 2
        @Option(name: .customLong("micro-batch"), help: "Images per worker pass (default: engine's choice).")
        var microBatch: Int?
        @Option(help: "fp32 or int8 (int8 reads the calibration `models quantize` wrote).") var precision = "fp32"
        @Flag(help: "Print one JSON object.") var json = false
        @Flag(help: "Print per-step timings of one micro-batch instead.") var profile = false

        func run() throws {
            var options = ModelBenchOptions(model: model, batch: batch, threads: threads, repeats: repeats,
                                            warmup: warmup, microBatch: microBatch)
            try options.useEnvironment(precision: precision)
            if profile {
                options.threads = 1
                for line in try ModelBench.profile(options) { print(line) }
                return
            }
            let result = try ModelBench.run(options)
            print(json ? ModelBench.json(result) : ModelBench.text(result))
        }
    }

    /// `tessera models quantize MODEL --calibration DIR [--limit N]`.
    struct Quantize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure a model's activation ranges on real tiles for its int8 path (writes calibration.json beside the model).")

        @Argument(help: "Path to an .onnx file, or a model name under models/.")
        var model: String
        @Option(help: "Directory of tiles (.jpg/.png/.tif, searched recursively; one patch per image).") var calibration: String
        @Option(help: "Images to use, spread evenly over the sorted file list.") var limit = 256

        func run() throws {
            try reportingErrors {
                print(try ModelQuantize.run(model: model, calibrationDirectory: calibration, limit: limit))
            }
        }
    }
}
