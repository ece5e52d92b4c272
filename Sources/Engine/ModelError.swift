/// Everything that can go wrong loading or running a model, each case with a readable description.
public enum ModelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file could not be read.
    case unreadable(path: String, reason: String)
    /// The bytes are not a (complete) ONNX protobuf `ModelProto`.
    case notONNX(reason: String)
    /// The graph uses an operator the engine does not implement.
    case unsupportedOperator(op: String, node: String)
    /// A node's attributes or inputs are outside what the engine supports or ONNX allows.
    case invalidNode(op: String, node: String, reason: String)
    /// The graph is malformed (missing tensor, bad input declaration, ...).
    case invalidGraph(reason: String)
    /// An initializer could not be decoded.
    case invalidTensor(name: String, reason: String)
    /// The input passed to `run` does not match the model's input.
    case inputShapeMismatch(expected: String, got: String)
    /// Invalid run or session options.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): "cannot read model file \(path): \(reason)"
        case let .notONNX(reason): "not an ONNX model: \(reason)"
        case let .unsupportedOperator(op, node): "unsupported ONNX operator '\(op)' at node '\(node)'"
        case let .invalidNode(op, node, reason): "invalid \(op) node '\(node)': \(reason)"
        case let .invalidGraph(reason): "invalid ONNX graph: \(reason)"
        case let .invalidTensor(name, reason): "invalid tensor '\(name)': \(reason)"
        case let .inputShapeMismatch(expected, got): "input shape mismatch: model expects \(expected), got \(got)"
        case let .invalidArgument(message): "invalid argument: \(message)"
        }
    }
}
