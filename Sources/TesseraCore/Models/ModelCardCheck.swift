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
        guard card.input.size > 0 else {
            throw ModelCatalogError(description: "\(where_): card input.size must be positive")
        }
        let size = card.input.size
        let model: Model
        do {
            let calibration = options.precision == .int8 ? try ModelQuantize.load(forModelFile: reference.path) : nil
            model = try Model(contentsOf: reference.path, inputShape: [3, size, size], options: options, calibration: calibration)
        } catch ModelError.inputShapeMismatch(let expected, _) {
            throw ModelCatalogError(description: "\(where_): card input.size \(size) (and 3 channels) does not fit the ONNX "
                                    + "input, which is \(expected)")
        }
        guard let outputShape = model.outputShapes.first else {
            throw ModelCatalogError(description: "\(reference.path): the ONNX graph has no output")
        }
        let width = outputShape.reduce(1, *)
        if !card.classes.isEmpty, card.classes.count != width {
            throw ModelCatalogError(description: "\(where_): card classes lists \(card.classes.count) classes but the ONNX output '"
                                    + "\(model.outputNames[0])' has \(width) values per image")
        }
        return model
    }
}
