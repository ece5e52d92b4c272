import Dispatch
import Engine
import Foundation

/// Options of `tessera models bench`.
public struct ModelBenchOptions: Sendable {
    /// Path to an `.onnx` file, or a name under `models/` (`models/<name>/model.onnx` or `models/<name>.onnx`).
    public var model: String
    public var batch: Int
    public var threads: Int
    /// Timed repeats after warm-up (fewer when a batch is slow, at least 3).
    public var repeats: Int
    public var warmup: Int
    /// Per-worker micro-batch (nil = engine default).
    public var microBatch: Int?
    /// Seconds the timed phase aims not to exceed.
    public var budgetSeconds: Double
    /// The engine's settings (the command line builds them from the environment).
    public var engine = EngineOptions()
    /// Per-image input shape for models with symbolic height/width (e.g. `[3, 512, 512]`).
    public var inputShape: [Int]?
    /// Raw little-endian float32 images to time instead of random ones (the batch is tiled from them).
    public var inputFile: String?
    /// Raw float32 of the first output for `inputFile`: the result then reports the max relative error.
    public var expectFile: String?

    public init(model: String, batch: Int = 16, threads: Int = 1, repeats: Int = 10, warmup: Int = 2,
                microBatch: Int? = nil, budgetSeconds: Double = 10) {
        self.model = model; self.batch = batch; self.threads = threads; self.repeats = repeats
        self.warmup = warmup; self.microBatch = microBatch; self.budgetSeconds = budgetSeconds
    }

    /// The engine settings of the `TESSERA_ENGINE_*` variables and `--precision` (for the command line).
    public mutating func useEnvironment(precision: String = "fp32") throws {
        engine = EngineOptions.fromEnvironment()
        guard let p = Precision(rawValue: precision.lowercased()) else {
            throw ModelError.invalidArgument("--precision must be one of \(Precision.allCases.map(\.rawValue).joined(separator: ", ")), got '\(precision)'")
        }
        engine.precision = p
    }
}

/// Result of one model benchmark; the JSON keys are part of the CLI contract.
public struct ModelBenchResult: Codable, Sendable {
    public var model: String
    public var batch: Int
    public var threads: Int
    public var images_per_second: Double
    public var ms_per_batch: Double
    public var gflops: Double
    public var gflop_per_image: Double
    public var input_shape: [Int]
    public var micro_batch: Int
    public var repeats: Int
    public var steps: Int
    /// `fp32` or `int8`.
    public var precision: String
    /// The instruction-set level the kernels ran at.
    public var isa: String
    /// Max |Tessera - expected| / max |expected| over the first output, with `expectFile`.
    public var max_relative_error: Double?
    /// Load-time warnings (nodes on the naive reference interpreter).
    public var warnings: [String]
}

/// `tessera models bench`: loads a model, times batches (median after warm-up), reports throughput.
public enum ModelBench {
    /// Resolves `model` to a file path: an existing path, or a model name looked up as every other
    /// command looks it up (``ModelCatalog``: the search path `modelsDirectory`, by default
    /// `TESSERA_MODELS` and the shipped models, whatever the working folder).
    /// A name that is neither throws the catalog's error (which lists the known models).
    public static func resolve(_ model: String, modelsDirectory: String = ModelCatalog.directory) throws -> String {
        let fm = FileManager.default
        if fm.fileExists(atPath: model) { return model }
        do {
            return try ModelCatalog.resolve(model, in: modelsDirectory).path
        } catch {
            let candidate = "\(modelsDirectory)/\(model).onnx"
            if fm.fileExists(atPath: candidate) { return candidate }
            throw error
        }
    }

    /// The model compiled with the options' engine settings (int8: with the calibration beside it).
    static func load(_ options: ModelBenchOptions) throws -> Model {
        let path = try resolve(options.model)
        let calibration = options.engine.precision == .int8 ? try ModelQuantize.loadIfPresent(forModelFile: path) : nil
        return try Model(contentsOf: path, inputShape: options.inputShape, options: options.engine, calibration: calibration)
    }

