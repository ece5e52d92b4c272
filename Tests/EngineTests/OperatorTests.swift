import Synchronization
import Testing
@testable import Engine

/// Each operator through the optimised path vs the naive reference, on random shapes.
@Suite(.serialized) struct OperatorTests {
    @Test(arguments: 0..<12) func convRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(100 + seed))
        var b = ONNXBuilder()
        let groups = [1, 1, 2, 3][rng.int(0...3)]
        let cin = groups * rng.int(1...4), cout = groups * rng.int(1...4)
        let kh = [1, 3, 5][rng.int(0...2)], kw = [1, 3, 2][rng.int(0...2)]
        let sh = rng.int(1...3), sw = rng.int(1...2), dh = rng.int(1...2), dw = rng.int(1...2)
        let pads = (0..<4).map { _ in rng.int(0...2) }
        let h = (kh - 1) * dh + 1 + rng.int(0...8), w = (kw - 1) * dw + 1 + rng.int(0...8)
        b.constant("w", [cout, cin / groups, kh, kw], rng.floats(cout * cin / groups * kh * kw))
        let bias = seed % 2 == 0
        if bias { b.constant("b", [cout], rng.floats(cout)) }
        b.node("Conv", bias ? ["x", "w", "b"] : ["x", "w"], ["y"], ints: ["kernel_shape": [kh, kw], "strides": [sh, sw],
               "dilations": [dh, dw], "pads": pads], int: ["group": groups])
        let model = try b.model(inputShape: [cin, h, w])
        #expect(try compareWithReference(model, batch: 1 + seed % 5, threads: 1 + seed % 2, microBatch: 2) < 1e-4)
    }

    @Test(arguments: 0..<8) func depthwiseRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(200 + seed))
        var b = ONNXBuilder()
        let c = rng.int(2...6), k = [3, 5, 3, 7][seed % 4], s = rng.int(1...2), d = rng.int(1...2)
        let p = rng.int(0...3), h = (k - 1) * d + 1 + rng.int(0...9), w = (k - 1) * d + 1 + rng.int(0...9)
        b.constant("w", [c, 1, k, k], rng.floats(c * k * k))
        b.constant("b", [c], rng.floats(c))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [k, k], "strides": [s, s], "dilations": [d, d],
               "pads": [p, p, p + seed % 2, p]], int: ["group": c])
        b.node("Clip", ["c", "lo", "hi"], ["y"])
        b.constant("lo", [], [0]); b.constant("hi", [], [6])
        let model = try b.model(inputShape: [c, h, w])
        #expect(model.program.steps.count == 1) // Clip fused into the depthwise kernel
        #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) < 1e-4)
    }

    @Test func convBatchNormActivationFusions() throws {
        var rng = TestRNG(seed: 3)
        for act in ["Relu", "Sigmoid", "HardSwish", "LeakyRelu", "HardSigmoid", "SiLU"] {
            var b = ONNXBuilder()
            b.constant("w", [6, 4, 3, 3], rng.floats(216))
            b.constant("s", [6], rng.floats(6).map { $0 + 1.5 }); b.constant("o", [6], rng.floats(6))
            b.constant("m", [6], rng.floats(6)); b.constant("v", [6], rng.floats(6).map { $0 + 1.5 })
            b.node("Conv", ["x", "w"], ["c"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
            b.node("BatchNormalization", ["c", "s", "o", "m", "v"], ["n"], float: ["epsilon": 1e-3])
            if act == "SiLU" {
                b.node("Sigmoid", ["n"], ["g"]); b.node("Mul", ["n", "g"], ["y"])
            } else {
                b.node(act, ["n"], ["y"])
            }
            let model = try b.model(inputShape: [4, 9, 7])
            #expect(model.program.steps.count == 1, "\(act) not fused")
            #expect(try compareWithReference(model, batch: 3) < 1e-4, "\(act)")
        }
    }

    @Test(arguments: 0..<6) func winogradConvRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(400 + seed))
        var b = ONNXBuilder()
        let cin = rng.int(8...20), cout = rng.int(8...20), h = rng.int(1...11)
        let w = seed < 2 ? 66 + 2 * seed + rng.int(0...10) : rng.int(1...11) // wide rows: full 16-tile vectors
        let pads = (0..<4).map { _ in rng.int(0...2) }
        guard h + pads[0] + pads[2] >= 3, w + pads[1] + pads[3] >= 3 else { return }
        b.constant("w", [cout, cin, 3, 3], rng.floats(cout * cin * 9))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [3, 3], "pads": pads])
        b.node("Relu", ["c"], ["y"])
        var forced = EngineOptions()
        forced.forceWinograd = true // small layers would otherwise run direct
        let model = try b.model(inputShape: [cin, h, w], options: forced)
        guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
        #expect(c.kind == .winograd || c.kind == .winograd43)
        #expect(try compareWithReference(model, batch: 1 + seed % 4, threads: 1 + seed % 2, microBatch: 2) < 1e-4)
    }

    @Test(arguments: [(6, 6, ConvStep.Kind.winograd43), (13, 70, .winograd43), (2, 2, .winograd), (8, 8, .winograd43), (2, 5, .winograd)])
    func winogradVariants(h: Int, w: Int, kind: ConvStep.Kind) throws {
        var rng = TestRNG(seed: UInt64(h * 100 + w))
        var b = ONNXBuilder()
        b.constant("w", [12, 12, 3, 3], rng.floats(12 * 12 * 9))
        b.constant("b", [12], rng.floats(12))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
        b.node("Add", ["c", "x"], ["a"])
        b.node("Clip", ["a", "lo", "hi"], ["y"])
        b.constant("lo", [], [-0.5]); b.constant("hi", [], [1])
        var forced = EngineOptions()
        forced.forceWinograd = true // small layers would otherwise run direct
        let model = try b.model(inputShape: [12, h, w], options: forced)
        guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
        #expect(c.kind == kind)
        #expect(model.program.steps.count == 1)
        #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) < 1e-4)
    }

    @Test func residualAddFusedIntoConv() throws {
        var rng = TestRNG(seed: 4)
        for c in [5, 9] { // im2col and Winograd
            var b = ONNXBuilder()
            b.constant("w", [c, c, 3, 3], rng.floats(9 * c * c))
            b.constant("b", [c], rng.floats(c))
            b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
            b.node("Add", ["x", "c"], ["a"])
            b.node("Relu", ["a"], ["y"])
            let model = try b.model(inputShape: [c, 6, 7])
            #expect(model.program.steps.count == 1)
            #expect(try compareWithReference(model, batch: 5, threads: 2, microBatch: 2) < 1e-4)
        }
    }

    @Test func standaloneActivationsAndBatchNorm() throws {
        var rng = TestRNG(seed: 5)
        for op in ["Relu", "Sigmoid", "HardSwish", "LeakyRelu", "HardSigmoid", "Clip", "Identity", "Dropout", "BatchNormalization"] {
            var b = ONNXBuilder()
            var inputs = ["x"]
            if op == "Clip" { b.constant("lo", [], [-0.3]); b.constant("hi", [], [0.5]); inputs += ["lo", "hi"] }
            if op == "BatchNormalization" {
                b.constant("s", [3], rng.floats(3)); b.constant("o", [3], rng.floats(3))
                b.constant("m", [3], rng.floats(3)); b.constant("v", [3], rng.floats(3).map { $0 + 1.5 })
                inputs += ["s", "o", "m", "v"]
            }
            b.node(op, inputs, ["y"], float: op == "LeakyRelu" ? ["alpha": 0.2] : [:])
            let model = try b.model(inputShape: [3, 5, 4])
            #expect(try compareWithReference(model, batch: 2) < 1e-4, "\(op)")
        }
    }

    @Test func binaryOpsWithBroadcasting() throws {
        var rng = TestRNG(seed: 6)
        for op in ["Add", "Sub", "Mul", "Div"] {
            for (i, shape) in [[4, 3, 5], [4, 1, 1], [1, 4, 1, 1], [1], [5], [3, 1]].enumerated() {
                var b = ONNXBuilder()
                b.constant("k", shape, rng.floats(shape.reduce(1, *)).map { $0 + ($0 >= 0 ? 0.5 : -0.5) })
                b.node(op, i % 2 == 0 ? ["x", "k"] : ["k", "x"], ["y"])
                let model = try b.model(inputShape: [4, 3, 5])
                #expect(try compareWithReference(model, batch: 3, microBatch: 2) < 1e-4, "\(op) \(shape)")
            }
            // batched x batched: same shape and per-plane scalar (SE gating)
            var b = ONNXBuilder()
            b.node("GlobalAveragePool", ["x"], ["g"])
            b.node("Sigmoid", ["g"], ["s"])
            b.node(op, ["x", "s"], ["m"])
            b.node(op, ["m", "x"], ["y"])
            let model = try b.model(inputShape: [4, 3, 5])
            #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) < 1e-4, "\(op) batched")
        }
    }

    @Test(arguments: 0..<10) func poolingRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(300 + seed))
        var b = ONNXBuilder()
        let k = [2, 3, 3, 5][rng.int(0...3)], s = rng.int(1...3), p = rng.int(0...(k / 2))
        let h = k + rng.int(0...9), w = k + rng.int(0...9)
        let op = seed % 2 == 0 ? "MaxPool" : "AveragePool"
        b.node(op, ["x"], ["y"], ints: ["kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]],
               int: ["ceil_mode": seed % 3 == 0 ? 1 : 0, "count_include_pad": seed % 4 == 1 ? 1 : 0])
        let model = try b.model(inputShape: [3, h, w])
        #expect(try compareWithReference(model, batch: 2) < 1e-4, "\(op) k\(k) s\(s) p\(p) \(h)x\(w)")
    }

    @Test func headOps() throws {
        var rng = TestRNG(seed: 7)
        for variant in 0..<6 {
            var b = ONNXBuilder()
            b.node(variant == 1 ? "ReduceMean" : "GlobalAveragePool", ["x"], ["g"], ints: variant == 1 ? ["axes": [2, 3]] : [:])
            if variant == 2 {
                b.int64Constant("shape", [-1, 6]); b.node("Reshape", ["g", "shape"], ["f"])
            } else {
                b.node("Flatten", ["g"], ["f"], int: ["axis": 1])
            }
            if variant == 3 {
                b.constant("w", [6, 4], rng.floats(24)); b.node("MatMul", ["f", "w"], ["z"])
            } else {
                b.constant("w", variant == 4 ? [6, 4] : [4, 6], rng.floats(24)); b.constant("c", [4], rng.floats(4))
                b.node("Gemm", ["f", "w", "c"], ["z"], int: ["transB": variant == 4 ? 0 : 1], float: ["alpha": 0.7, "beta": 1.3])
            }
            b.node(variant == 5 ? "Relu" : "Softmax", ["z"], ["y"], int: variant == 5 ? [:] : ["axis": -1])
            let model = try b.model(inputShape: [6, 4, 3])
            #expect(model.embeddingShape == [6])
            #expect(try compareWithReference(model, batch: 5, threads: 2, microBatch: 2) < 1e-4, "variant \(variant)")
        }
    }

    @Test func concatAndGenericOps() throws {
        var rng = TestRNG(seed: 8)
        var b = ONNXBuilder()
        b.constant("w", [3, 2, 1, 1], rng.floats(6))
        b.node("Conv", ["x", "w"], ["c"], ints: ["kernel_shape": [1, 1]])
        b.node("Concat", ["x", "c", "x"], ["cat"], int: ["axis": 1])
        b.int64Constant("pads", [0, 0, 1, 2, 0, 0, 0, 1])
        b.node("Pad", ["cat", "pads"], ["p"])
        b.node("Transpose", ["p"], ["t"], ints: ["perm": [0, 1, 3, 2]])
        b.node("Relu", ["t"], ["y"])
        let model = try b.model(inputShape: [2, 4, 3])
        #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) < 1e-4)
    }

    /// Constant Pad on the engine's own step (not the reference path): channels, rows, columns,
    /// all of them, a value, and LocalResponseNorm's pad of the channel axis of `[N, 1, C, H, W]`.
    static let padCases: [([Int], Float)] = [([0, 2, 0, 0, 0, 1, 0, 0], 0), ([0, 0, 1, 0, 0, 0, 2, 0], 0),
                                             ([0, 0, 0, 3, 0, 0, 0, 1], -1.5), ([0, 1, 2, 1, 0, 2, 0, 3], 0.25),
                                             ([0, 0, 0, 0, 0, 0, 0, 0], 0)]
    @Test(arguments: 0..<5)
    func padOnItsOwnStep(index: Int) throws {
        let (pads, value) = Self.padCases[index]
        for lrn in [false, true] {
            var b = ONNXBuilder()
            var pin = "x"
            var p = pads
            if lrn {
                b.int64Constant("ax", [1])
                b.node("Unsqueeze", ["x", "ax"], ["u"])
                pin = "u"
                p = [0, 0] + pads[1..<4] + [0, 0] + pads[5..<8]
            }
            b.int64Constant("pads", p)
            b.constant("v", [], [value])
            b.node("Pad", [pin, "pads", "v"], ["y"])
            let model = try b.model(inputShape: [3, 5, 7])
            #expect(model.program.steps.contains { if case .pad = $0 { true } else { false } }, "\(pads) lrn \(lrn)")
            #expect(!model.program.steps.contains { if case .fallback = $0 { true } else { false } })
            #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) == 0, "\(pads) lrn \(lrn)")
        }
    }

    @Test func constantNodeFolding() throws {
        var b = ONNXBuilder()
        var n = Onnx_NodeProto()
        n.opType = "Constant"; n.name = "k"; n.output = ["k"]
        var a = Onnx_AttributeProto(); a.name = "value_floats"; a.type = .floats; a.floats = [0.5, -1, 2]
        n.attribute = [a]
        b.nodes.append(n)
        b.int64Constant("s", [1, 3, 1, 1])
        b.node("Reshape", ["k", "s"], ["k4"])
        b.node("Mul", ["x", "k4"], ["y"])
        let model = try b.model(inputShape: [3, 2, 2])
        #expect(model.program.steps.count == 1)
        #expect(try compareWithReference(model, batch: 2) < 1e-4)
    }

    /// BatchNormalization on a value a conv cannot absorb (DenseNet's pre-activation on a
    /// concatenation read by several layers) followed by ReLU or Clip is one clamped affine pass;
    /// a BN with two readers keeps its activation apart.
    @Test(arguments: ["Relu", "Clip"]) func affineThenClampIsOnePass(op: String) throws {
        var rng = TestRNG(seed: 77)
        var b = ONNXBuilder()
        let c = 5
        b.constant("s", [2 * c], rng.floats(2 * c))
        b.constant("b", [2 * c], rng.floats(2 * c))
        b.constant("m", [2 * c], rng.floats(2 * c, scale: 0.2))
        b.constant("v", [2 * c], rng.floats(2 * c).map { abs($0) + 0.5 })
        b.constant("lo", [], [-0.25])
        b.constant("hi", [], [0.5])
        b.node("Concat", ["x", "x"], ["cat"], int: ["axis": 1])
        b.node("BatchNormalization", ["cat", "s", "b", "m", "v"], ["bn"])
        b.node(op, op == "Clip" ? ["bn", "lo", "hi"] : ["bn"], ["act"])
        b.node("BatchNormalization", ["cat", "s", "b", "m", "v"], ["bn2"])
        b.node("Relu", ["bn2"], ["act2"])
        b.node("Add", ["bn2", "act2"], ["sum"])
        b.node("Concat", ["act", "sum"], ["y"], int: ["axis": 1])
        let model = try b.model(inputShape: [c, 3, 7])
        let affines = model.program.steps.compactMap { step -> (Float, Float)? in
            if case let .channelAffine(_, _, lo, hi, _, _) = step { (lo, hi) } else { nil }
        }
        #expect(affines.count == 2)
        #expect(affines.contains { $0 == (op == "Clip" ? (-0.25, 0.5) : (0, .infinity)) })
        #expect(affines.contains { $0 == (-.infinity, .infinity) })
        #expect(try compareWithReference(model, batch: 3) < 1e-6)
    }
}
