import Engine
import Foundation

/// Checks a model card against the ONNX graph it describes, at load time: a card that disagrees
/// with its network is a load error naming the card field, never a job that runs and invents
/// results (a 2-class card on a 9-output network) or fails later.
enum ModelCardCheck {
    /// Loads `reference`'s ONNX file with the card's input size and checks the card against it.
    /// An `int8` precision reads the calibration `tessera models quantize` wrote beside the model.
    static func load(_ reference: ModelReference, options: EngineOptions = EngineOptions()) throws -> Model {
        let card = reference.card
        let where_ = reference.cardJSON == nil ? reference.path : reference.folder
        if let layout = card.input.layout, layout.uppercased() != "NCHW" {
            throw ModelCatalogError(description: "\(where_): card input.layout is '\(layout)'; Tessera feeds NCHW tensors")
        }
        let channels = card.input.channels ?? 3
        guard channels == 3 else {
            throw ModelCatalogError(description: "\(where_): card input.channels is \(channels); Tessera feeds RGB (3 channels)")
        }
        if let kind = card.output?.kind, !["softmax", "logits", "probabilities"].contains(kind) {
            throw ModelCatalogError(description: "\(where_): card output.kind is '\(kind)'; use 'softmax' or 'logits'")
        }
        if let transform = card.input.colourTransform, transform != "eho" {
            throw ModelCatalogError(description: "\(where_): card input.colour_transform is '\(transform)'; the one Tessera knows is 'eho'")
        }
        guard card.input.size > 0 else {
            throw ModelCatalogError(description: "\(where_): card input.size must be positive")
        }
        let size = card.input.size
        let model: Model
        do {
            let calibration = options.precision == .int8 ? try ModelQuantize.loadIfPresent(forModelFile: reference.path) : nil
            model = try Model(contentsOf: reference.path, inputShape: [3, size, size], options: options, calibration: calibration)
        } catch ModelError.inputShapeMismatch(let expected, _) {
            throw ModelCatalogError(description: "\(where_): card input.size \(size) (and 3 channels) does not fit the ONNX "
                                    + "input, which is \(expected)")
        }
        guard let outputShape = model.outputShapes.first else {
            throw ModelCatalogError(description: "\(reference.path): the ONNX graph has no output")
        }
        if card.isSegmentation {
            guard outputShape.count == 3, outputShape[1] == size, outputShape[2] == size else {
                throw ModelCatalogError(description: "\(where_): card task is segmentation but the ONNX output '\(model.outputNames[0])' "
                                        + "is \(outputShape) per image, not [classes, \(size), \(size)] (one map per class at the input's size)")
            }
            guard card.classes.count == outputShape[0] else {
                throw ModelCatalogError(description: "\(where_): card classes lists \(card.classes.count) classes but the ONNX output '"
                                        + "\(model.outputNames[0])' has \(outputShape[0]) class maps")
            }
            _ = try SegmentationRule(card: card, classes: outputShape[0])
            return model
        } else if let task = card.task, task != "classification" {
            throw ModelCatalogError(description: "\(where_): card task is '\(task)'; Tessera runs 'classification' and 'segmentation' models")
        }
        let width = outputShape.reduce(1, *)
        if !card.classes.isEmpty, card.classes.count != width {
            throw ModelCatalogError(description: "\(where_): card classes lists \(card.classes.count) classes but the ONNX output '"
                                    + "\(model.outputNames[0])' has \(width) values per image")
        }
        return model
    }
}
