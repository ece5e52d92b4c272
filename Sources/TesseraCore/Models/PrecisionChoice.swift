import Engine
import Foundation

/// What `tessera models eval MODEL --patches DIR --record-precision` measured of a model's INT8
/// and BF16 engines against its FP32 one on labelled tiles, written beside the model as `precision.json`
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
    /// The same for BF16 (no calibration involved); nil in checks recorded before BF16 had an engine path.
    public var agreementBF16: Double?
    public var balancedAccuracyBF16: Double?
    public var imagesPerSecondBF16: Double?
    public var threads: Int
    public var isa: String
    public var date: String

    /// Balanced accuracy lost in INT8, in points (negative: INT8 scored higher).
    public var dropPoints: Double { (balancedAccuracyFP32 - balancedAccuracyINT8) * 100 }
    public var speedup: Double { imagesPerSecondINT8 / max(imagesPerSecondFP32, 1e-9) }
    public var dropPointsBF16: Double? { balancedAccuracyBF16.map { (balancedAccuracyFP32 - $0) * 100 } }
    public var speedupBF16: Double? { imagesPerSecondBF16.map { $0 / max(imagesPerSecondFP32, 1e-9) } }

    enum CodingKeys: String, CodingKey {
        case modelSHA256 = "model_sha256", calibrationSHA256 = "calibration_sha256", patches, images, agreement
        case balancedAccuracyFP32 = "balanced_accuracy_fp32", balancedAccuracyINT8 = "balanced_accuracy_int8"
        case imagesPerSecondFP32 = "images_per_second_fp32", imagesPerSecondINT8 = "images_per_second_int8"
        case agreementBF16 = "agreement_bf16", balancedAccuracyBF16 = "balanced_accuracy_bf16"
        case imagesPerSecondBF16 = "images_per_second_bf16"
        case threads, isa, date
    }
}

/// `--precision auto`: the fastest precision whose recorded check agrees with FP32 on at least
/// 99.5% of the tiles, loses at most 0.5 points of balanced accuracy and was faster than FP32 on
/// this CPU's kernel level: INT8 or BF16, FP32 when neither qualifies or nothing is recorded.
public enum PrecisionChoice {
    public static let minimumAgreement = 0.995
    public static let maximumDropPoints = 0.5

    /// The decision and the sentence that explains it (for `summary.json` and the command line).
    public struct Choice: Sendable, Equatable {
        public var precision: Precision
        public var reason: String
        /// `fp32`, `bf16` or `int8`, as job parameters and summaries spell it.
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
            return Choice(precision: .fp32, reason: "fp32: no precision check is recorded for this model; \(how)")
        }
        guard try modelSHA256 ?? SHA256.hexDigest(ofFile: path) == check.modelSHA256 else {
            return Choice(precision: .fp32, reason: "fp32: the precision check was recorded for another model file; \(how)")
        }
        let calibration = ModelQuantize.calibrationPath(forModelFile: path)
        let calibrationMatches = (try? SHA256.hexDigest(ofFile: calibration)) == check.calibrationSHA256
        func measured(_ name: String, _ agreement: Double, _ drop: Double, _ speedup: Double) -> String {
            String(format: "%@ agreement %.2f%% with FP32, %+.2f points of balanced accuracy, %.2fx the images/s on %@ (%d tiles, %@)",
                   name, agreement * 100, -drop, speedup, check.isa, check.images, check.date)
        }
        /// nil when the precision qualifies, else why not.
        func verdict(_ name: String, _ agreement: Double, _ drop: Double, _ speedup: Double) -> String? {
            let m = measured(name, agreement, drop, speedup)
            if agreement < minimumAgreement || drop > maximumDropPoints {
                return "\(name) is not accurate enough (\(m); needs >= 99.5% and <= 0.5 points)"
            }
            if check.isa != isa { return "\(name)'s speed was measured on \(check.isa), this CPU runs \(isa) (\(m)); \(how)" }
            if speedup <= 1 { return "\(name) is not faster here (\(m))" }
            return nil
        }
        var qualified: [(precision: Precision, speedup: Double, measured: String)] = []
        var refused: [String] = []
        if !calibrationMatches {
            refused.append("INT8 was checked with another calibration; \(how)")
        } else if let why = verdict("INT8", check.agreement, check.dropPoints, check.speedup) {
            refused.append(why)
        } else {
            qualified.append((.int8, check.speedup, measured("INT8", check.agreement, check.dropPoints, check.speedup)))
        }
        if let agreement = check.agreementBF16, let drop = check.dropPointsBF16, let speedup = check.speedupBF16 {
            if let why = verdict("BF16", agreement, drop, speedup) {
                refused.append(why)
            } else {
                qualified.append((.bf16, speedup, measured("BF16", agreement, drop, speedup)))
            }
        }
        if let best = qualified.max(by: { $0.speedup < $1.speedup }) {
            return Choice(precision: best.precision, reason: "\(best.precision.rawValue): \(best.measured)")
        }
        return Choice(precision: .fp32, reason: "fp32: " + refused.joined(separator: "; "))
    }

    /// Measures INT8 and BF16 against FP32 on the labelled tiles of `options`, writes the check, and says what
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
        quiet.precision = "bf16"
        let (bf16, p16) = try ModelEvaluator.evaluate(quiet)
        let agreement = Double(zip(p32, p8).filter { $0 == $1 }.count) / Double(max(1, p32.count))
        let agreement16 = Double(zip(p32, p16).filter { $0 == $1 }.count) / Double(max(1, p32.count))
        func speed(_ precision: Precision) throws -> ModelBenchResult {
            var bench = ModelBenchOptions(model: reference.path, batch: 64, threads: max(1, options.threads), repeats: 5, warmup: 1)
            bench.engine = options.engine
            bench.engine.precision = precision
            return try ModelBench.run(bench)
        }
        // Best of two alternating rounds: a round disturbed by other work on the machine does not decide.
        var s32 = try speed(.fp32), s8 = try speed(.int8), s16 = try speed(.bf16)
        let again32 = try speed(.fp32), again8 = try speed(.int8), again16 = try speed(.bf16)
        if again32.images_per_second > s32.images_per_second { s32 = again32 }
        if again8.images_per_second > s8.images_per_second { s8 = again8 }
        if again16.images_per_second > s16.images_per_second { s16 = again16 }
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
            agreementBF16: agreement16, balancedAccuracyBF16: bf16.balancedAccuracy, imagesPerSecondBF16: s16.images_per_second,
            threads: max(1, options.threads), isa: s8.isa, date: formatter.string(from: Date()))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let path = checkPath(forModelFile: reference.path)
        try (encoder.encode(check) + Data("\n".utf8)).write(to: URL(fileURLWithPath: path), options: .atomic)
        return (check, path, try resolve(modelFile: reference.path, modelSHA256: modelDigest))
    }
}
