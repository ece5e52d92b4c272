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
        /// `eho`: the model takes Eosin, Hematoxylin and Optical Density channels from a per-slide
        /// stain estimate instead of RGB (see ``StainTransform``); nil: RGB.
        public var colourTransform: String?

        enum CodingKeys: String, CodingKey {
            case name, size, channels, layout, mpp, normalisation
            case colourTransform = "colour_transform"
        }

        public init(name: String? = nil, size: Int, channels: Int? = 3, layout: String? = "NCHW", mpp: Double? = nil,
                    normalisation: NormalisationSpec? = nil) {
            self.name = name
            self.size = size
            self.channels = channels
            self.layout = layout
            self.mpp = mpp
            self.normalisation = normalisation
        }
    }

    public struct NormalisationSpec: Codable, Sendable {
        public var scale: Double?
        public var mean: [Float]?
        public var std: [Float]?

        public init(scale: Double? = nil, mean: [Float]? = nil, std: [Float]? = nil) {
            self.scale = scale
            self.mean = mean
            self.std = std
        }
    }

    public struct Output: Codable, Sendable {
        public var name: String?
        /// `softmax` (probabilities) or `logits`.
        public var kind: String?
        /// Temperature from calibration: probabilities are `softmax(logits / temperature)`.
        /// Only meaningful for `logits` outputs.
        public var temperature: Double?

        public init(name: String? = nil, kind: String? = nil, temperature: Double? = nil) {
            self.name = name
            self.kind = kind
            self.temperature = temperature
        }
    }

    /// What the model was validated on: a short statement, or `false` (not validated).
    public enum Validation: Codable, Sendable, Equatable, CustomStringConvertible {
        case no
        case yes(String)

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let flag = try? container.decode(Bool.self) {
                guard !flag else {
                    throw DecodingError.dataCorruptedError(in: container, debugDescription:
                        "'validated' must be false or a statement of what the model was validated on, not true")
                }
                self = .no
            } else {
                let text = try container.decode(String.self)
                self = text.isEmpty ? .no : .yes(text)
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .no: try container.encode(false)
            case .yes(let text): try container.encode(text)
            }
        }

        public var description: String {
            switch self {
            case .no: "not validated on real labels"
            case .yes(let text): text
            }
        }

        /// The statement, or nil when not validated.
        public var statement: String? {
            if case .yes(let text) = self { return text }
            return nil
        }
    }

    /// How a `task: segmentation` model's per-pixel output becomes a class map.
    public struct Segmentation: Codable, Sendable {
        /// Pixels (at the model's resolution) shared by neighbouring tiles, blended with a Gaussian
        /// weight that favours tile centres; default a quarter of the tile.
        public var overlap: Int?
        /// `softmax` (default: classes exclusive) or `sigmoid` (one probability per class),
        /// applied to the blended outputs.
        public var activation: String?
        /// The winning probability must exceed this, else the pixel is `background`.
        public var threshold: Double?
        /// The class a pixel falls to when no class passes `threshold`.
        public var background: String?

        public init(overlap: Int? = nil, activation: String? = nil, threshold: Double? = nil, background: String? = nil) {
            self.overlap = overlap
            self.activation = activation
            self.threshold = threshold
            self.background = background
        }
    }

    public var name: String
    public var displayName: String?
    public var output: Output?
    /// The segmentation block of a `task: segmentation` card.
    public var segmentation: Segmentation?
    public var version: String?
    public var task: String?
    public var classes: [String]
    public var input: Input
    public var params: Int?
    public var macs: Int?
    public var file: String?
    /// `baseline`, `compact`, ... (documentation; `models list` shows it).
    public var role: String?
    /// What the model was validated on (`false` when it was not).
    public var validated: Validation?
    /// An experimental model is never the default.
    public var experimental: Bool?
    /// Balanced accuracy on the card's real-label validation set (`metrics.balanced_accuracy`),
    /// read from the card; how the default model is chosen.
    public var realLabelBalancedAccuracy: Double?

    enum CodingKeys: String, CodingKey {
        case name, version, task, classes, input, params, macs, file, output, role, validated, experimental, segmentation
        case displayName = "display_name"
    }

    public init(name: String, displayName: String? = nil, output: Output? = nil, version: String? = nil,
                task: String? = "classification", classes: [String], input: Input, params: Int? = nil, macs: Int? = nil,
                file: String? = nil, role: String? = nil, validated: Validation? = nil, experimental: Bool? = nil) {
        self.name = name
        self.displayName = displayName
        self.output = output
        self.version = version
        self.task = task
        self.classes = classes
        self.input = input
        self.params = params
        self.macs = macs
        self.file = file
        self.role = role
        self.validated = validated
        self.experimental = experimental
    }

    /// A per-pixel model (`task: segmentation`): the pipeline blends overlapping tiles into a class map.
    public var isSegmentation: Bool { task == "segmentation" }

    /// The short `validated` field of `models list` and `summary.json`: the statement, or false.
    public var validationStatement: String? { validated?.statement }

    /// The temperature applied to logits before the softmax (1 when the card names none).
    public var temperature: Float {
        guard let value = output?.temperature, value.isFinite, value > 0 else { return 1 }
        return Float(value)
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
    /// The folder the model was found in.
    public var folder: String
}

