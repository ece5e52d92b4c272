import ArgumentParser
import Foundation
import TesseraCore

/// `tessera models ...`: model utilities.
struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models", abstract: "Inspect, evaluate, quantize and benchmark models.",
        subcommands: [List.self, Inspect.self, Eval.self, Bench.self, Quantize.self])

    /// `tessera models bench MODEL [--batch N] [--threads N] [--input-shape C,H,W] [--json]`.
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
        @Option(help: "fp32, bf16, int8 (reads the calibration `models quantize` wrote) or auto (what the recorded precision check allows).") var precision = "fp32"
        @Option(name: .customLong("input-shape"),
                help: "Per-image input shape for models with symbolic height/width, e.g. 3,512,512.")
        var inputShape: String?
        @Option(name: .customLong("input-file"), help: "Raw float32 images to time (and check) instead of random ones.")
        var inputFile: String?
        @Option(name: .customLong("expect"), help: "Raw float32 first output for --input-file; reports the max relative error.")
        var expect: String?
        @Flag(help: "Print one JSON object.") var json = false
        @Flag(help: "Print per-step timings of one micro-batch instead.") var profile = false

        func run() throws {
            var options = ModelBenchOptions(model: model, batch: batch, threads: threads, repeats: repeats,
                                            warmup: warmup, microBatch: microBatch)
            try options.useEnvironment(precision: precision)
            if let inputShape {
                let dims = inputShape.split(whereSeparator: { $0 == "," || $0 == "x" }).map { Int($0) }
                guard !dims.isEmpty, dims.allSatisfy({ ($0 ?? 0) > 0 }) else {
                    throw ValidationError("--input-shape must be positive integers like 3,512,512, got '\(inputShape)'")
                }
                options.inputShape = dims.map { $0! }
            }
            options.inputFile = inputFile
            options.expectFile = expect
            if profile {
                options.threads = 1
                for line in try ModelBench.profile(options) { print(line) }
                return
            }
            let result = try ModelBench.run(options)
            for warning in result.warnings { FileHandle.standardError.write(Data("tessera: warning: \(warning)\n".utf8)) }
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
