import Testing
@testable import Engine

/// The fast paths for values whose last axis is the feature axis (NHWC maps after a permute,
/// transformer tokens): Transpose as a strided copy, MatMul by a constant as one product over all
/// rows with its bias Add and GELU folded in, LayerNormalization row by row, Erf vectorised; vs the
/// reference interpreter.
@Suite struct TokenLayoutTests {
    /// ConvNeXt's block after the depthwise conv: permute to NHWC, LayerNorm, Linear, GELU (erf form),
    /// Linear, permute back, residual Add.
    func convNeXtBlock(_ rng: inout TestRNG, c: Int, h: Int, w: Int, biasFirst: Bool) -> ONNXBuilder {
        var b = ONNXBuilder()
        b.constant("w1", [c, 4 * c], rng.floats(c * 4 * c))
        b.constant("b1", [4 * c], rng.floats(4 * c))
        b.constant("w2", [4 * c, c], rng.floats(4 * c * c))
        b.constant("b2", [c], rng.floats(c))
        b.constant("sqrt2", [], [1.4142135])
        b.constant("one", [], [1])
        b.constant("half", [], [0.5])
        b.constant("lns", [c], rng.floats(c))
        b.constant("lnb", [c], rng.floats(c))
        b.node("Transpose", ["x"], ["t"], ints: ["perm": [0, 2, 3, 1]])
        b.node("LayerNormalization", ["t", "lns", "lnb"], ["tn"], int: ["axis": -1], float: ["epsilon": 1e-6])
        b.node("MatMul", ["tn", "w1"], ["m1"])
        b.node("Add", biasFirst ? ["b1", "m1"] : ["m1", "b1"], ["a1"])
        b.node("Div", ["a1", "sqrt2"], ["d"])
        b.node("Erf", ["d"], ["e"])
        b.node("Add", ["e", "one"], ["e1"])
        b.node("Mul", ["a1", "e1"], ["g0"])
        b.node("Mul", ["g0", "half"], ["g"])
        b.node("MatMul", ["g", "w2"], ["m2"])
        b.node("Add", ["m2", "b2"], ["a2"])
        b.node("Transpose", ["a2"], ["back"], ints: ["perm": [0, 3, 1, 2]])
        b.node("Add", ["back", "x"], ["y"])
        return b
    }