/// Errors resolving models.
public struct ModelCatalogError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// Finds models by name in the models search path, or by path.
///
/// The search path is a list of folders, written as one string with `:` between folders
/// (`TESSERA_MODELS=/srv/lab-models:/opt/more`): the folders named by `TESSERA_MODELS` first, then
/// the shipped models folder, so a lab's own models add to the shipped ones instead of hiding them.
/// A folder holds one model per subfolder: `model.onnx` with Tessera's `model.json` card, or with
/// WSInfer's `config.json`.
public enum ModelCatalog {
    /// The default model: among the models whose cards state a real-label validation (and are
    /// not experimental), the one with the best measured balanced accuracy; when no card states
    /// one, the compact classifier, else the teacher, else the first model found.
    public static var defaultModel: String { defaultModel(in: directory) }

    /// The default model of a given search path (see ``defaultModel``).
    public static func defaultModel(in directory: String) -> String {
        let references = names(in: directory).compactMap { try? resolve($0, in: directory) }
        let validated = references.filter { $0.card.experimental != true && $0.card.validationStatement != nil }
        if let best = validated.max(by: { ($0.card.realLabelBalancedAccuracy ?? 0, $1.name) < ($1.card.realLabelBalancedAccuracy ?? 0, $0.name) }) {
            return best.name
        }
        let known = references.map(\.name)
        if known.contains(compactModel) { return compactModel }
        if known.contains(teacherModel) { return teacherModel }
        return known.first ?? compactModel
    }

    /// The compact CRC tissue classifier (experimental: distilled without human labels).
    public static let compactModel = "tessera-crc-compact"
    /// The DenseNet121 PathMNIST teacher.
    public static let teacherModel = "densenet121-pathmnist"

    /// The models search path: the folders in `$TESSERA_MODELS` (`:`-separated), then the shipped
    /// models folder (``shippedDirectory``).
    public static var directory: String {
        let extra = (ProcessInfo.processInfo.environment["TESSERA_MODELS"] ?? "")
            .split(separator: ":").map(String.init).filter { !$0.isEmpty }
        var folders: [String] = []
        for folder in extra + [shippedDirectory] where !folders.contains(folder) { folders.append(folder) }
        return folders.joined(separator: ":")
    }

