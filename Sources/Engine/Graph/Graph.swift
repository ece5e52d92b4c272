/// A node attribute, decoded from `AttributeProto`.
enum Attribute: Sendable {
    case int(Int)
    case ints([Int])
    case float(Float)
    case floats([Float])
    case string(String)
    case tensor(Tensor)
    /// A subgraph (an `If` branch).
    case graph(Subgraph)
}

/// A node's subgraph (an `If` branch): its nodes, its own initializers and the names of its
/// outputs; its nodes may read any value defined before the node that holds it.
struct Subgraph: Sendable {
    var nodes: [Node]
    var constants: [String: Tensor]
    var outputNames: [String]
}

/// One ONNX node, decoded. Inputs that are absent (empty name) are kept as "".
struct Node: Sendable {
    var name: String
    var opType: String
    var inputs: [String]
    var outputs: [String]
    var attributes: [String: Attribute]

    func error(_ reason: String) -> ModelError { .invalidNode(op: opType, node: name, reason: reason) }

    func int(_ key: String, _ fallback: Int) -> Int {
        if case let .int(v)? = attributes[key] { return v }
        return fallback
    }
    func ints(_ key: String) -> [Int]? {
        if case let .ints(v)? = attributes[key] { return v }
        return nil
    }
    func float(_ key: String, _ fallback: Float) -> Float {
        if case let .float(v)? = attributes[key] { return v }
        return fallback
    }
    func string(_ key: String, _ fallback: String) -> String {
        if case let .string(v)? = attributes[key] { return v }
        return fallback
    }
    /// The branch an `If` takes for `condition`.
    func branch(_ condition: Bool) throws -> Subgraph {
        guard case let .graph(g)? = attributes[condition ? "then_branch" : "else_branch"] else {
            throw error("no \(condition ? "then_branch" : "else_branch") subgraph")
        }
        guard g.outputNames.count == outputs.count else {
            throw error("the branch has \(g.outputNames.count) outputs, the node \(outputs.count)")
        }
        return g
    }
    /// A 3-D pool over the first spatial axis only (`[k, 1, 1]` windows: torch's LocalResponseNorm
    /// averages squares across channels this way) as the 2-D pool it is once the last two axes are
    /// merged; nil for any other node.
    func depthPoolAs2D() -> Node? {
        guard ["AveragePool", "MaxPool"].contains(opType), outputs.filter({ !$0.isEmpty }).count == 1,
              let kernel = ints("kernel_shape"), kernel.count == 3, kernel[1] == 1, kernel[2] == 1 else { return nil }
        let strides = ints("strides") ?? [1, 1, 1], pads = ints("pads") ?? [0, 0, 0, 0, 0, 0]
        guard strides.count == 3, strides[1] == 1, strides[2] == 1, pads.count == 6, pads[1] == 0, pads[2] == 0,
              pads[4] == 0, pads[5] == 0, (ints("dilations") ?? [1, 1, 1]).allSatisfy({ $0 == 1 }),
              string("auto_pad", "NOTSET") == "NOTSET" else { return nil }
        var flat = self
        flat.attributes["kernel_shape"] = .ints([kernel[0], 1])
        flat.attributes["strides"] = .ints([strides[0], 1])
        flat.attributes["pads"] = .ints([pads[0], 0, pads[3], 0])
        flat.attributes["dilations"] = nil
        return flat
    }
    /// The i-th input name, or nil when absent.
    func input(_ i: Int) -> String? { i < inputs.count && !inputs[i].isEmpty ? inputs[i] : nil }
}

/// The decoded graph: nodes in topological order, constant tensors (initializers and
/// `Constant` outputs), the one batched image input and the outputs.
struct Graph: Sendable {
    var nodes: [Node]
    var constants: [String: Tensor]
    var inputName: String
    /// Declared input dims; nil for symbolic dims.
    var inputDims: [Int?]
    var outputNames: [String]
    var opset: Int
    /// A QDQ model's activation ranges (`[min, max]` of what each QuantizeLinear could represent,
    /// by the float tensor it quantised): the INT8 calibration the model brings (see ``QDQ``).
    var quantizationRanges: [String: [Float]] = [:]
}