    @Test(arguments: 0..<6) func convNeXtBlockMatchesReference(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(1300 + seed))
        let c = [3, 8, 17][seed % 3], h = rng.int(1...9), w = rng.int(1...11)
        let b = convNeXtBlock(&rng, c: c, h: h, w: w, biasFirst: seed % 2 == 1)
        let model = try b.model(inputShape: [c, h, w])
        let steps = model.program.steps
        // Nothing left on the reference interpreter; both Linear layers one product with the bias folded.
        #expect(!steps.contains { if case .fallback = $0 { true } else { false } })
        let gemms = steps.compactMap { if case let .gemm(g) = $0 { g } else { nil } }
        #expect(gemms.map(\.rows) == [h * w, h * w])
        #expect(!steps.contains { if case .binary(_, _, .lastAxisConstant, _, _) = $0 { true } else { false } })
        #expect(steps.filter { if case .transpose = $0 { true } else { false } }.count == 2)
        // GELU's five steps are one activation, fused into the first product.
        #expect(gemms.map(\.activation) == [.gelu, .none])
        #expect(steps.contains { if case .layerNorm = $0 { true } else { false } })
        for (batch, threads, micro) in [(1, 1, 16), (5, 2, 2), (9, 2, 16)] {
            #expect(try compareWithReference(model, batch: batch, threads: threads, microBatch: micro) < 1e-4, "seed \(seed)")
        }
    }

    /// Attention on batched values ([N, heads, S, d]): the two MatMuls between values run as
    /// per-matrix products on the engine's step and the Softmax over the last axis row by row,
    /// nothing of it on the reference path; odd sizes, micro-batches of 1 and 2.
    @Test(arguments: [(5, 2, 6), (7, 3, 4), (1, 1, 9)]) func attentionOnEngineSteps(s: Int, heads: Int, d: Int) throws {
        var rng = TestRNG(seed: UInt64(40 + s))
        var b = ONNXBuilder()
        let e = heads * d
        for (i, name) in ["q", "k", "v"].enumerated() {
            b.constant("w\(name)", [e, e], rng.floats(e * e, scale: 0.4))
            b.node("MatMul", ["x", "w\(name)"], ["\(name)0"])
            b.int64Constant("split\(i)", [-1, s, heads, d])
            b.node("Reshape", ["\(name)0", "split\(i)"], ["\(name)1"])
            b.node("Transpose", ["\(name)1"], ["\(name)"], ints: ["perm": name == "k" ? [0, 2, 3, 1] : [0, 2, 1, 3]])
        }
        b.node("MatMul", ["q", "k"], ["scores"])
        b.node("Softmax", ["scores"], ["p"], int: ["axis": -1])
        b.node("MatMul", ["p", "v"], ["y"])
        // The batched products run on the engine's tile at the AVX-512 level, on OpenBLAS below it.
        for isa in [CPUISA.detected.resolved, .avx2, .portable] {
            var options = EngineOptions()
            options.isa = isa
            let model = try b.model(inputShape: [s, e], options: options)
            let steps = model.program.steps
            #expect(steps.filter { if case .batchedMatMul = $0 { true } else { false } }.count == 2)
            #expect(steps.contains { if case .rowSoftmax = $0 { true } else { false } })
            #expect(!steps.contains { if case .fallback = $0 { true } else { false } }, "\(steps.map { $0.label(model.program, nb: 1) })")
            #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) < 1e-5, "\(isa)")
            #expect(try compareWithReference(model, batch: 2, threads: 1, microBatch: 1) < 1e-5, "\(isa)")
        }
    }

    /// torch's MultiheadAttention layout ([N, S, E] -> [S, N, E]), run image by image: its
    /// Transposes, the projections by constants and the Softmax on the whole-tensor steps.
    @Test func seqFirstAttentionOnEngineSteps() throws {
        var rng = TestRNG(seed: 77)
        var b = ONNXBuilder()
        b.node("Transpose", ["x"], ["t"], ints: ["perm": [1, 0, 2]])                // [S, N, E]
        b.constant("w", [8, 12], rng.floats(96, scale: 0.4))
        b.node("MatMul", ["t", "w"], ["p"])                                          // [S, N, 12]
        b.node("Softmax", ["p"], ["sm"], int: ["axis": -1])
        b.int64Constant("flat", [-1, 12])
        b.node("Reshape", ["sm", "flat"], ["f"])                                     // [S * N, 12]
        b.constant("g", [6, 12], rng.floats(72, scale: 0.4))
        b.constant("gb", [6], rng.floats(6))
        b.node("Gemm", ["f", "g", "gb"], ["o"], int: ["transB": 1], float: ["alpha": 0.5])
        b.int64Constant("back", [5, -1, 6])
        b.node("Reshape", ["o", "back"], ["o3"])                                     // [S, N, 6]
        b.node("Transpose", ["o3"], ["y"], ints: ["perm": [1, 0, 2]])               // [N, S, 6]
        let model = try b.model(inputShape: [5, 8])
        #expect(model.program.fixedBatch == 1)
        let steps = model.program.steps
        #expect(steps.filter { if case .wholeTranspose = $0 { true } else { false } }.count == 2)
        #expect(steps.filter { if case .gemm = $0 { true } else { false } }.count == 2)
        #expect(steps.contains { if case .rowSoftmax = $0 { true } else { false } })
        #expect(!steps.contains { if case .fallback = $0 { true } else { false } }, "\(steps.map { $0.label(model.program, nb: 1) })")
        #expect(try compareWithReference(model, batch: 3, threads: 2) < 1e-5)
    }

    /// Swin's window pieces on a value off the batch-first layout (run image by image): torch.roll
    /// as Slices and a Concat along the moved axis, a broadcast Add of a constant bias, a Mul by a
    /// value broadcast along the last axis, Sub and Div by constants on both sides, all on the
    /// whole-tensor steps.
    @Test func windowOpsAtBatchOne() throws {
        var rng = TestRNG(seed: 78)
        var b = ONNXBuilder()
        b.node("Transpose", ["x"], ["t"], ints: ["perm": [1, 0, 2]])                       // [6, N, 8]
        b.int64Constant("s0", [2]); b.int64Constant("e0", [6]); b.int64Constant("ax", [0])
        b.int64Constant("s1", [0]); b.int64Constant("e1", [2])
        b.node("Slice", ["t", "s0", "e0", "ax"], ["tail"])
        b.node("Slice", ["t", "s1", "e1", "ax"], ["head"])
        b.node("Concat", ["tail", "head"], ["rolled"], int: ["axis": 0])
        b.constant("bias", [1, 1, 8], rng.floats(8))
        b.node("Add", ["rolled", "bias"], ["a"])
        b.int64Constant("c0", [0]); b.int64Constant("c1", [1]); b.int64Constant("ax2", [2])
        b.node("Slice", ["t", "c0", "c1", "ax2"], ["col"])                                 // [6, N, 1]
        b.node("Mul", ["a", "col"], ["m"])
        b.constant("k", [], [0.5])
        b.node("Sub", ["k", "m"], ["d"])
        b.constant("den", [8], rng.floats(8).map { $0 + 3 })
        b.node("Div", ["d", "den"], ["q"])
        b.node("Transpose", ["q"], ["y"], ints: ["perm": [1, 0, 2]])
        let model = try b.model(inputShape: [6, 8])
        #expect(model.program.fixedBatch == 1)
        let steps = model.program.steps
        #expect(steps.filter { if case .wholeSlice = $0 { true } else { false } }.count == 3)
        #expect(steps.filter { if case .wholeBinary = $0 { true } else { false } }.count == 4)
        #expect(steps.contains { if case .wholeConcat = $0 { true } else { false } })
        #expect(!steps.contains { if case .fallback = $0 { true } else { false } }, "\(steps.map { $0.label(model.program, nb: 1) })")
        #expect(try compareWithReference(model, batch: 3, threads: 2) < 1e-6)
    }

    /// FP32 dense layers by constant weights (token rows of a MatMul, a Gemm head) run on the
    /// engine's AVX-512 tile at that level (weights as 48-column panels, OpenBLAS below it):
    /// widths off the 48-column panels and rows off the 8-row blocks, the row split (many rows)
    /// and the panel split (few), bias and activation, against the reference interpreter.
    @Test(arguments: [(37, 65, 49), (3, 1, 100), (9, 130, 47), (1, 7, 1)])
    func denseLayersOnPanels(rows: Int, k: Int, n: Int) throws {
        var rng = TestRNG(seed: UInt64(1500 + rows * 7 + n))
        var b = ONNXBuilder()
        b.constant("w", [k, n], rng.floats(k * n, scale: 0.5))
        b.constant("bias", [n], rng.floats(n))
        b.constant("w2", [n * rows, 5], rng.floats(n * rows * 5, scale: 0.3))
        b.constant("b2", [5], rng.floats(5))
        b.int64Constant("flat", [-1, n * rows])
        b.node("MatMul", ["x", "w"], ["m"])
        b.node("Add", ["m", "bias"], ["a"])
        b.node("Relu", ["a"], ["r"])
        b.node("Reshape", ["r", "flat"], ["f"])
        b.node("Gemm", ["f", "w2", "b2"], ["y"])
        for isa in [CPUISA.detected.resolved, .avx2, .portable] {
            var options = EngineOptions()
            options.isa = isa
            options.splitMinFlops = 0
            let model = try b.model(inputShape: [rows, k], options: options)
            let gemms = model.program.steps.compactMap { if case let .gemm(g) = $0 { g } else { nil } }
            #expect(gemms.map(\.rows) == [rows, 1])
            let onPanels = isa.rawValue >= CPUISA.avx512.rawValue
            #expect(gemms.allSatisfy { $0.panels.isEmpty != onPanels && $0.weights.isEmpty == onPanels })
            for (batch, threads, micro) in [(1, 1, 16), (5, 2, 16), (5, 2, 1), (17, 2, 16)] {
                #expect(try compareWithReference(model, batch: batch, threads: threads, microBatch: micro) < 1e-5,
                        "\(isa) batch \(batch) threads \(threads) micro \(micro)")
            }
        }
    }

    /// Erf on its own (not in GELU's chain) is a vectorised activation.
    @Test func erfAlone() throws {
        var b = ONNXBuilder()
        b.constant("k", [], [3])
        b.node("Mul", ["x", "k"], ["m"])
        b.node("Erf", ["m"], ["y"])
        let model = try b.model(inputShape: [4, 3, 5])
        #expect(model.program.steps.contains { if case .activation(.erf, _, _) = $0 { true } else { false } })
        #expect(try compareWithReference(model, batch: 3) < 1e-5)
    }

    /// Transposes of rank-3 and rank-4 per-image values with every batch-keeping perm.
    @Test(arguments: [[0, 1, 2, 3], [0, 1, 3, 2], [0, 2, 1, 3], [0, 2, 3, 1], [0, 3, 1, 2], [0, 3, 2, 1]])
    func transposeMatchesReference(perm: [Int]) throws {
        var rng = TestRNG(seed: 1400)
        var b = ONNXBuilder()
        b.constant("k", [], [2])
        b.node("Transpose", ["x"], ["t"], ints: ["perm": perm])
        b.node("Mul", ["t", "k"], ["y"])
        let model = try b.model(inputShape: [3, 4, 5])
        #expect(model.program.steps.contains { if case .transpose = $0 { true } else { false } })
        #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) == 0)
        var b4 = ONNXBuilder()
        b4.node("Transpose", ["x"], ["y"], ints: ["perm": perm + [4]])
        let model4 = try b4.model(inputShape: [2, 3, 4, rng.int(1...5)])
        #expect(try compareWithReference(model4, batch: 2) == 0)
    }
}
