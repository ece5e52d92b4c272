import Foundation
import SwiftProtobuf
@testable import Engine

/// Deterministic xorshift generator for test data.
struct TestRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] {
        (0..<n).map { _ in Float.random(in: -scale...scale, using: &self) }
    }
    mutating func int(_ r: ClosedRange<Int>) -> Int { Int.random(in: r, using: &self) }
}

/// Builds small ONNX models in memory with the generated protobuf types.
struct ONNXBuilder {
    var nodes: [Onnx_NodeProto] = []
    var initializers: [Onnx_TensorProto] = []
    var opset: Int64 = 17

    mutating func constant(_ name: String, _ shape: [Int], _ values: [Float]) {
        var t = Onnx_TensorProto()
        t.name = name
        t.dims = shape.map { Int64($0) }
        t.dataType = 1
        t.floatData = values
        initializers.append(t)
    }

    mutating func int64Constant(_ name: String, _ values: [Int]) {
        var t = Onnx_TensorProto()
        t.name = name
        t.dims = [Int64(values.count)]
        t.dataType = 7
        t.int64Data = values.map { Int64($0) }
        initializers.append(t)
    }

    mutating func node(_ op: String, _ inputs: [String], _ outputs: [String], name: String? = nil,
                       ints: [String: [Int]] = [:], int: [String: Int] = [:], float: [String: Float] = [:],
                       string: [String: String] = [:]) {
        var n = Onnx_NodeProto()
        n.opType = op
        n.name = name ?? "\(op)_\(nodes.count)"
        n.input = inputs
        n.output = outputs
        for (k, v) in ints { var a = Onnx_AttributeProto(); a.name = k; a.type = .ints; a.ints = v.map { Int64($0) }; n.attribute.append(a) }
        for (k, v) in int { var a = Onnx_AttributeProto(); a.name = k; a.type = .int; a.i = Int64(v); n.attribute.append(a) }
        for (k, v) in float { var a = Onnx_AttributeProto(); a.name = k; a.type = .float; a.f = v; n.attribute.append(a) }
        for (k, v) in string { var a = Onnx_AttributeProto(); a.name = k; a.type = .string; a.s = Data(v.utf8); n.attribute.append(a) }
        nodes.append(n)
    }

    /// Serialized model with input "x" of shape [N] + inputShape and one output.
    func data(inputShape: [Int], output: String = "y") throws -> Data {
        var m = Onnx_ModelProto()
        m.irVersion = 8
        var op = Onnx_OperatorSetIdProto(); op.version = opset
        m.opsetImport = [op]
        var g = Onnx_GraphProto()
        g.name = "test"
        g.node = nodes
        g.initializer = initializers
        var input = Onnx_ValueInfoProto()
        input.name = "x"
        var tt = Onnx_TypeProto.Tensor()
        tt.elemType = 1
        var batch = Onnx_TensorShapeProto.Dimension(); batch.dimParam = "N"
        tt.shape.dim = [batch] + inputShape.map { var d = Onnx_TensorShapeProto.Dimension(); d.dimValue = Int64($0); return d }
        input.type.tensorType = tt
        g.input = [input]
        var out = Onnx_ValueInfoProto(); out.name = output
        g.output = [out]
        m.graph = g
        return try m.serializedData()
    }

    func model(inputShape: [Int], output: String = "y", options: EngineOptions = EngineOptions()) throws -> Model {
        try Model(data: data(inputShape: inputShape, output: output), options: options)
    }
}

/// max |a - b| / max(max |b|, 1e-6).
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    var diff: Float = 0, scale: Float = 1e-6
    for i in a.indices {
        diff = max(diff, abs(a[i] - b[i]))
        scale = max(scale, abs(b[i]))
    }
    return diff / scale
}

/// Runs `model` through the optimised session and the reference interpreter on random input.
func compareWithReference(_ model: Model, batch: Int, threads: Int = 1, microBatch: Int = 16,
                          seed: UInt64 = 1) throws -> Float {
    var rng = TestRNG(seed: seed)
    let input = Tensor(shape: [batch] + model.inputShape, data: rng.floats(batch * model.inputShape.reduce(1, *)))
    let session = try Session(model: model, threads: threads, microBatch: microBatch)
    let fast = try session.run(input)
    let reference = try model.referenceRun(input)
    var worst: Float = 0
    for (f, r) in zip(fast.outputs, reference) {
        precondition(f.shape == r.shape, "shape \(f.shape) vs reference \(r.shape)")
        worst = max(worst, relativeError(f.data, r.data))
    }
    return worst
}

func fixtureURL(_ name: String) -> URL {
    Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil)!
}

func readFloats(_ url: URL) throws -> [Float] {
    let data = try Data(contentsOf: url)
    return data.withUnsafeBytes { raw in (0..<(data.count / 4)).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) } }
}