    /// The shipped models folder: `models/` next to the executable's package (build tree, or the
    /// unpacked tarball's folder), else `/usr/share/tessera/models` (the Debian package), else
    /// `/opt/tessera/models` (the container image), else `./models`.
    public static var shippedDirectory: String {
        var url = URL(fileURLWithPath: executablePath).resolvingSymlinksInPath()
        for _ in 0..<5 {
            url.deleteLastPathComponent()
            let candidate = url.appendingPathComponent("models")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent(compactModel).path)
                || FileManager.default.fileExists(atPath: candidate.appendingPathComponent(teacherModel).path) {
                return candidate.path
            }
        }
        for folder in ["/usr/share/tessera/models", "/opt/tessera/models"] where FileManager.default.fileExists(atPath: folder) {
            return folder
        }
        return FileManager.default.currentDirectoryPath + "/models"
    }

    /// The folders of a search path, in order.
    public static func folders(of directory: String) -> [String] {
        directory.split(separator: ":").map(String.init).filter { !$0.isEmpty }
    }

    /// The running binary (`/proc/self/exe`; argv[0] may be a bare name found on PATH).
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments.first ?? "."
    }

    /// Model names in the search path (first folder wins when two hold the same name).
    public static func names(in directory: String = ModelCatalog.directory) -> [String] {
        var seen = Set<String>()
        for folder in folders(of: directory) {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
            for entry in entries where isModelFolder("\(folder)/\(entry)") { seen.insert(entry) }
        }
        return seen.sorted()
    }

    /// The folder that holds model `name`, if the search path has it.
    public static func location(of name: String, in directory: String = ModelCatalog.directory) -> String? {
        guard !name.contains("/") else { return nil }
        return folders(of: directory).lazy.map { "\($0)/\(name)" }.first(where: isModelFolder)
    }

    /// A model folder: a Tessera card, or an ONNX file with WSInfer's config.json.
    static func isModelFolder(_ folder: String) -> Bool {
        let fm = FileManager.default
        return fm.fileExists(atPath: folder + "/model.json")
            || (fm.fileExists(atPath: folder + "/config.json") && fm.fileExists(atPath: folder + "/model.onnx"))
    }

    /// Resolves a name in the search path, a model folder, or an .onnx path.
    public static func resolve(_ nameOrPath: String, in directory: String = ModelCatalog.directory) throws -> ModelReference {
        if nameOrPath.hasSuffix(".onnx") {
            guard FileManager.default.fileExists(atPath: nameOrPath) else {
                throw ModelCatalogError(description: "model file \(nameOrPath) does not exist")
            }
            let folder = (nameOrPath as NSString).deletingLastPathComponent
            if isModelFolder(folder.isEmpty ? "." : folder) {
                var reference = try load(folder: folder.isEmpty ? "." : folder, inCatalog: false)
                reference.path = nameOrPath
                reference.identifier = URL(fileURLWithPath: nameOrPath).standardizedFileURL.path
                return reference
            }
            let name = ((nameOrPath as NSString).lastPathComponent as NSString).deletingPathExtension
            let card = ModelCard(name: name, classes: [], input: .init(size: 224, mpp: 0.5))
            return ModelReference(name: name, path: nameOrPath, card: card, cardJSON: nil,
                                  identifier: URL(fileURLWithPath: nameOrPath).standardizedFileURL.path,
                                  folder: folder.isEmpty ? "." : folder)
        }
        if let folder = location(of: nameOrPath, in: directory) {
            return try load(folder: folder, inCatalog: true)
        }
        if isModelFolder(nameOrPath) {
            return try load(folder: nameOrPath, inCatalog: false)
        }
        let known = names(in: directory)
        throw ModelCatalogError(description: "unknown model '\(nameOrPath)'; known models: "
                                + (known.isEmpty ? "none in \(folders(of: directory).joined(separator: ", "))"
                                   : known.joined(separator: ", ")))
    }

    private static func load(folder: String, inCatalog: Bool) throws -> ModelReference {
        let cardPath = folder + "/model.json"
        var card: ModelCard
        let data: Data
        if FileManager.default.fileExists(atPath: cardPath) {
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: cardPath))
                card = try JSONDecoder().decode(ModelCard.self, from: data)
            } catch let error as DecodingError {
                throw ModelCatalogError(description: "\(cardPath): not a valid model card (\(describe(error)))")
            } catch {
                throw ModelCatalogError(description: "\(cardPath): cannot be read (\(error.localizedDescription))")
            }
            card.realLabelBalancedAccuracy = balancedAccuracy(inCard: data)
        } else {
            let configPath = folder + "/config.json"
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: configPath))
            } catch {
                throw ModelCatalogError(description: "\(configPath): cannot be read (\(error.localizedDescription))")
            }
            let name = (URL(fileURLWithPath: folder).standardizedFileURL.path as NSString).lastPathComponent
            card = try WSInferConfig.card(from: data, name: name, path: configPath)
        }
        let file = folder + "/" + (card.file ?? "model.onnx")
        guard FileManager.default.fileExists(atPath: file) else {
            throw ModelCatalogError(description: "\(folder): model file \(card.file ?? "model.onnx") is missing")
        }
        let standardized = URL(fileURLWithPath: folder).standardizedFileURL.path
        return ModelReference(name: card.name, path: file, card: card, cardJSON: data,
                              identifier: inCatalog ? card.name : standardized, folder: standardized)
    }

    /// The real-label balanced accuracy of a card: `metrics.balanced_accuracy`, or
    /// `metrics.validation.balanced_accuracy` (where the LC25000 recipe's cards keep it); a number,
    /// or an object with `value`/`point`/`estimate`.
    static func balancedAccuracy(inCard data: Data) -> Double? {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let metrics = object["metrics"] as? [String: Any],
              let value = metrics["balanced_accuracy"] ?? (metrics["validation"] as? [String: Any])?["balanced_accuracy"]
        else { return nil }
        if let number = value as? Double { return number }
        if let dict = value as? [String: Any] {
            for key in ["value", "point", "estimate", "mean"] { if let number = dict[key] as? Double { return number } }
        }
        return nil
    }

    /// A decoding error as one line naming the field.
    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return keys.isEmpty ? "top level" : keys.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = path(context)
            return "missing field '\(parent == "top level" ? key.stringValue : parent + "." + key.stringValue)'"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "field '\(path(context))' has the wrong type: \(context.debugDescription)"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not JSON: \(context.debugDescription)"
                : "field '\(path(context))': \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