    public static func run(_ given: ModelBenchOptions) throws -> ModelBenchResult {
        var options = given
        if options.engine.precision == .auto {  // what the model's recorded INT8 check allows (PrecisionChoice)
            options.engine.precision = try PrecisionChoice.resolve(modelFile: try resolve(options.model)).precision
        }
        guard options.batch >= 1 else { throw ModelError.invalidArgument("--batch must be >= 1") }
        let model = try load(options)
        let session = options.microBatch.map { try? Session(model: model, threads: options.threads, microBatch: $0) }
            ?? (try? Session(model: model, threads: options.threads))
        guard let session else { throw ModelError.invalidArgument("bad --threads \(options.threads) / --micro-batch") }
        var seed: UInt64 = 0x2545_F491_4F6C_DD1D
        let perImage = model.inputShape.reduce(1, *), count = options.batch * perImage
        var data = (0..<count).map { _ -> Float in
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
            return Float(seed % 2000) / 1000 - 1
        }
        var maxRelativeError: Double?
        if let inputFile = options.inputFile {
            let given = try readFloat32(inputFile)
            guard !given.isEmpty, given.count % perImage == 0 else {
                throw ModelError.invalidArgument("\(inputFile): \(given.count) floats is not a whole number of \(model.inputShape) images")
            }
            data = (0..<count).map { given[$0 % given.count] }
            if let expectFile = options.expectFile {
                let expected = try readFloat32(expectFile)
                let out = try session.run(Tensor(shape: [given.count / perImage] + model.inputShape, data: given)).outputs[0].data
                guard out.count == expected.count else {
                    throw ModelError.invalidArgument("\(expectFile): \(expected.count) floats, the model gives \(out.count)")
                }
                let scale = max(expected.map { abs(Double($0)) }.max() ?? 0, 1e-6)
                maxRelativeError = zip(out, expected).map { abs(Double($0) - Double($1)) }.max().map { $0 / scale }
            }
        }
        let input = Tensor(shape: [options.batch] + model.inputShape, data: data)
        for _ in 0..<max(1, options.warmup) { _ = try session.run(input) }
        var times: [Double] = []
        let begin = DispatchTime.now().uptimeNanoseconds
        while times.count < max(1, options.repeats) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try session.run(input)
            let t1 = DispatchTime.now().uptimeNanoseconds
            times.append(Double(t1 - t0) / 1e9)
            if times.count >= 3 && Double(t1 - begin) / 1e9 > options.budgetSeconds { break }
        }
        times.sort()
        let median = times.count % 2 == 1 ? times[times.count / 2] : (times[times.count / 2 - 1] + times[times.count / 2]) / 2
        let ips = Double(options.batch) / median
        return ModelBenchResult(model: options.model, batch: options.batch, threads: options.threads,
                                images_per_second: ips, ms_per_batch: median * 1000,
                                gflops: model.flopsPerImage * ips / 1e9, gflop_per_image: model.flopsPerImage / 1e9,
                                input_shape: model.inputShape, micro_batch: session.microBatchSize(for: options.batch),
                                repeats: times.count, steps: model.stepCount,
                                precision: model.options.precision.rawValue, isa: model.isa.description,
                                max_relative_error: maxRelativeError, warnings: model.warnings)
    }

    static func readFloat32(_ path: String) throws -> [Float] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelError.invalidArgument("cannot read \(path)")
        }
        return data.withUnsafeBytes { raw in (0..<(data.count / 4)).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) } }
    }

    /// Per-step timings of one micro-batch (single worker), slowest first, as text lines.
    public static func profile(_ options: ModelBenchOptions) throws -> [String] {
        let model = try load(options)
        let session = try Session(model: model, threads: 1, microBatch: options.microBatch)
        let input = Tensor(shape: [options.batch] + model.inputShape,
                           data: [Float](repeating: 0.5, count: options.batch * model.inputShape.reduce(1, *)))
        _ = try session.profile(input)
        let steps = try session.profile(input)
        let total = steps.reduce(0) { $0 + $1.seconds }
        return [String(format: "total %.2f ms for %d images", total * 1000, min(options.batch, session.microBatch))]
            + steps.enumerated().sorted { $0.element.seconds > $1.element.seconds }.map {
                String(format: "%4d %8.3f ms %5.1f%%  %@", $0.offset, $0.element.seconds * 1000,
                       100 * $0.element.seconds / total, $0.element.step)
            }
    }

    /// One-line JSON of a result (keys sorted).
    public static func json(_ result: ModelBenchResult) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(result)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// Human-readable summary.
    public static func text(_ r: ModelBenchResult) -> String {
        String(format: "%@  batch %d  threads %d  input %@  %@ on %@\n  %.1f images/s   %.2f ms/batch (median of %d)   %.1f GFLOP/s (%.3f GFLOP/image)",
               r.model, r.batch, r.threads, "\(r.input_shape)", r.precision, r.isa, r.images_per_second, r.ms_per_batch, r.repeats,
               r.gflops, r.gflop_per_image)
    }
}
