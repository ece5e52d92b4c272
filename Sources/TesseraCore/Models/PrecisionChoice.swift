import Engine
import Foundation

/// What `tessera models eval MODEL --patches DIR --record-precision` measured of a model's INT8
/// engine against its FP32 one on labelled tiles, written beside the model as `precision.json`
/// (`<file>.precision.json` beside a bare `.onnx`). `--precision auto` reads it.
public struct PrecisionCheck: Codable, Sendable, Equatable {
    /// SHA-256 of the ONNX file and of the calibration the check ran with: a check of another
    /// model file or calibration does not count.
    public var modelSHA256: String
    public var calibrationSHA256: String
    /// The labelled tiles (folder, manifest and split as given) and how many were scored.
    public var patches: String
    public var images: Int
    /// Share of tiles whose top-1 class is the same in INT8 and FP32.
    public var agreement: Double
    public var balancedAccuracyFP32: Double
    public var balancedAccuracyINT8: Double
    /// Engine images/s (`models bench`, batch 64, best of two alternating rounds) of each precision, and
    /// the instruction-set level they ran at: a speed measured on another level says nothing here.
    public var imagesPerSecondFP32: Double
    public var imagesPerSecondINT8: Double
    public var threads: Int
    public var isa: String
    public var date: String

    /// Balanced accuracy lost in INT8, in points (negative: INT8 scored higher).
    public var dropPoints: Double { (balancedAccuracyFP32 - balancedAccuracyINT8) * 100 }
    public var speedup: Double { imagesPerSecondINT8 / max(imagesPerSecondFP32, 1e-9) }

    enum CodingKeys: String, CodingKey {
        case modelSHA256 = "model_sha256", calibrationSHA256 = "calibration_sha256", patches, images, agreement
        case balancedAccuracyFP32 = "balanced_accuracy_fp32", balancedAccuracyINT8 = "balanced_accuracy_int8"
        case imagesPerSecondFP32 = "images_per_second_fp32", imagesPerSecondINT8 = "images_per_second_int8"
        case threads, isa, date
    }
}

/// `--precision auto`: the fastest precision whose recorded check agrees with FP32 on at least
/// 99.5% of the tiles and loses at most 0.5 points of balanced accuracy; FP32 when there is no
/// such check (BF16 has no engine path yet, so the choice is between FP32 and INT8).
public enum PrecisionChoice {
    public static let minimumAgreement = 0.995
    public static let maximumDropPoints = 0.5

    /// The decision and the sentence that explains it (for `summary.json` and the command line).
    public struct Choice: Sendable, Equatable {
        public var precision: Precision
        public var reason: String
        /// `fp32` or `int8`, as job parameters and summaries spell it.
        public var name: String { precision.rawValue }
    }

    public static func checkPath(forModelFile path: String) -> String {
        let url = URL(fileURLWithPath: path)
        if url.lastPathComponent == "model.onnx" { return url.deletingLastPathComponent().appendingPathComponent("precision.json").path }
        return url.deletingPathExtension().path + ".precision.json"
    }

    /// The recorded check of a model file, if one was written.
    public static func check(forModelFile path: String) throws -> PrecisionCheck? {
        guard let data = FileManager.default.contents(atPath: checkPath(forModelFile: path)) else { return nil }
        do {
            return try JSONDecoder().decode(PrecisionCheck.self, from: data)
        } catch {
            throw ModelError.invalidArgument("\(checkPath(forModelFile: path)) is not a precision check (\(error)); "
                                             + "write it again with `tessera models eval MODEL --patches DIR --record-precision`")
        }
    }

