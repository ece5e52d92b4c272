import CEngineKernels
import Foundation
import Testing
@testable import Engine

/// The BF16 path: inputs and weights rounded to bfloat16, products accumulated in fp32
/// (`vdpbf16ps` on avx512-bf16, fp32 FMAs on the rounded values on avx512, plain C below). Against
/// the FP32 reference each layer must stay within 2% (max |error| over max |reference|; bf16 keeps
/// 8 significant bits), on every level the CPU runs; the level's kernels must agree with each other
/// within the same bound.
@Suite struct BF16Tests {
    static let levels = CPUISA.allCases.filter(\.isSupported)

    func check(_ b: ONNXBuilder, inputShape: [Int], batch: Int, threads: Int = 1, microBatch: Int = 16) throws
        -> (error: Float, spread: Float, bf16Steps: Int) {
        let fp32 = try b.model(inputShape: inputShape)
        var rng = TestRNG(seed: 11)
        let input = Tensor(shape: [batch] + inputShape, data: rng.floats(batch * inputShape.reduce(1, *)))
        let reference = try fp32.referenceRun(input)[0]
        var first: [Float]?
        var worst: Float = 0, spread: Float = 0, steps = 0
        for isa in Self.levels {
            var options = EngineOptions()
            options.precision = .bf16
            options.isa = isa
            if threads > 1 { options.splitMinFlops = 0 }
            let model = try Model(data: b.data(inputShape: inputShape), options: options)
            steps = model.program.steps.filter { step in
                switch step {
                case let .conv(c): c.bf16 != nil
                case let .gemm(g): g.bf16 != nil
                default: false
                }
            }.count
            let out = try Session(model: model, threads: threads, microBatch: microBatch).run(input).outputs[0].data
            worst = max(worst, relativeError(out, reference.data))
            if let first { spread = max(spread, relativeError(out, first)) } else { first = out }
        }
        return (worst, spread, steps)
    }

    @Test(arguments: 0..<10) func convRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(500 + seed))
        var b = ONNXBuilder()
        var cin = rng.int(1...41), cout = [3, 16, 17, 32, 40, 64, 70, 96, 33, 130][seed]
        let kh = [3, 1, 5, 3, 7][seed % 5], kw = [3, 1, 3, 2, 7][seed % 5]
        if kh * kw == 1 { cin += 64; cout += 64 }  // smaller 1x1 layers stay fp32
        let s = rng.int(1...2), d = seed % 4 == 3 ? 2 : 1
        let pads = (0..<4).map { _ in rng.int(0...2) }
        let h = (kh - 1) * d + 1 + rng.int(0...12), w = (kw - 1) * d + 1 + rng.int(0...20)
        b.constant("w", [cout, cin, kh, kw], rng.floats(cout * cin * kh * kw, scale: 1 / Float(cin * kh * kw).squareRoot()))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [kh, kw], "strides": [s, s], "dilations": [d, d], "pads": pads])
        b.node(["Relu", "Identity", "Sigmoid"][seed % 3], ["c"], ["y"])
        let r = try check(b, inputShape: [cin, h, w], batch: 1 + seed % 4, threads: 1 + seed % 2, microBatch: 2)
        #expect(r.bf16Steps == 1)
        #expect(r.error < 0.02, "seed \(seed) error \(r.error)")
        #expect(r.spread < 0.02, "seed \(seed) spread \(r.spread)")
    }

    /// Conv, residual add + ReLU fused into a 1x1 conv, global pool, Gemm.
    @Test func residualBlockAndGemm() throws {
        let b = ONNXBuilder.residualBlockAndGemm(seed: 43)
        let r = try check(b, inputShape: [3, 20, 18], batch: 6, threads: 2, microBatch: 4)
        #expect(r.bf16Steps == 3)
        #expect(r.error < 0.02, "error \(r.error)")
        #expect(r.spread < 0.02, "spread \(r.spread)")
    }

    /// The rounding: nearest even on the 16 dropped bits, NaN kept NaN.
    @Test func roundsToNearestEven() {
        #expect(tessera_engine_bf16_round(1.0) == 1.0)
        #expect(tessera_engine_bf16_round(Float(bitPattern: 0x3F80_8000)) == 1.0)  // tie, even stays
        #expect(tessera_engine_bf16_round(Float(bitPattern: 0x3F81_8000)) == Float(bitPattern: 0x3F82_0000))  // tie, odd rounds up
        #expect(tessera_engine_bf16_round(Float(bitPattern: 0x3F80_8001)) == Float(bitPattern: 0x3F81_0000))
        #expect(tessera_engine_bf16_round(.nan).isNaN)
        #expect(tessera_engine_bf16_round(.greatestFiniteMagnitude) == .infinity)  // rounds past the largest bf16
    }
}
