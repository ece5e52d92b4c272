import Foundation
import SwiftProtobuf

/// Decodes ONNX `ModelProto` bytes into a ``Graph``.
enum ONNXImport {
    /// Operators the engine implements (the reference set; the optimised path covers the hot ones).
    static let supportedOps: Set<String> = [
        "Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish",
        "Add", "Sub", "Mul", "Div", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool",
        "GlobalMaxPool", "Flatten", "Reshape", "Gemm", "MatMul", "Softmax", "Identity", "Dropout",
        "Constant", "Transpose", "Pad", "ReduceMean", "Cast", "Tanh", "Sqrt", "Neg", "Exp",
        "Squeeze", "Unsqueeze", "Shape", "Gather", "Slice", "ConstantOfShape", "Mish", "Erf", "Pow",
        "InstanceNormalization", "If",
    ]

    static func load(path: String) throws -> Graph {
        let url = URL(fileURLWithPath: path)
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ModelError.unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        return try decode(data, baseDirectory: url.deletingLastPathComponent().path)
    }

    static func decode(_ data: Data, baseDirectory: String?) throws -> Graph {
        if data.isEmpty { throw ModelError.notONNX(reason: "the file is empty") }
        let proto: Onnx_ModelProto
        do {
            proto = try Onnx_ModelProto(serializedBytes: data)
        } catch {
            throw ModelError.notONNX(reason: "protobuf decoding failed (\(error)); the file is truncated or not an .onnx model")
        }
        guard proto.hasGraph, !proto.graph.node.isEmpty else {
            throw ModelError.notONNX(reason: "no graph with nodes (truncated or not an .onnx model)")
        }
        guard proto.irVersion > 0 else { throw ModelError.notONNX(reason: "missing ir_version") }
        var opset = 0
        for entry in proto.opsetImport where entry.domain.isEmpty || entry.domain == "ai.onnx" {
            opset = Int(entry.version)
        }
        guard opset > 0 else { throw ModelError.notONNX(reason: "no default-domain opset_import") }
        let g = proto.graph

        var constants: [String: Tensor] = [:]
        var elementTypes: [String: Int] = [:]
        for t in g.initializer {
            constants[t.name] = try decodeTensor(t, baseDirectory: baseDirectory)
            elementTypes[t.name] = Int(t.dataType)
        }
        let nodes = try decodeNodes(g.node, baseDirectory: baseDirectory)
        let realInputs = g.input.filter { constants[$0.name] == nil }
        guard realInputs.count == 1, let input = realInputs.first else {
            throw ModelError.invalidGraph(reason: "expected exactly one non-initializer graph input, found \(realInputs.count) (\(realInputs.map(\.name)))")
        }
        guard input.type.tensorType.elemType == 1 else {
            throw ModelError.invalidGraph(reason: "input '\(input.name)' must be float32 (elem_type 1), is \(input.type.tensorType.elemType)")
        }
        let dims: [Int?] = input.type.tensorType.shape.dim.map { d in
            if case let .dimValue(v)? = d.value, v > 0 { return Int(v) }
            return nil
        }
        guard dims.count >= 2 else {
            throw ModelError.invalidGraph(reason: "input '\(input.name)' must have a batch dimension and at least one more (has rank \(dims.count))")
        }
        guard !g.output.isEmpty else { throw ModelError.invalidGraph(reason: "graph has no outputs") }
        var graph = Graph(nodes: nodes, constants: constants, inputName: input.name, inputDims: dims,
                          outputNames: g.output.map(\.name), opset: opset)
        if nodes.contains(where: { QDQ.ops.contains($0.opType) }) { try QDQ.strip(&graph, elementTypes: elementTypes) }
        return graph
    }

    /// Decodes nodes (those of the graph, or of an `If` branch), checking each operator is one the engine runs.
    static func decodeNodes(_ protoNodes: [Onnx_NodeProto], baseDirectory: String?, scope: String = "") throws -> [Node] {
        var nodes: [Node] = []
        nodes.reserveCapacity(protoNodes.count)
        for (index, n) in protoNodes.enumerated() {
            let name = n.name.isEmpty ? "\(scope)#\(index) (\(n.output.first ?? "?"))" : n.name
            if !(n.domain.isEmpty || n.domain == "ai.onnx") {
                throw ModelError.unsupportedOperator(op: "\(n.domain).\(n.opType)", node: name)
            }
            guard supportedOps.contains(n.opType) || Reference.extendedOps.contains(n.opType)
                    || QDQ.ops.contains(n.opType), n.opType != BatchBroadcast.opType else {
                throw ModelError.unsupportedOperator(op: n.opType, node: name)
            }
            var attributes: [String: Attribute] = [:]
            for a in n.attribute {
                switch a.type {
                case .int: attributes[a.name] = .int(Int(a.i))
                case .ints: attributes[a.name] = .ints(a.ints.map { Int(clamping: $0) })
                case .float: attributes[a.name] = .float(a.f)
                case .floats: attributes[a.name] = .floats(a.floats)
                case .string: attributes[a.name] = .string(String(decoding: a.s, as: UTF8.self))
                case .tensor: attributes[a.name] = .tensor(try decodeTensor(a.t, baseDirectory: baseDirectory))
                case .graph:
                    var constants: [String: Tensor] = [:]
                    for t in a.g.initializer { constants[t.name] = try decodeTensor(t, baseDirectory: baseDirectory) }
                    attributes[a.name] = .graph(Subgraph(
                        nodes: try decodeNodes(a.g.node, baseDirectory: baseDirectory, scope: "\(name)/\(a.name)/"),
                        constants: constants, outputNames: a.g.output.map(\.name)))
                default:
                    if a.hasI { attributes[a.name] = .int(Int(a.i)) }
                    else if a.hasF { attributes[a.name] = .float(a.f) }
                    else if !a.ints.isEmpty { attributes[a.name] = .ints(a.ints.map { Int(clamping: $0) }) }
                }
            }
            nodes.append(Node(name: name, opType: n.opType, inputs: n.input, outputs: n.output, attributes: attributes))
        }
        return nodes
    }

