import Foundation
import Testing
@testable import Engine

/// The INT8 path: per-output-channel int8 weights, uint8 activations with calibrated per-tensor
/// ranges. Against the FP32 reference each layer must stay within 5% (max |error| over max
/// |reference|); across ISA levels the results must be bit-identical (exact int32 sums, one
/// shared quantiser and epilogue).
@Suite struct QuantizedTests {
    /// ISA levels this CPU can run (every level the int8 tile has a build for).
    static let levels = CPUISA.allCases.filter(\.isSupported)

    static func int8(_ isa: CPUISA? = nil, split: Bool = false) -> EngineOptions {
        var o = EngineOptions()
        o.precision = .int8
        o.isa = isa
        if split { o.splitMinFlops = 0 }
        return o
    }

    /// Runs the int8 compile of `b` at every level; returns the worst error against the FP32
    /// reference and whether all levels agreed bit for bit.
    func check(_ b: ONNXBuilder, inputShape: [Int], batch: Int, threads: Int = 1, microBatch: Int = 16,
               seed: UInt64 = 3) throws -> (error: Float, identical: Bool, int8Steps: Int) {
        let fp32 = try b.model(inputShape: inputShape)
        var rng = TestRNG(seed: seed)
        let input = Tensor(shape: [batch] + inputShape, data: rng.floats(batch * inputShape.reduce(1, *)))
        let calibration = try fp32.calibrate(input)
        let reference = try fp32.referenceRun(input)[0]
        var first: [Float]?
        var identical = true, worst: Float = 0, steps = 0
        for isa in Self.levels {
            let model = try Model(data: b.data(inputShape: inputShape), options: Self.int8(isa, split: threads > 1),
                                  calibration: calibration)
            #expect(model.isa == isa)
            steps = model.program.steps.filter { step in
                switch step {
                case let .conv(c): c.q8 != nil
                case let .gemm(g): g.q8 != nil
                default: false
                }
            }.count
            let out = try Session(model: model, threads: threads, microBatch: microBatch).run(input).outputs[0].data
            worst = max(worst, relativeError(out, reference.data))
            if let first { identical = identical && first == out } else { first = out }
        }
        return (worst, identical, steps)
    }

    @Test(arguments: 0..<12) func convRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(900 + seed))
        var b = ONNXBuilder()
        let cin = rng.int(1...37), cout = [3, 8, 16, 17, 32, 40][seed % 6]
        let kh = [3, 1, 5, 3][seed % 4], kw = [3, 1, 3, 2][seed % 4]
        let s = rng.int(1...2), d = seed % 5 == 4 ? 2 : 1
        let pads = (0..<4).map { _ in rng.int(0...2) }
        let h = (kh - 1) * d + 1 + rng.int(0...12), w = (kw - 1) * d + 1 + rng.int(0...20)
        b.constant("w", [cout, cin, kh, kw], rng.floats(cout * cin * kh * kw))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [kh, kw], "strides": [s, s],
               "dilations": [d, d], "pads": pads])
        b.node(["Relu", "Identity", "Sigmoid"][seed % 3], ["c"], ["y"])
        let r = try check(b, inputShape: [cin, h, w], batch: 1 + seed % 4, threads: 1 + seed % 2, microBatch: 2)
        #expect(r.int8Steps == 1)
        #expect(r.error < 0.05, "seed \(seed) error \(r.error)")
        #expect(r.identical, "seed \(seed)")
    }

    /// A small network: conv, residual add + ReLU fused into a 1x1 conv, global pool, Gemm.
    @Test func residualBlockAndGemm() throws {
        var rng = TestRNG(seed: 41)
        var b = ONNXBuilder()
        b.constant("w0", [16, 3, 3, 3], rng.floats(16 * 27, scale: 0.5))
        b.constant("b0", [16], rng.floats(16, scale: 0.1))
        b.node("Conv", ["x", "w0", "b0"], ["a"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
        b.node("Relu", ["a"], ["a1"])
        b.constant("w1", [16, 16, 1, 1], rng.floats(256, scale: 0.5))
        b.node("Conv", ["a1", "w1"], ["p"], ints: ["kernel_shape": [1, 1]])
        b.node("Add", ["p", "a1"], ["r"])
        b.node("Relu", ["r"], ["r1"])
        b.node("GlobalAveragePool", ["r1"], ["g"])
        b.node("Flatten", ["g"], ["f"])
        b.constant("fc", [5, 16], rng.floats(80))
        b.constant("fb", [5], rng.floats(5))
        b.node("Gemm", ["f", "fc", "fb"], ["y"], int: ["transB": 1])
        let r = try check(b, inputShape: [3, 20, 18], batch: 6, threads: 2, microBatch: 4)
        #expect(r.int8Steps == 3)
        #expect(r.error < 0.05, "error \(r.error)")
        #expect(r.identical)
    }

    @Test func calibrationIsDeterministicAndRequired() throws {
        var rng = TestRNG(seed: 5)
        var b = ONNXBuilder()
        b.constant("w", [8, 4, 3, 3], rng.floats(8 * 36))
        b.node("Conv", ["x", "w"], ["y"], ints: ["kernel_shape": [3, 3]])
        let model = try b.model(inputShape: [4, 9, 9])
        let input = Tensor(shape: [20, 4, 9, 9], data: rng.floats(20 * 324))
        let one = try model.calibrate(input), two = try model.calibrate(input)
        #expect(try one.encoded() == two.encoded())
        #expect(one.images == 20 && one.ranges.keys.sorted() == ["x"])
        #expect(try Calibration.decode(one.encoded()) == one)
        #expect(throws: ModelError.self) { try b.model(inputShape: [4, 9, 9], options: Self.int8()) }
        var bf16 = EngineOptions()
        bf16.precision = .bf16
        #expect(throws: ModelError.self) { try b.model(inputShape: [4, 9, 9], options: bf16) }
    }
}
