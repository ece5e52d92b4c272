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
               seed: UInt64 = 3, chaining: [Bool] = [true]) throws -> (error: Float, identical: Bool, int8Steps: Int) {
        let fp32 = try b.model(inputShape: inputShape)
        var rng = TestRNG(seed: seed)
        let input = Tensor(shape: [batch] + inputShape, data: rng.floats(batch * inputShape.reduce(1, *)))
        let calibration = try fp32.calibrate(input)
        let reference = try fp32.referenceRun(input)[0]
        var first: [Float]?
        var identical = true, worst: Float = 0, steps = 0
        for isa in Self.levels { for chain in chaining {
            var options = Self.int8(isa, split: threads > 1)
            options.int8Chaining = chain
            let model = try Model(data: b.data(inputShape: inputShape), options: options, calibration: calibration)
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
        } }
        return (worst, identical, steps)
    }

    /// Output channel counts cover every AVX-512 tile shape (1-4 blocks of 16 wide, partial blocks).
    @Test(arguments: 0..<16) func convRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(900 + seed))
        var b = ONNXBuilder()
        var cin = rng.int(1...37), cout = [3, 8, 16, 17, 32, 40, 48, 64, 70, 96, 130, 256, 24, 33, 112, 160][seed]
        let kh = [3, 1, 5, 3][seed % 4], kw = [3, 1, 3, 2][seed % 4]
        // 1x1 layers with fewer than 64 input or output channels stay fp32 (Compiler.quantized)
        if kh * kw == 1 { cin += 64; cout += 64 }
        let s = rng.int(1...2), d = seed % 5 == 4 ? 2 : 1
        let pads = (0..<4).map { _ in rng.int(0...2) }
        let h = (kh - 1) * d + 1 + rng.int(0...12), w = (kw - 1) * d + 1 + rng.int(0...20)
        // weights scaled by 1/sqrt(fan-in), as trained layers are: pre-activations stay O(1) whatever the shape
        b.constant("w", [cout, cin, kh, kw], rng.floats(cout * cin * kh * kw, scale: 1 / Float(cin * kh * kw).squareRoot()))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [kh, kw], "strides": [s, s],
               "dilations": [d, d], "pads": pads])
        b.node(["Relu", "Identity", "Sigmoid"][seed % 3], ["c"], ["y"])
        let r = try check(b, inputShape: [cin, h, w], batch: 1 + seed % 4, threads: 1 + seed % 2, microBatch: 2)
        #expect(r.int8Steps == 1)
        #expect(r.error < 0.05, "seed \(seed) error \(r.error)")
        #expect(r.identical, "seed \(seed)")
    }

    /// RGB stems with 16 taps or more run their taps as one gathered patch per pixel on AVX-512
    /// (rows copied whole without dilation, tap by tap with it): same bits as every other level.
    @Test(arguments: [(7, 1, 64), (5, 2, 20), (4, 1, 33)]) func stemPatches(k: Int, dilation: Int, cout: Int) throws {
        var rng = TestRNG(seed: UInt64(60 + k))
        var b = ONNXBuilder()
        let cin = k == 4 ? 2 : 3
        b.constant("w", [cout, cin, k, k], rng.floats(cout * cin * k * k, scale: 1 / Float(cin * k * k).squareRoot()))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [k, k], "strides": [2, 2],
               "dilations": [dilation, dilation], "pads": [3, 2, 3, 1]])
        b.node("Relu", ["c"], ["y"])
        let r = try check(b, inputShape: [cin, 29, 34], batch: 3, microBatch: 2)
        #expect(r.int8Steps == 1)
        #expect(r.error < 0.05, "error \(r.error)")
        #expect(r.identical)
    }

    /// A small network: conv, residual add + ReLU fused into a 1x1 conv, global pool, Gemm.
    /// A value read only by strided 1x1 convs (ResNet-v1's stride-2 first 1x1 and downsample): the
    /// fp32 build (the one calibrated) picks their pixels with a pool first, the int8 build keeps the
    /// strided convs; calibration records the range they read, so both run on the int8 kernel.
    @Test func stridedPointwiseIsCalibrated() throws {
        var rng = TestRNG(seed: 88)
        var b = ONNXBuilder()
        b.scaledConv("stem", "x", cin: 3, cout: 64, k: 3, pad: 1, rng: &rng)
        b.node("Relu", ["stem"], ["r"])
        b.scaledConv("down", "r", cin: 64, cout: 64, k: 1, pad: 0, stride: 2, rng: &rng)
        b.scaledConv("main", "r", cin: 64, cout: 64, k: 1, pad: 0, stride: 2, rng: &rng)
        b.node("Add", ["down", "main"], ["y"])
        let (error, identical, int8Steps) = try check(b, inputShape: [3, 13, 13], batch: 4)
        #expect(int8Steps == 3)
        #expect(identical)
        #expect(error < 0.05)
    }

    @Test func residualBlockAndGemm() throws {
        let b = ONNXBuilder.residualBlockAndGemm(seed: 41)
        let r = try check(b, inputShape: [3, 20, 18], batch: 6, threads: 2, microBatch: 4)
        #expect(r.int8Steps == 3)
        #expect(r.error < 0.05, "error \(r.error)")
        #expect(r.identical)
    }

    /// INT8 kept between layers: convolutions writing the next one's codes directly, and through
    /// a padded max pool on the codes, give the same bits as the fp32 hand-off (chaining off) on
    /// every level; odd channel counts (not multiples of 4 or 16) and padding on every layer.
    @Test(arguments: [1, 2]) func chainedLayersMatchUnchained(threads: Int) throws {
        var rng = TestRNG(seed: 77)
        var b = ONNXBuilder()
        func conv(_ name: String, _ x: String, cin: Int, cout: Int, k: Int, pad: Int, stride: Int = 1) {
            b.scaledConv(name, x, cin: cin, cout: cout, k: k, pad: pad, stride: stride, rng: &rng)
        }
        conv("c0", "x", cin: 3, cout: 20, k: 3, pad: 1, stride: 2)
        b.node("Relu", ["c0"], ["r0"])
        conv("c1", "r0", cin: 20, cout: 37, k: 3, pad: 1)
        b.constant("lo", [], [0])
        b.constant("hi", [], [6])
        b.node("Clip", ["c1", "lo", "hi"], ["r1"])
        b.node("MaxPool", ["r1"], ["p1"], ints: ["kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]])
        conv("c2", "p1", cin: 37, cout: 66, k: 3, pad: 2)
        b.node("Relu", ["c2"], ["r2"])
        conv("c3", "r2", cin: 66, cout: 70, k: 1, pad: 0)
        b.node("Relu", ["c3"], ["r3"])
        b.node("MaxPool", ["r3"], ["p3"], ints: ["kernel_shape": [2, 2], "strides": [2, 2]])
        conv("c4", "p3", cin: 70, cout: 33, k: 3, pad: 1)
        b.node("GlobalAveragePool", ["c4"], ["g"])
        b.node("Flatten", ["g"], ["f"])
        b.constant("fc", [5, 33], rng.floats(165, scale: 0.2))
        b.constant("fb", [5], rng.floats(5))
        b.node("Gemm", ["f", "fc", "fb"], ["y"], int: ["transB": 1])
        let shape = [3, 37, 30]
        var options = Self.int8()
        options.int8Chaining = true
        let input = Tensor(shape: [5] + shape, data: rng.floats(5 * shape.reduce(1, *)))
        let calibration = try b.model(inputShape: shape).calibrate(input)
        let model = try Model(data: b.data(inputShape: shape), options: options, calibration: calibration)
        let links = model.program.steps.filter { step in
            switch step {
            case let .conv(c): c.q8Link.output != nil
            case let .pool(p): p.q8Link.output != nil
            default: false
            }
        }.count
        #expect(links == 6, "c0, c1, pool, c2, c3, pool chained: \(links)")
        let r = try check(b, inputShape: shape, batch: 5, threads: threads, microBatch: 3, chaining: [true, false])
        #expect(r.int8Steps == 6)
        #expect(r.error < 0.05, "error \(r.error)")
        #expect(r.identical)
    }

    /// Dual links: a block output that is also the next block's residual (and a conv adding a
    /// residual) writes fp32 and the next conv's codes; same bits as unchained on every level.
    @Test func residualBlocksWriteBothOutputs() throws {
        var rng = TestRNG(seed: 79)
        var b = ONNXBuilder()
        func conv(_ name: String, _ x: String, cin: Int, cout: Int) {
            b.scaledConv(name, x, cin: cin, cout: cout, k: 3, pad: 1, rng: &rng)
        }
        conv("c0", "x", cin: 3, cout: 24)
        b.node("Relu", ["c0"], ["x0"])
        conv("c1", "x0", cin: 24, cout: 24)
        b.node("Relu", ["c1"], ["r1"])
        conv("c2", "r1", cin: 24, cout: 24)
        b.node("Add", ["c2", "x0"], ["a2"])
        b.node("Relu", ["a2"], ["x2"])
        conv("c3", "x2", cin: 24, cout: 24)
        b.node("Relu", ["c3"], ["r3"])
        conv("c4", "r3", cin: 24, cout: 24)
        b.node("Add", ["c4", "x2"], ["a4"])
        b.node("Relu", ["a4"], ["x4"])
        b.node("GlobalAveragePool", ["x4"], ["g"])
        b.node("Flatten", ["g"], ["f"])
        b.constant("fc", [3, 24], rng.floats(72, scale: 0.2))
        b.constant("fb", [3], rng.floats(3))
        b.node("Gemm", ["f", "fc", "fb"], ["y"], int: ["transB": 1])
        let shape = [3, 19, 23]
        let input = Tensor(shape: [4] + shape, data: rng.floats(4 * shape.reduce(1, *)))
        let calibration = try b.model(inputShape: shape).calibrate(input)
        let model = try Model(data: b.data(inputShape: shape), options: Self.int8(), calibration: calibration)
        var links = 0, duals = 0
        for case let .conv(c) in model.program.steps where c.q8Link.output != nil {
            links += 1
            if c.q8Link.dual { duals += 1 }
        }
        #expect(links == 4 && duals == 2, "links \(links), dual \(duals)")
        let r = try check(b, inputShape: shape, batch: 4, threads: 2, microBatch: 3, chaining: [true, false])
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
        var auto = EngineOptions()
        auto.precision = .auto
        #expect(throws: ModelError.self) { try b.model(inputShape: [4, 9, 9], options: auto) }
    }
}

extension ONNXBuilder {
    /// A conv named `name` reading `x`: k x k, weights scaled by 1/sqrt(fan-in) (pre-activations O(1), as
    /// in trained layers), a small bias.
    mutating func scaledConv(_ name: String, _ x: String, cin: Int, cout: Int, k: Int, pad: Int, stride: Int = 1,
                             rng: inout TestRNG) {
        constant(name + "w", [cout, cin, k, k], rng.floats(cout * cin * k * k, scale: 1 / Float(cin * k * k).squareRoot()))
        constant(name + "b", [cout], rng.floats(cout, scale: 0.2))
        node("Conv", [x, name + "w", name + "b"], [name], ints: ["kernel_shape": [k, k], "strides": [stride, stride],
             "pads": [pad, pad, pad, pad]])
    }

    /// Conv 3->64, its ReLU output as the residual of a 1x1 conv 64->64 (Add + ReLU fused), global pool, Gemm to 5.
    static func residualBlockAndGemm(seed: UInt64) -> ONNXBuilder {
        var rng = TestRNG(seed: seed)
        var b = ONNXBuilder()
        b.constant("w0", [64, 3, 3, 3], rng.floats(64 * 27, scale: 0.5))
        b.constant("b0", [64], rng.floats(64, scale: 0.1))
        b.node("Conv", ["x", "w0", "b0"], ["a"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
        b.node("Relu", ["a"], ["a1"])
        b.constant("w1", [64, 64, 1, 1], rng.floats(64 * 64, scale: 0.125))
        b.node("Conv", ["a1", "w1"], ["p"], ints: ["kernel_shape": [1, 1]])
        b.node("Add", ["p", "a1"], ["r"])
        b.node("Relu", ["r"], ["r1"])
        b.node("GlobalAveragePool", ["r1"], ["g"])
        b.node("Flatten", ["g"], ["f"])
        b.constant("fc", [5, 64], rng.floats(320))
        b.constant("fb", [5], rng.floats(5))
        b.node("Gemm", ["f", "fc", "fb"], ["y"], int: ["transB": 1])
        return b
    }
}
