import Foundation

/// A WSInfer model folder's `config.json` (`model.onnx` beside it), read as a Tessera card.
///
/// WSInfer cuts patches of `patch_size_pixels` at `spacing_um_px` and its `transform` resizes them
/// to the network's input. Tessera reads patches at the network's input size directly, so the same
/// tissue area is covered at `mpp = spacing_um_px * patch_size_pixels / input size`: a 350 px patch
/// at 0.25 um/px resized to 224 px is read as 224 px at 0.390625 um/px.
struct WSInferConfig: Decodable {
    struct Transform: Decodable {
        var name: String
        var arguments: Arguments?
    }

    struct Arguments: Decodable {
        var size: Size?
        var mean: [Float]?
        var std: [Float]?
    }

    /// `Resize`'s size: one number or `[height, width]`.
    struct Size: Decodable {
        var height: Int
        var width: Int

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let side = try? container.decode(Int.self) {
                height = side
                width = side
            } else {
                let pair = try container.decode([Int].self)
                guard pair.count == 2 else {
                    throw DecodingError.dataCorruptedError(in: container, debugDescription: "size must be N or [H, W]")
                }
                height = pair[0]
                width = pair[1]
            }
        }
    }

    var specVersion: String?
    var architecture: String?
    var numClasses: Int?
    var classNames: [String]
    var patchSizePixels: Int
    var spacingUmPx: Double
    var transform: [Transform]?

    enum CodingKeys: String, CodingKey {
        case architecture, transform
        case specVersion = "spec_version", numClasses = "num_classes", classNames = "class_names"
        case patchSizePixels = "patch_size_pixels", spacingUmPx = "spacing_um_px"
    }

    /// The Tessera card this configuration describes.
    static func card(from data: Data, name: String, path: String) throws -> ModelCard {
        let config: WSInferConfig
        do {
            config = try JSONDecoder().decode(WSInferConfig.self, from: data)
        } catch let error as DecodingError {
            throw ModelCatalogError(description: "\(path): not a valid WSInfer config (\(ModelCatalog.describe(error)))")
        }
        guard config.patchSizePixels > 0, config.spacingUmPx > 0 else {
            throw ModelCatalogError(description: "\(path): patch_size_pixels and spacing_um_px must be positive")
        }
        if let count = config.numClasses, count != config.classNames.count {
            throw ModelCatalogError(description: "\(path): num_classes is \(count) but class_names has \(config.classNames.count) names")
        }
        var size = config.patchSizePixels
        var mean: [Float] = [0, 0, 0]
        var std: [Float] = [1, 1, 1]
        for step in config.transform ?? [] {
            switch step.name {
            case "Resize":
                guard let resize = step.arguments?.size, resize.height == resize.width, resize.height > 0 else {
                    throw ModelCatalogError(description: "\(path): Resize needs one positive square size")
                }
                size = resize.height
            case "Normalize":
                guard let m = step.arguments?.mean, let s = step.arguments?.std, m.count == 3, s.count == 3,
                      s.allSatisfy({ $0 > 0 }) else {
                    throw ModelCatalogError(description: "\(path): Normalize needs 3 means and 3 positive stds")
                }
                mean = m
                std = s
            case "ToTensor":
                break
            default:
                throw ModelCatalogError(description: "\(path): transform '\(step.name)' is not supported (Resize, ToTensor, Normalize are)")
            }
        }
        let mpp = config.spacingUmPx * Double(config.patchSizePixels) / Double(size)
        return ModelCard(
            name: name, displayName: config.architecture.map { "\(name) (WSInfer \($0))" } ?? "\(name) (WSInfer)",
            output: .init(name: nil, kind: "logits"), task: "classification", classes: config.classNames,
            input: .init(size: size, channels: 3, layout: "NCHW", mpp: mpp,
                         normalisation: .init(scale: 1.0 / 255, mean: mean, std: std)),
            file: "model.onnx", validated: ModelCard.Validation.no)
    }
}
