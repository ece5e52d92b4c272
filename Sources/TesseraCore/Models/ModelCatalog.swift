import Engine
import Foundation
import SlideIO

/// A model card (`models/<name>/model.json`): what the network expects and what it outputs.
public struct ModelCard: Codable, Sendable {
    public struct Input: Codable, Sendable {
        public var name: String?
        public var size: Int
        public var channels: Int?
        public var layout: String?
        public var mpp: Double?
        public var normalisation: NormalisationSpec?
    }

    public struct NormalisationSpec: Codable, Sendable {
        public var scale: Double?
        public var mean: [Float]?
        public var std: [Float]?
    }

    public struct Output: Codable, Sendable {
        public var name: String?
        /// `softmax` (probabilities) or `logits`.
        public var kind: String?
    }

    public var name: String
    public var displayName: String?
    public var output: Output?
    public var version: String?
    public var task: String?
    public var classes: [String]
    public var input: Input
    public var params: Int?
    public var macs: Int?
    public var file: String?

    enum CodingKeys: String, CodingKey {
        case name, version, task, classes, input, params, macs, file, output
        case displayName = "display_name"
    }

    /// The patch normalisation: pixels scaled to 0...1, then (p - mean) / std.
    public var normalisation: Normalisation {
        let mean = input.normalisation?.mean ?? [0, 0, 0]
        let std = input.normalisation?.std ?? [1, 1, 1]
        return mean.count == 3 && std.count == 3 && std.allSatisfy({ $0 > 0 }) ? Normalisation(mean: mean, std: std) : .unit
    }
}

/// A model ready to resolve: its ONNX file and card.
public struct ModelReference: Sendable {
    /// Name (the folder under models/, or the file name).
    public var name: String
    /// The ONNX file.
    public var path: String
    /// The card (a default one for a bare .onnx file).
    public var card: ModelCard
    /// Raw card JSON, for `models inspect` and the API.
    public var cardJSON: Data?
    /// What `ModelCatalog.resolve` takes to find this model again: the catalog name, or the
    /// file path of a model outside the catalog. Jobs record this.
    public var identifier: String
}

/// Errors resolving models.
public struct ModelCatalogError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// Finds models by name under the models directory, or by path.
public enum ModelCatalog {
    /// The shipped default model: the compact NAS-found classifier, or the teacher it was
    /// distilled from when the compact one is not in the models directory.
    public static var defaultModel: String {
        let directory = ModelCatalog.directory
        return names(in: directory).contains(compactModel) || !names(in: directory).contains(teacherModel)
            ? compactModel : teacherModel
    }

    /// The compact tissue classifier.
    public static let compactModel = "tessera-crc-compact"
    /// The DenseNet121 teacher / baseline.
    public static let teacherModel = "densenet121-pathmnist"

    /// The models directory: `$TESSERA_MODELS`, else `models/` next to the executable's package
    /// (build tree, or the unpacked tarball's folder), else `/usr/share/tessera/models` (the
    /// Debian package), else `/opt/tessera/models`, else `./models`.
    public static var directory: String {
        if let explicit = ProcessInfo.processInfo.environment["TESSERA_MODELS"], !explicit.isEmpty { return explicit }
        var url = URL(fileURLWithPath: executablePath).resolvingSymlinksInPath()
        for _ in 0..<5 {
            url.deleteLastPathComponent()
            let candidate = url.appendingPathComponent("models")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent(compactModel).path)
                || FileManager.default.fileExists(atPath: candidate.appendingPathComponent(teacherModel).path) {
                return candidate.path
            }
        }
        for shipped in ["/usr/share/tessera/models", "/opt/tessera/models"] where FileManager.default.fileExists(atPath: shipped) {
            return shipped
        }
        return FileManager.default.currentDirectoryPath + "/models"
    }

    /// The running binary (`/proc/self/exe`; argv[0] may be a bare name found on PATH).
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments.first ?? "."
    }

    /// Model names (folders with a model.json) in the models directory.
    public static func names(in directory: String = ModelCatalog.directory) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return entries.filter { FileManager.default.fileExists(atPath: "\(directory)/\($0)/model.json") }.sorted()
    }

    /// Resolves a name under the models directory, a model folder, or an .onnx path.
    public static func resolve(_ nameOrPath: String, in directory: String = ModelCatalog.directory) throws -> ModelReference {
        var folder: String?
        if nameOrPath.hasSuffix(".onnx") {
            guard FileManager.default.fileExists(atPath: nameOrPath) else {
                throw ModelCatalogError(description: "model file \(nameOrPath) does not exist")
            }
            let siblingCard = (nameOrPath as NSString).deletingLastPathComponent + "/model.json"
            if FileManager.default.fileExists(atPath: siblingCard) {
                var reference = try load(folder: (nameOrPath as NSString).deletingLastPathComponent)
                reference.path = nameOrPath
                reference.identifier = nameOrPath
                return reference
            }
            let name = ((nameOrPath as NSString).lastPathComponent as NSString).deletingPathExtension
            let card = ModelCard(name: name, displayName: nil, output: nil, version: nil, task: "classification", classes: [],
                                 input: .init(name: nil, size: 224, channels: 3, layout: "NCHW", mpp: 0.5, normalisation: nil),
                                 params: nil, macs: nil, file: nil)
            return ModelReference(name: name, path: nameOrPath, card: card, cardJSON: nil,
                                  identifier: URL(fileURLWithPath: nameOrPath).standardizedFileURL.path)
        }
        if FileManager.default.fileExists(atPath: nameOrPath + "/model.json") {
            folder = nameOrPath
        } else if !nameOrPath.contains("/"), FileManager.default.fileExists(atPath: "\(directory)/\(nameOrPath)/model.json") {
            folder = "\(directory)/\(nameOrPath)"
        }
        guard let folder else {
            let known = names(in: directory)
            throw ModelCatalogError(description: "unknown model '\(nameOrPath)'; known models: "
                                    + (known.isEmpty ? "none in \(directory)" : known.joined(separator: ", ")))
        }
        return try load(folder: folder, directory: directory)
    }

    private static func load(folder: String, directory: String = ModelCatalog.directory) throws -> ModelReference {
        let cardPath = folder + "/model.json"
        let data: Data
        let card: ModelCard
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: cardPath))
            card = try JSONDecoder().decode(ModelCard.self, from: data)
        } catch {
            throw ModelCatalogError(description: "\(cardPath): not a valid model card (\(error))")
        }
        let file = folder + "/" + (card.file ?? "model.onnx")
        guard FileManager.default.fileExists(atPath: file) else {
            throw ModelCatalogError(description: "\(folder): model file \(card.file ?? "model.onnx") is missing")
        }
        let inCatalog = ((folder as NSString).deletingLastPathComponent as NSString).standardizingPath
            == (directory as NSString).standardizingPath
        return ModelReference(name: card.name, path: file, card: card, cardJSON: data,
                              identifier: inCatalog ? card.name : URL(fileURLWithPath: folder).standardizedFileURL.path)
    }
}