    /// Decodes a TensorProto to float32 values (integers are converted; shapes and indices stay exact).
    static func decodeTensor(_ t: Onnx_TensorProto, baseDirectory: String?) throws -> Tensor {
        let shape = t.dims.map { Int($0) }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw ModelError.invalidTensor(name: t.name, reason: "negative dim") }
        let count = shape.reduce(1, *)
        var raw = t.rawData
        if t.dataLocation == .external {
            raw = try readExternal(t, baseDirectory: baseDirectory)
        }
        var values: [Float]
        func fromRaw<T>(_: T.Type, _ convert: (T) -> Float) throws -> [Float] {
            let size = MemoryLayout<T>.size
            guard raw.count == count * size else {
                throw ModelError.invalidTensor(name: t.name, reason: "raw_data has \(raw.count) bytes, expected \(count * size)")
            }
            return raw.withUnsafeBytes { bytes in
                (0..<count).map { convert(bytes.loadUnaligned(fromByteOffset: $0 * size, as: T.self)) }
            }
        }
        switch t.dataType {
        case 1: // FLOAT
            if !raw.isEmpty || t.floatData.isEmpty {
                guard raw.count == count * 4 else {
                    throw ModelError.invalidTensor(name: t.name, reason: "raw_data has \(raw.count) bytes, expected \(count * 4)")
                }
                values = [Float](repeating: 0, count: count)
                values.withUnsafeMutableBytes { dst in raw.withUnsafeBytes { src in dst.copyMemory(from: src) } }
            } else { values = t.floatData }
        case 7: values = raw.isEmpty ? t.int64Data.map { Float($0) } : try fromRaw(Int64.self) { Float($0) }
        case 6: values = raw.isEmpty ? t.int32Data.map { Float($0) } : try fromRaw(Int32.self) { Float($0) }
        case 11: values = raw.isEmpty ? t.doubleData.map { Float($0) } : try fromRaw(Double.self) { Float($0) }
        case 9, 2: values = raw.isEmpty ? t.int32Data.map { Float($0) } : try fromRaw(UInt8.self) { Float($0) }
        case 3: values = raw.isEmpty ? t.int32Data.map { Float($0) } : try fromRaw(Int8.self) { Float($0) }
        case 10: // FLOAT16
            values = raw.isEmpty ? t.int32Data.map { Float(Float16(bitPattern: UInt16(truncatingIfNeeded: $0))) }
                : try fromRaw(UInt16.self) { Float(Float16(bitPattern: $0)) }
        default:
            throw ModelError.invalidTensor(name: t.name, reason: "unsupported data_type \(t.dataType)")
        }
        guard values.count == count else {
            throw ModelError.invalidTensor(name: t.name, reason: "\(values.count) values for shape \(shape)")
        }
        return Tensor(shape: shape, data: values)
    }

    static func readExternal(_ t: Onnx_TensorProto, baseDirectory: String?) throws -> Data {
        var location = "", offset = 0, length: Int?
        for entry in t.externalData {
            switch entry.key {
            case "location": location = entry.value
            case "offset": offset = Int(entry.value) ?? 0
            case "length": length = Int(entry.value)
            default: break
            }
        }
        guard !location.isEmpty, !location.contains(".."), let base = baseDirectory else {
            throw ModelError.invalidTensor(name: t.name, reason: "external data without a usable location")
        }
        let path = (base as NSString).appendingPathComponent(location)
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ModelError.invalidTensor(name: t.name, reason: "cannot open external data file \(path)")
        }
        defer { try? handle.close() }
        do {
            try handle.seek(toOffset: UInt64(offset))
            let data: Data?
            if let length { data = try handle.read(upToCount: length) } else { data = try handle.readToEnd() }
            return data ?? Data()
        } catch {
            throw ModelError.invalidTensor(name: t.name, reason: "reading external data failed: \(error)")
        }
    }
}
