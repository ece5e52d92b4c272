import Engine
import Foundation

/// What a job asks for beyond slide and model. Stored as canonical JSON in the job row (every
/// field present, keys sorted, defaults resolved by `SlideIntake`), so one slide analysed one
/// way is one job whichever way it came in.
public struct AnalysisParameters: Codable, Sendable, Equatable {
    /// Target microns per pixel; nil uses the model card's (the intake fills it in).
    public var mpp: Double?
    /// Slide MPP to assume when the slide does not record one (nil when it does).
    public var slideMPP: Double?
    /// Minimum tissue fraction of a tile.
    public var minTissue: Double
    /// Tile overlap in pixels.
    public var overlap: Int
    /// Whether to write per-tile embeddings.
    public var embeddings: Bool
    /// SHA-256 of the model's ONNX file: with the model name, the model's identity.
    public var modelSHA256: String?
    /// SHA-256 of what the model card says about analysis (input, classes, output), so a fixed
    /// card analyses again.
    public var cardSHA256: String?
    /// Engine precision: nil for fp32, `int8` for the INT8 engine with the calibration
    /// `tessera models quantize` wrote (its SHA-256 in `calibrationSHA256`, part of the identity).
    public var precision: String?
    public var calibrationSHA256: String?
    /// When `auto` was asked for: what it chose and why (``PrecisionChoice``); `precision` holds the choice.
    public var precisionAuto: String?
    /// Marks the job as one measurement run's own, so a repeated measurement of the same slide on
    /// a shared queue (which outlives the run) is not deduplicated into an earlier job. Usually nil.
    public var run: String?

    public init(mpp: Double? = nil, slideMPP: Double? = nil, minTissue: Double = 0.5, overlap: Int = 0, embeddings: Bool = false,
                precision: String? = nil) {
        self.precision = precision
        self.mpp = mpp
        self.slideMPP = slideMPP
        self.minTissue = minTissue
        self.overlap = overlap
        self.embeddings = embeddings
    }

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case mpp, overlap, embeddings, run, precision
        case calibrationSHA256 = "calibration_sha256", precisionAuto = "precision_auto"
        case slideMPP = "slide_mpp", minTissue = "min_tissue", modelSHA256 = "model_sha256", cardSHA256 = "card_sha256"
    }

    /// Decodes strictly: a key Tessera does not know, or a value of the wrong type, is an error.
    /// Missing keys take their defaults (rows queued by older versions).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        let known = Set(CodingKeys.allCases.map(\.stringValue))
        if let unknown = container.allKeys.first(where: { !known.contains($0.stringValue) }) {
            throw DecodingError.dataCorruptedError(forKey: unknown, in: container, debugDescription: "unknown parameter '\(unknown.stringValue)'")
        }
        let values = try decoder.container(keyedBy: CodingKeys.self)
        mpp = try values.decodeIfPresent(Double.self, forKey: .mpp)
        slideMPP = try values.decodeIfPresent(Double.self, forKey: .slideMPP)
        minTissue = try values.decodeIfPresent(Double.self, forKey: .minTissue) ?? 0.5
        overlap = try values.decodeIfPresent(Int.self, forKey: .overlap) ?? 0
        embeddings = try values.decodeIfPresent(Bool.self, forKey: .embeddings) ?? false
        modelSHA256 = try values.decodeIfPresent(String.self, forKey: .modelSHA256)
        cardSHA256 = try values.decodeIfPresent(String.self, forKey: .cardSHA256)
        run = try values.decodeIfPresent(String.self, forKey: .run)
        precision = try values.decodeIfPresent(String.self, forKey: .precision)
        calibrationSHA256 = try values.decodeIfPresent(String.self, forKey: .calibrationSHA256)
        precisionAuto = try values.decodeIfPresent(String.self, forKey: .precisionAuto)
    }

    public func encode(to encoder: any Encoder) throws {
        // Every key, nulls included: the canonical text does not depend on which were given.
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(mpp, forKey: .mpp)
        try values.encode(slideMPP, forKey: .slideMPP)
        try values.encode(minTissue, forKey: .minTissue)
        try values.encode(overlap, forKey: .overlap)
        try values.encode(embeddings, forKey: .embeddings)
        try values.encode(modelSHA256, forKey: .modelSHA256)
        try values.encode(cardSHA256, forKey: .cardSHA256)
        try values.encode(run, forKey: .run)
        // Only when set: fp32 jobs keep the canonical text (and so the identity) they always had.
        try values.encodeIfPresent(precision, forKey: .precision)
        try values.encodeIfPresent(calibrationSHA256, forKey: .calibrationSHA256)
        try values.encodeIfPresent(precisionAuto, forKey: .precisionAuto)
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Checks the values: one line naming the parameter as `name(for:)` spells it.
    public func validate(naming name: (CodingKeys) -> String = { "--" + $0.stringValue.replacingOccurrences(of: "_", with: "-") }) throws {
        if let mpp, !(mpp > 0 && mpp.isFinite) { throw UsageError("\(name(.mpp)) must be a positive number of microns per pixel") }
        if let slideMPP, !(slideMPP > 0 && slideMPP.isFinite) {
            throw UsageError("\(name(.slideMPP)) must be a positive number of microns per pixel")
        }
        guard minTissue >= 0 && minTissue <= 1 else { throw UsageError("\(name(.minTissue)) must be between 0 and 1") }
        guard overlap >= 0 && overlap < 4096 else { throw UsageError("\(name(.overlap)) must be 0 or more pixels (and less than 4096)") }
        if let precision, !["fp32", "bf16", "int8", "auto"].contains(precision) {
            throw UsageError("\(name(.precision)) \(precision): use fp32, bf16, int8 or auto")
        }
    }

    /// The engine precision this asks for.
    public var enginePrecision: Precision { precision == "int8" ? .int8 : precision == "bf16" ? .bf16 : .fp32 }

    /// Canonical JSON (every key, sorted; `precision` only when not fp32) for the job row.
    public var canonicalJSON: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
    }

    /// Parses a job row's parameters.
    /// - Throws: `JobFailure(.badParameters)` naming what is wrong; never falls back to defaults.
    public static func parse(_ json: String) throws -> AnalysisParameters {
        do {
            return try JSONDecoder().decode(AnalysisParameters.self, from: Data(json.utf8))
        } catch let DecodingError.dataCorrupted(context) {
            throw JobFailure(.badParameters, "job parameters \(json): \(context.debugDescription)")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw JobFailure(.badParameters, "job parameters \(json): '\(key)' has the wrong type")
        } catch {
            throw JobFailure(.badParameters, "job parameters \(json) are not valid JSON")
        }
    }
}
