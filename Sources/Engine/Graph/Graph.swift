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
