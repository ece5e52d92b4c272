import Foundation

/// A model as a job names it: the name the catalog resolves, and digests of what decides its
/// answers (the ONNX file and the analysis part of its card). Two jobs with the same identity
/// give the same results; a retrained model under the same name is a new identity.
public struct ModelIdentity: Sendable, Equatable {
    /// What `ModelCatalog.resolve` takes (a catalog name or a path); the job row's `model`.
    public var identifier: String
    /// SHA-256 of the ONNX file.
    public var onnxSHA256: String
    /// SHA-256 of the card's input, classes and output (canonical JSON).
    public var cardSHA256: String

    /// The identity of a resolved model; the ONNX digest is computed once per file version.
    public static func of(_ reference: ModelReference) throws -> ModelIdentity {
        ModelIdentity(identifier: reference.identifier, onnxSHA256: try DigestCache.shared.digest(of: reference.path),
                      cardSHA256: cardDigest(reference.card))
    }

    static func cardDigest(_ card: ModelCard) -> String {
        struct Analysis: Encodable {
            var input: ModelCard.Input
            var classes: [String]
            var output: ModelCard.Output?
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(Analysis(input: card.input, classes: card.classes, output: card.output))) ?? Data()
        var hash = SHA256()
        hash.update(data)
        return hash.finalizeHex()
    }
}

/// SHA-256 of files, remembered by path, size and modification time.
final class DigestCache: @unchecked Sendable {
    // @unchecked: `entries` is guarded by `lock`.
    static let shared = DigestCache()
    private let lock = NSLock()
    private var entries: [String: (size: Int, modified: Double, digest: String)] = [:]

    func digest(of path: String) throws -> String {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let size = (attributes?[.size] as? NSNumber)?.intValue ?? -1
        let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        if let entry = lock.withLock({ entries[path] }), entry.size == size, entry.modified == modified { return entry.digest }
        let digest = try SHA256.hexDigest(ofFile: path)
        lock.withLock { entries[path] = (size, modified, digest) }
        return digest
    }
}
