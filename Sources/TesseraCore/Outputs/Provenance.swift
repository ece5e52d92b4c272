import Foundation
import SlideIO

/// Where a result came from: enough to say which software, model, parameters and slide made it.
public struct Provenance: Codable, Sendable {
    public var tesseraVersion: String
    public var model: String
    public var modelVersion: String?
    /// SHA-256 of the ONNX file that ran.
    public var modelSHA256: String?
    public var parameters: AnalysisParameters
    /// SHA-256 of the slide file's content.
    public var slideSHA256: String
    public var slideName: String
    /// When the outputs were written (ISO 8601, UTC).
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case model, parameters
        case tesseraVersion = "tessera_version", modelVersion = "model_version", modelSHA256 = "model_sha256"
        case slideSHA256 = "slide_sha256", slideName = "slide_name", createdAt = "created_at"
    }
}

extension Provenance {
    /// A UUID that is the same every time the same slide, model and parameters are analysed
    /// (so a resumed run writes the same files): SHA-256 of those and `kind`/`index`, as an
    /// RFC 9562 version-8 UUID.
    static func uuid(_ inputs: OutputInputs, _ kind: String, _ index: Int) -> String {
        var hash = SHA256()
        hash.update(Data("\(inputs.slideSHA256)|\(inputs.modelName)|\(inputs.parameters.canonicalJSON)|\(kind)|\(index)".utf8))
        var hex = Array(hash.finalizeHex().prefix(32))
        hex[12] = "8"
        hex[16] = ["8", "9", "a", "b"][Int(String(hex[16]), radix: 16)! & 3]
        let text = String(hex)
        let cuts = [8, 12, 16, 20].map { text.index(text.startIndex, offsetBy: $0) }
        return [text[..<cuts[0]], text[cuts[0]..<cuts[1]], text[cuts[1]..<cuts[2]], text[cuts[2]..<cuts[3]], text[cuts[3]...]]
            .joined(separator: "-")
    }
}

extension OutputInputs {
    /// Level-0 pixels between neighbouring tile origins: each tile owns one step x step cell.
    var levelZeroStep: Double { Double(grid.stride) * grid.plan.downsample }
    /// Square millimetres of one tile's cell, when the slide's MPP is known.
    var cellAreaMM2: Double? { slideMPP.map { pow(levelZeroStep * $0 / 1000, 2) } }
    /// Tiles per class (most likely class).
    var classCounts: [Int] {
        var counts = [Int](repeating: 0, count: JobOutputs.classNames(self).count)
        for scores in self.scores { counts[JobOutputs.argmax(scores)] += 1 }
        return counts
    }
}

extension JobOutputs {
    /// Adds the slide's MPP, the tile step, colours, per-class areas and the provenance block.
    static func addSlideFacts(_ inputs: OutputInputs, to summary: inout JobSummary) throws {
        let names = classNames(inputs)
        let colours = self.colours(inputs)
        summary.slideMPP = inputs.slideMPP
        summary.tileStep = inputs.levelZeroStep
        summary.classColours = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($0.element, ClassPalette.hex(colours[$0.offset])) })
        if let cell = inputs.cellAreaMM2 {
            let counts = inputs.classCounts
            summary.classAreasMM2 = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($0.element, Double(counts[$0.offset]) * cell) })
            summary.tissueAreaMM2 = Double(inputs.scores.count) * cell
        }
        var modelVersion: String?
        if let data = inputs.cardJSON, let card = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            modelVersion = card["version"] as? String
        }
        summary.provenance = Provenance(
            tesseraVersion: Tessera.version, model: inputs.modelName, modelVersion: modelVersion,
            modelSHA256: try inputs.modelPath.map { try ModelDigests.shared.digest(ofFile: $0) }, parameters: inputs.parameters,
            slideSHA256: inputs.slideSHA256, slideName: inputs.slideName,
            createdAt: Date().formatted(.iso8601))
    }
}

/// SHA-256 of model files, computed once per file (path, size and modification time).
final class ModelDigests: @unchecked Sendable {
    // @unchecked: `known` is only touched under `lock`.
    static let shared = ModelDigests()
    private let lock = NSLock()
    private var known: [String: String] = [:]

    func digest(ofFile path: String) throws -> String {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        let key = "\(path)|\((attributes[.size] as? Int) ?? 0)|\((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)"
        if let digest = lock.withLock({ known[key] }) { return digest }
        let digest = try SHA256.hexDigest(ofFile: path)
        lock.withLock { known[key] = digest }
        return digest
    }
}