    /// Resolves `auto` for the model file on this CPU; `modelSHA256`: the file's digest when the caller
    /// already has it (intake does), so the file is not read again.
    public static func resolve(modelFile path: String, modelSHA256: String? = nil,
                               isa: String = CPUFeatures.current.engineLevel.description) throws -> Choice {
        let how = "record one with `tessera models eval MODEL --patches DIR --record-precision`"
        guard let check = try check(forModelFile: path) else {
            return Choice(precision: .fp32, reason: "fp32: no INT8 check is recorded for this model; \(how)")
        }
        let calibration = ModelQuantize.calibrationPath(forModelFile: path)
        guard let calibrationDigest = try? SHA256.hexDigest(ofFile: calibration), calibrationDigest == check.calibrationSHA256,
              try modelSHA256 ?? SHA256.hexDigest(ofFile: path) == check.modelSHA256 else {
            return Choice(precision: .fp32, reason: "fp32: the INT8 check was recorded for another model file or calibration; \(how)")
        }
        let measured = String(format: "agreement %.2f%% with FP32, %+.2f points of balanced accuracy, %.2fx the images/s on %@ (%d tiles, %@)",
                              check.agreement * 100, -check.dropPoints, check.speedup, check.isa, check.images, check.date)
        if check.agreement < minimumAgreement || check.dropPoints > maximumDropPoints {
            return Choice(precision: .fp32, reason: "fp32: INT8 is not accurate enough (\(measured); needs >= 99.5% and <= 0.5 points)")
        }
        if check.isa != isa {
            return Choice(precision: .fp32, reason: "fp32: INT8's speed was measured on \(check.isa), this CPU runs \(isa) (\(measured)); \(how)")
        }
        if check.speedup <= 1 {
            return Choice(precision: .fp32, reason: "fp32: INT8 is not faster here (\(measured))")
        }
        return Choice(precision: .int8, reason: "int8: \(measured)")
    }

    /// Measures INT8 against FP32 on the labelled tiles of `options`, writes the check, and says what
    /// `auto` now chooses.
    public static func record(_ options: ModelEvaluationOptions) throws -> (check: PrecisionCheck, path: String, choice: Choice) {
        let reference = try ModelCatalog.resolve(options.model, in: options.modelsDirectory)
        let calibration = ModelQuantize.calibrationPath(forModelFile: reference.path)
        guard let calibrationDigest = try? SHA256.hexDigest(ofFile: calibration) else {
            throw ModelEvaluationError("--record-precision: \(reference.name) has no INT8 calibration; make one with "
                                       + "`tessera models quantize \(reference.name) --calibration DIR` first")
        }
        var quiet = options
        quiet.bootstrap = 0
        quiet.precision = "fp32"
        let (fp32, p32) = try ModelEvaluator.evaluate(quiet)
        quiet.precision = "int8"
        let (int8, p8) = try ModelEvaluator.evaluate(quiet)
        let agreement = Double(zip(p32, p8).filter { $0 == $1 }.count) / Double(max(1, p32.count))
        func speed(_ precision: Precision) throws -> ModelBenchResult {
            var bench = ModelBenchOptions(model: reference.path, batch: 64, threads: max(1, options.threads), repeats: 5, warmup: 1)
            bench.engine = options.engine
            bench.engine.precision = precision
            return try ModelBench.run(bench)
        }
        // Best of two alternating rounds: a round disturbed by other work on the machine does not decide.
        var s32 = try speed(.fp32), s8 = try speed(.int8)
        let again32 = try speed(.fp32), again8 = try speed(.int8)
        if again32.images_per_second > s32.images_per_second { s32 = again32 }
        if again8.images_per_second > s8.images_per_second { s8 = again8 }
        var where_ = options.patches
        if let manifest = options.manifest { where_ += " (manifest \(manifest)" + (options.split.map { ", split \($0)" } ?? "") + ")" }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate]
        let modelDigest = try SHA256.hexDigest(ofFile: reference.path)
        let check = PrecisionCheck(
            modelSHA256: modelDigest, calibrationSHA256: calibrationDigest,
            patches: where_, images: fp32.images, agreement: agreement,
            balancedAccuracyFP32: fp32.balancedAccuracy, balancedAccuracyINT8: int8.balancedAccuracy,
            imagesPerSecondFP32: s32.images_per_second, imagesPerSecondINT8: s8.images_per_second,
            threads: max(1, options.threads), isa: s8.isa, date: formatter.string(from: Date()))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let path = checkPath(forModelFile: reference.path)
        try (encoder.encode(check) + Data("\n".utf8)).write(to: URL(fileURLWithPath: path), options: .atomic)
        return (check, path, try resolve(modelFile: reference.path, modelSHA256: modelDigest))
    }
}
