import Testing
@testable import Engine

/// The C direct kernels (dense conv on phase-split padded rows, depthwise over 16-plane
/// vectors, pools reading NCHW input) and the single-micro-batch intra-step split, vs the
/// reference, on random shapes; each case also runs the portable builds and both AVX-512 paths
/// of the dense conv.
@Suite(.serialized) struct DirectKernelTests {
    /// Every build a test checks: the best kernels this CPU has, the dense conv's two AVX-512
    /// paths (phase planes / gathered panels) whatever the shape, the AVX2 builds of the C loops
    /// and the portable ones; each splits every step of a single micro-batch across lanes
    /// however small. (Levels above the CPU's resolve down to it, so they repeat a lower one.)
    static let builds: [EngineOptions] = {
        var base = EngineOptions()
        base.splitMinFlops = 0
        var gathered = base, planes = base, avx2 = base, portable = base
        gathered.denseConvPath = .gatheredPanels
        planes.denseConvPath = .phasePlanes
        avx2.isa = .avx2
        portable.isa = .portable
        return [base, gathered, planes, avx2, portable]
    }()

    /// Runs `check` on the model `make` compiles for each of ``builds``.
    func bothBuilds(_ make: (EngineOptions) throws -> Model, _ check: (Model) throws -> Void) rethrows {
        for options in Self.builds { try check(try make(options)) }
    }

    @Test(arguments: 0..<20) func directConvRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(700 + seed))
        var b = ONNXBuilder()
        let cin = rng.int(1...30), cout = [1, 7, 8, 9, 16, 24, 33, 40][rng.int(0...7)]
        let kh = [3, 5, 3, 2, 1][seed % 5], kw = [3, 5, 5, 3, 3][seed % 5]
        let sh = rng.int(1...3), sw = rng.int(1...3)
        let d = seed % 7 == 6 ? 2 : 1 // dilation 2: im2col + OpenBLAS
        let pads = (0..<4).map { _ in rng.int(0...2) }
        let wide = seed % 4 == 3 // rows wider than one 48-column tile
        let h = (kh - 1) * d + 1 + rng.int(0...14), w = (kw - 1) * d + 1 + (wide ? rng.int(40...70) : rng.int(0...14))
        b.constant("w", [cout, cin, kh, kw], rng.floats(cout * cin * kh * kw))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [kh, kw], "strides": [sh, sw],
               "dilations": [d, d], "pads": pads])
        let act = ["Relu", "Clip", "Sigmoid", "Identity"][seed % 4]
        if act == "Clip" { b.constant("lo", [], [-0.2]); b.constant("hi", [], [0.7]) }
        b.node(act, act == "Clip" ? ["c", "lo", "hi"] : ["c"], ["y"])
        let model = try b.model(inputShape: [cin, h, w])
        guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
        // Dilated convolutions run direct at the AVX-512 level, on im2col + OpenBLAS below it (the
        // portable build of `bothBuilds` runs them there).
        let avx512 = EngineOptions().effectiveISA.rawValue >= CPUISA.avx512.rawValue
        #expect(c.kind == (Winograd.eligible(ConvStep(kind: .gemm, window: c.window, cin: cin, cout: cout, groups: 1,
                                                      weights: [], bias: [], input: 0, output: 0), EngineOptions()) ? .winograd43
                           : d > 1 && !avx512 ? .gemm : .direct))
        let batch = 1 + seed % 5
        try bothBuilds({ try b.model(inputShape: [cin, h, w], options: $0) }) { model throws in
            // several micro-batches, and one micro-batch split across 2 lanes
            #expect(try compareWithReference(model, batch: batch, threads: 2, microBatch: 2) < 1e-4, "seed \(seed)")
            #expect(try compareWithReference(model, batch: batch, threads: 2, microBatch: 16) < 1e-4, "seed \(seed)")
            #expect(try compareWithReference(model, batch: batch, threads: 1) < 1e-4, "seed \(seed)")
        }
    }

    /// The packed GEMM of the Winograd transform domain vs a naive product (AVX-512 and portable),
    /// leaving the columns past `n` of each C row alone.
    @Test(arguments: 0..<12) func packedGemmRandomShapes(seed: Int) {
        var rng = TestRNG(seed: UInt64(650 + seed))
        let m = rng.int(1...40), k = rng.int(1...70), n = rng.int(1...130)
        let ldb = n + rng.int(0...5), ldc = n + rng.int(0...5)
        let a = rng.floats(m * k), b = rng.floats(k * ldb)
        let packed = Winograd.packEntries(a, cout: m, cin: k)
        for portable in [false, true] {
            let isa = Int32((portable ? CPUISA.portable : .detected).resolved.rawValue)
            var c = [Float](repeating: 7, count: m * ldc)
            packed.withUnsafeBufferPointer { p in
                b.withUnsafeBufferPointer { bp in
                    c.withUnsafeMutableBufferPointer { cp in
                        Winograd.gemm(isa: isa, packed: p.baseAddress!, m: m, k: k, b: bp.baseAddress!, ldb: ldb, n: n,
                                      c: cp.baseAddress!, ldc: ldc)
                    }
                }
            }
            var worst: Float = 0
            for i in 0..<m {
                for j in 0..<ldc {
                    if j >= n { #expect(c[i * ldc + j] == 7); continue }
                    var ref: Float = 0
                    for p in 0..<k { ref += a[i * k + p] * b[p * ldb + j] }
                    worst = max(worst, abs(c[i * ldc + j] - ref) / max(1, abs(ref)))
                }
            }
            #expect(worst < 1e-5, "seed \(seed) m \(m) k \(k) n \(n) portable \(portable)")
        }
    }

    /// Grouped (not depthwise) convolutions with groups of 8 or 16 output channels run each group
    /// on the direct kernel (RegNet's group width 8), with the residual and channel splits.
    @Test(arguments: 0..<8) func groupedConvRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(760 + seed))
        var b = ONNXBuilder()
        let groups = rng.int(2...4), cinG = rng.int(1...9), coutG = [8, 16][seed % 2]
        let cin = groups * cinG, cout = groups * coutG
        let k = [3, 1, 3, 5][seed % 4], s = rng.int(1...2)
        let h = k + rng.int(0...12), w = k + rng.int(0...(seed % 3 == 0 ? 60 : 12))
        b.constant("w", [cout, cinG, k, k], rng.floats(cout * cinG * k * k))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [k, k], "strides": [s, s], "pads": [k / 2, k / 2, k / 2, k / 2]],
               int: ["group": groups])
        b.node("Relu", ["c"], ["y"])
        let model = try b.model(inputShape: [cin, h, w])
        guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
        #expect(c.kind == .direct && c.groups == groups)
        let batch = 1 + seed % 4
        try bothBuilds({ try b.model(inputShape: [cin, h, w], options: $0) }) { model throws in
            #expect(try compareWithReference(model, batch: batch, threads: 2, microBatch: 2) < 1e-4, "seed \(seed)")
            #expect(try compareWithReference(model, batch: batch, threads: 2, microBatch: 16) < 1e-4, "seed \(seed)")
        }
    }

    @Test(arguments: 0..<6) func directConvResidual(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(800 + seed))
        var b = ONNXBuilder()
        let c = [4, 8, 24, 12, 17, 32][seed], k = seed % 2 == 0 ? 5 : 3, h = rng.int(3...21), w = rng.int(3...60)
        b.constant("w", [c, c, k, k], rng.floats(c * c * k * k, scale: 0.3))
        b.constant("b", [c], rng.floats(c))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [k, k], "pads": [k / 2, k / 2, k / 2, k / 2]])
        b.node("Add", ["c", "x"], ["a"])
        b.node("Relu", ["a"], ["y"])
        let model = try b.model(inputShape: [c, h, w])
        guard case let .conv(cs)? = model.program.steps.first else { Issue.record("no conv"); return }
        #expect(model.program.steps.count == 1)
        #expect(cs.kind == .direct || cs.kind == .winograd || cs.kind == .winograd43)
        try bothBuilds({ try b.model(inputShape: [c, h, w], options: $0) }) { model throws in
            #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) < 1e-4)
            #expect(try compareWithReference(model, batch: 1, threads: 2) < 1e-4)
        }
    }

    /// 1x1 convs on the packed tile (input rows copied into 48-column panels): channel counts
    /// around the 8-row blocks, column counts around the 48-column tiles and the 10-tile panels,
    /// fused residual and Clip, an activation applied after (Sigmoid).
    @Test(arguments: 0..<10) func pointwiseRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(1000 + seed))
        var b = ONNXBuilder()
        let cin = [1, 3, 8, 17, 64, 200][seed % 6], cout = [1, 7, 8, 9, 16, 33][rng.int(0...5)]
        let h = rng.int(1...12), w = seed % 3 == 0 ? rng.int(40...70) : rng.int(1...20)
        let residual = seed % 2 == 1 && cin == cout
        b.constant("w", [cout, cin, 1, 1], rng.floats(cout * cin, scale: 0.3))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [1, 1]])
        if residual { b.node("Add", ["c", "x"], ["r"]) }
        let act = ["Relu", "Clip", "Sigmoid", "Identity"][seed % 4]
        if act == "Clip" { b.constant("lo", [], [-0.2]); b.constant("hi", [], [0.7]) }
        let last = residual ? "r" : "c"
        b.node(act, act == "Clip" ? [last, "lo", "hi"] : [last], ["y"])
        let model = try b.model(inputShape: [cin, h, w])
        guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
        #expect(c.kind == .pointwise && c.directWeights != nil)
        let batch = 1 + seed % 4
        try bothBuilds({ try b.model(inputShape: [cin, h, w], options: $0) }) { model throws in
            #expect(try compareWithReference(model, batch: batch, threads: 2, microBatch: 2) < 1e-4, "seed \(seed)")
            #expect(try compareWithReference(model, batch: batch, threads: 2, microBatch: 16) < 1e-4, "seed \(seed)")
            #expect(try compareWithReference(model, batch: batch, threads: 1) < 1e-4, "seed \(seed)")
        }
    }

    /// Long 1x1 convs (k > 192: the AVX2 tile runs k in passes of 128, the first adding the bias,
    /// the last the residual and the clamp): k of one full pass + a short one and of three passes,
    /// output channels around the 8-row blocks, columns around the 48-column tiles.
    @Test(arguments: [(200, 200, 7, 9), (280, 280, 13, 11), (300, 33, 1, 50)])
    func pointwiseInKPasses(cin: Int, cout: Int, h: Int, w: Int) throws {
        var rng = TestRNG(seed: UInt64(1200 + cin))
        var b = ONNXBuilder()
        b.constant("w", [cout, cin, 1, 1], rng.floats(cout * cin, scale: 0.1))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [1, 1]])
        let residual = cin == cout
        if residual { b.node("Add", ["c", "x"], ["r"]) }
        b.constant("lo", [], [-0.5]); b.constant("hi", [], [0.8])
        b.node("Clip", [residual ? "r" : "c", "lo", "hi"], ["y"])
        try bothBuilds({ try b.model(inputShape: [cin, h, w], options: $0) }) { model throws in
            guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
            #expect(c.kind == .pointwise && (c.residual != nil) == residual)
            #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) < 1e-4, "\(cin) -> \(cout)")
            #expect(try compareWithReference(model, batch: 3, threads: 1) < 1e-4, "\(cin) -> \(cout)")
        }
    }

    /// Strided 3x3 convs with k > 192 on dense panels at every level (AVX2: k in passes of 14
    /// whole input channels, each pass's panel rows gathered just before its tiles, columns in
    /// chunks of 480; the last pass adds the residual of a second conv and clamps): 37 channels
    /// (passes of 14, 14, 9), output channels off the 8-row blocks, outputs spanning several
    /// 48-column tiles and (3 images of 15 x 12) two chunks.
    @Test(arguments: [(37, 20, 15, 15), (22, 9, 29, 23)])
    func stridedConvOnDensePanelsInKPasses(cin: Int, cout: Int, h: Int, w: Int) throws {
        var rng = TestRNG(seed: UInt64(1400 + cin))
        var b = ONNXBuilder()
        b.constant("w", [cout, cin, 3, 3], rng.floats(cout * cin * 9, scale: 0.1))
        b.constant("b", [cout], rng.floats(cout))
        b.constant("w2", [cout, cin, 1, 1], rng.floats(cout * cin, scale: 0.1))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]])
        b.node("Conv", ["x", "w2"], ["s"], ints: ["kernel_shape": [1, 1], "strides": [2, 2]])
        b.node("Add", ["s", "c"], ["r"])
        b.constant("lo", [], [-0.4]); b.constant("hi", [], [0.9])
        b.node("Clip", ["r", "lo", "hi"], ["y"])
        var avx2Dense = EngineOptions()
        avx2Dense.splitMinFlops = 0
        avx2Dense.denseConvPath = .gatheredPanels
        avx2Dense.isa = .avx2
        for options in Self.builds + [avx2Dense] {
            let model = try b.model(inputShape: [cin, h, w], options: options)
            let fused = model.program.steps.contains { if case let .conv(c) = $0 { c.window.kh == 3 && c.residual != nil } else { false } }
            #expect(fused, "the 3x3 conv adds the residual")
            #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) < 1e-4, "\(cin) -> \(cout)")
            #expect(try compareWithReference(model, batch: 3, threads: 1) < 1e-4, "\(cin) -> \(cout)")
        }
    }

    /// Kernel taps that read only padding are dropped at load: DeepLabV3's rate-36 3x3 on a
    /// 12 x 12 map is a 1x1 conv; rate 8 on 12 x 12 keeps all taps; rate 10 with padding 10 on a
    /// 9 x 13 map keeps the middle row (a 1x3 conv). All match the reference.
    @Test(arguments: [(36, 12, 12, 1, 1), (8, 12, 12, 3, 3), (10, 9, 13, 1, 3)])
    func tapsReadingOnlyPaddingAreDropped(rate: Int, h: Int, w: Int, kh: Int, kw: Int) throws {
        var rng = TestRNG(seed: UInt64(1300 + rate))
        var b = ONNXBuilder()
        b.constant("w", [16, 24, 3, 3], rng.floats(16 * 24 * 9, scale: 0.2))
        b.constant("b", [16], rng.floats(16))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [3, 3], "dilations": [rate, rate], "pads": [rate, rate, rate, rate]])
        b.node("Relu", ["c"], ["y"])
        try bothBuilds({ try b.model(inputShape: [24, h, w], options: $0) }) { model throws in
            guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
            #expect(c.window.kh == kh && c.window.kw == kw && c.window.oh == h && c.window.ow == w)
            if kh == 1 && kw == 1 { #expect(c.kind == .pointwise) }
            #expect(try compareWithReference(model, batch: 3, threads: 2) < 1e-4, "rate \(rate)")
        }
    }

    /// The default micro-batch is the smallest of 4 / 8 / 16 images at which the model's Winograd
    /// layers keep >= 64 tiles: 16 / 9 / 4 F(4x4) tiles per image at 16x16 / 12x12 / 6x6.
    @Test func defaultMicroBatchKeepsWinogradLayers() throws {
        func conv(size: Int) throws -> Model {
            var rng = TestRNG(seed: 5)
            var b = ONNXBuilder()
            b.constant("w", [64, 64, 3, 3], rng.floats(64 * 64 * 9, scale: 0.1))
            b.constant("b", [64], rng.floats(64))
            b.node("Conv", ["x", "w", "b"], ["y"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
            return try b.model(inputShape: [64, size, size])
        }
        #expect(Session.defaultMicroBatch(for: try conv(size: 16)) == 4)
        #expect(Session.defaultMicroBatch(for: try conv(size: 12)) == 8)
        #expect(Session.defaultMicroBatch(for: try conv(size: 6)) == 16)
        #expect(try Session(model: conv(size: 12), threads: 2).microBatch == 8)
        #expect(try Session(model: conv(size: 12), threads: 2, microBatch: 3).microBatch == 3)
        // A dense layer of 4M+ weights (16 MB): 16 images per pass whatever the convolutions.
        func dense(_ n: Int) throws -> Model {
            var rng = TestRNG(seed: 6)
            var b = ONNXBuilder()
            b.constant("w", [64, 64, 3, 3], rng.floats(64 * 64 * 9, scale: 0.1))
            b.node("Conv", ["x", "w"], ["c"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
            b.node("Flatten", ["c"], ["f"])
            b.constant("d", [64 * 16 * 16, n], rng.floats(64 * 16 * 16 * n, scale: 0.01))
            b.node("MatMul", ["f", "d"], ["y"])
            return try b.model(inputShape: [64, 16, 16])
        }
        #expect(Session.defaultMicroBatch(for: try dense(256)) == 16)
        #expect(Session.defaultMicroBatch(for: try dense(200)) == 4)
    }

    /// Dilated convs whose taps read padding for a fifth or more of their outputs run, at the AVX-512
    /// level, with tap-major weights over output rectangles of constant tap validity, each with only
    /// its live taps (DeepLabV3's ASPP: rate 12 and 24 on 32 x 32); rows and column bands, rectangles
    /// narrower and wider than a tile, whole rows where column bands would not pay (rate 3 on 8 x 40),
    /// output channels off the 8-row blocks, the residual and clamp.
    /// The others (rate 2 on 9 x 30: 0.82 of the pairs live, rate 4 on 32 x 32: 0.84) stay on the panels.
    @Test(arguments: [(6, 13, 11, 19, true), (9, 12, 12, 8, true), (2, 9, 30, 5, false), (24, 32, 32, 16, true),
                      (12, 32, 32, 9, true), (4, 32, 32, 8, false), (3, 8, 40, 11, true)])
    func dilatedConvSkipsDeadTaps(rate: Int, h: Int, w: Int, cout: Int, skips: Bool) throws {
        var rng = TestRNG(seed: UInt64(1700 + rate * 3 + h))
        var b = ONNXBuilder()
        let cin = 7
        b.constant("w", [cout, cin, 3, 3], rng.floats(cout * cin * 9))
        b.constant("b", [cout], rng.floats(cout))
        b.constant("w1", [cout, cin, 1, 1], rng.floats(cout * cin))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [3, 3], "dilations": [rate, rate],
               "pads": [rate, rate, rate, rate]])
        b.node("Conv", ["x", "w1"], ["side"], ints: ["kernel_shape": [1, 1]])
        b.node("Add", ["c", "side"], ["a"])
        b.node("Relu", ["a"], ["y"])
        try bothBuilds({ try b.model(inputShape: [cin, h, w], options: $0) }) { model throws in
            let dilated = model.program.steps.compactMap { if case let .conv(c) = $0, c.window.dh == rate { c } else { nil } }
            #expect(dilated.count == 1)
            #expect(dilated.first?.tapMajor == (model.isa.rawValue >= CPUISA.avx512.rawValue && skips))
            for (batch, micro, threads) in [(1, 16, 1), (3, 16, 2), (5, 2, 2)] {
                #expect(try compareWithReference(model, batch: batch, threads: threads, microBatch: micro) < 1e-5,
                        "\(model.isa) rate \(rate) batch \(batch)")
            }
        }
    }

    /// A strided 1x1 conv without padding (ResNet's downsample) is a 1x1 max pool picking its
    /// pixels and the pointwise kernel at the AVX-512 level (im2col + OpenBLAS below it), with
    /// the ReLU still fused; odd maps, strides 2 and 3, output channels off the 8-row blocks.
    @Test(arguments: [(2, 2, 7, 24), (3, 2, 11, 9), (2, 3, 28, 64), (2, 2, 1, 5)])
    func stridedPointwiseIsPoolAndPointwise(sh: Int, sw: Int, size: Int, cout: Int) throws {
        var rng = TestRNG(seed: UInt64(1600 + size + cout))
        var b = ONNXBuilder()
        let cin = 13
        b.constant("w", [cout, cin, 1, 1], rng.floats(cout * cin))
        b.constant("b", [cout], rng.floats(cout))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [1, 1], "strides": [sh, sw]])
        b.node("Relu", ["c"], ["y"])
        try bothBuilds({ try b.model(inputShape: [cin, size, size], options: $0) }) { model throws in
            let steps = model.program.steps
            let convs = steps.compactMap { if case let .conv(c) = $0 { c } else { nil } }
            #expect(convs.count == 1)
            if model.isa.rawValue >= CPUISA.avx512.rawValue {
                #expect(convs.first?.kind == .pointwise && convs.first?.window.sh == 1)
                #expect(steps.contains { if case let .pool(p) = $0 { p.isMax && p.window.kh == 1 && p.window.sh == sh } else { false } })
            } else {
                #expect(convs.first?.kind != .pointwise)
            }
            #expect(convs.first?.activation == .relu)
            for (batch, micro) in [(1, 16), (5, 2), (9, 16)] {
                #expect(try compareWithReference(model, batch: batch, threads: 2, microBatch: micro) < 1e-5, "\(model.isa) \(batch)")
            }
        }
    }

    @Test(arguments: 0..<16) func depthwiseRandomShapes(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(900 + seed))
        var b = ONNXBuilder()
        let ch = [2, 3, 16, 17, 40][rng.int(0...4)]
        let kh = [3, 5, 3, 5, 7, 3][seed % 6], kw = [3, 5, 5, 3, 7, 1][seed % 6]
        let s = [1, 2, 1, 2, 3][rng.int(0...4)], d = seed % 5 == 4 ? 2 : 1
        let pads = [rng.int(0...3), rng.int(0...3), rng.int(0...3), rng.int(0...3)]
        // at AVX-512 stride-1 3x3 layers of maps 56+ wide run along rows (up to two 64-column groups), the rest 8 planes per vector
        let h = (kh - 1) * d + 1 + rng.int(0...12), w = (kw - 1) * d + 1 + rng.int(0...(seed % 2 == 0 ? 100 : 12))
        b.constant("w", [ch, 1, kh, kw], rng.floats(ch * kh * kw))
        b.constant("b", [ch], rng.floats(ch))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [kh, kw], "strides": [s, s], "dilations": [d, d],
               "pads": pads], int: ["group": ch])
        let act = ["Relu", "HardSwish", "Identity", "Clip"][seed % 4]
        if act == "Clip" { b.constant("lo", [], [0]); b.constant("hi", [], [6]) }
        b.node(act, act == "Clip" ? ["c", "lo", "hi"] : ["c"], ["y"])
        let model = try b.model(inputShape: [ch, h, w])
        guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
        #expect(c.kind == .depthwise)
        let batch = [1, 2, 5, 16, 19][seed % 5]
        try bothBuilds({ try b.model(inputShape: [ch, h, w], options: $0) }) { model throws in
            #expect(try compareWithReference(model, batch: batch, threads: 2, microBatch: 3) < 1e-4, "seed \(seed)")
            #expect(try compareWithReference(model, batch: batch, threads: 2, microBatch: 32) < 1e-4, "seed \(seed)")
            #expect(try compareWithReference(model, batch: batch, threads: 1, microBatch: 16) < 1e-4, "seed \(seed)")
        }
    }

    @Test(arguments: 0..<8) func poolReadingTheInput(seed: Int) throws {
        var rng = TestRNG(seed: UInt64(1000 + seed))
        var b = ONNXBuilder()
        let c = rng.int(1...4), k = rng.int(1...4), s = rng.int(1...3)
        let p = min(k - 1, rng.int(0...2)), h = k + rng.int(0...20), w = k + rng.int(0...20)
        let op = seed % 2 == 0 ? "AveragePool" : "MaxPool"
        b.node(op, ["x"], ["p"], ints: ["kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, 0, p]],
               int: op == "AveragePool" ? ["count_include_pad": seed % 4 / 2, "ceil_mode": seed % 3 == 0 ? 1 : 0]
                                        : ["ceil_mode": seed % 3 == 0 ? 1 : 0])
        b.constant("w", [5, c, 3, 3], rng.floats(5 * c * 9))
        b.node("Conv", ["p", "w"], ["y"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
        let model = try b.model(inputShape: [c, h, w], options: Self.builds[0])
        #expect(model.program.directInputStep == 0)
        #expect(try compareWithReference(model, batch: 5, threads: 2, microBatch: 2) < 1e-4)
        #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 8) < 1e-4)
        #expect(try compareWithReference(model, batch: 1) < 1e-4)
    }

    /// The stride-2 pools on AVX-512's permute paths (2x2/2 read in place, 3x3/2 ResNet-style with
    /// padding): rows wide enough for whole 16-column vectors and a tail, odd heights, on the input
    /// and after a conv, average and max.
    /// And the stride-1 pools on masked loads (Inception's 3x3/1 average pools, padding not counted).
    @Test(arguments: [(2, 0, "AveragePool", 2), (2, 0, "MaxPool", 2), (3, 1, "MaxPool", 2), (3, 1, "AveragePool", 2),
                      (3, 1, "AveragePool", 1), (3, 1, "MaxPool", 1), (5, 2, "AveragePool", 1)])
    func strideTwoPools(k: Int, pad: Int, op: String, stride: Int) throws {
        var rng = TestRNG(seed: UInt64(1100 + k * 10 + pad))
        for (h, w) in [(45, 77), (8, 96), (33, 35), (9, 8)] {
            var b = ONNXBuilder()
            b.node(op, ["x"], ["p"], ints: ["kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad, pad, pad, pad]])
            b.constant("w", [6, 3, 3, 3], rng.floats(6 * 27))
            b.node("Conv", ["p", "w"], ["c"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
            b.node(op, ["c"], ["y"], ints: ["kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad, pad, pad, pad]])
            for options in Self.builds {
                let model = try b.model(inputShape: [3, h, w], options: options)
                #expect(try compareWithReference(model, batch: 3, threads: 2, microBatch: 2) < 1e-5, "\(op) \(k) \(h)x\(w)")
            }
        }
    }

    /// Winograd layers run direct when a micro-batch has few tiles; both paths agree.
    @Test(arguments: [1, 16]) func winogradLayerRunsDirectOnSmallMicroBatches(batch: Int) throws {
        var rng = TestRNG(seed: 21)
        var b = ONNXBuilder()
        b.constant("w", [64, 64, 3, 3], rng.floats(64 * 64 * 9, scale: 0.1))
        b.constant("b", [64], rng.floats(64))
        b.node("Conv", ["x", "w", "b"], ["c"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
        b.node("Relu", ["c"], ["y"])
        let model = try b.model(inputShape: [64, 26, 26])
        guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
        #expect(c.kind == .winograd43 && c.directWeights != nil)
        #expect(Winograd.worthIt(c, nb: 1, model.options) == false) // 49 tiles
        #expect(Winograd.worthIt(c, nb: 16, model.options) == true) // 784 tiles
        #expect(try compareWithReference(model, batch: batch, threads: 2) < 1e-4)
        #expect(try compareWithReference(model, batch: batch, threads: 1) < 1e-4)
    }

    /// At the AVX2 and AVX-512 levels a narrow 3x3 behind a wide input (DenseNet's 128 -> 32) runs
    /// direct on maps under 512 pixels (14 x 14) however large the micro-batch, and as Winograd on
    /// 28 x 28; a 32 -> 32 layer on 14 x 14 keeps Winograd. Both paths agree.
    @Test(arguments: [CPUISA.avx2, .avx512]) func narrowBottleneckRunsDirectOnSmallMaps(isa: CPUISA) throws {
        var avx2 = EngineOptions()
        avx2.isa = isa
        for (cin, side, winograd) in [(128, 14, false), (128, 28, true), (32, 14, true)] {
            var rng = TestRNG(seed: UInt64(1500 + side))
            var b = ONNXBuilder()
            b.constant("w", [32, cin, 3, 3], rng.floats(32 * cin * 9, scale: 0.05))
            b.node("Conv", ["x", "w"], ["y"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
            let model = try b.model(inputShape: [cin, side, side], options: avx2)
            guard case let .conv(c)? = model.program.steps.first else { Issue.record("no conv"); return }
            #expect(c.kind == .winograd43)
            #expect(Winograd.worthIt(c, nb: 16, model.options) == winograd, "\(cin) -> 32 at \(side)")
            #expect(try compareWithReference(model, batch: 4, threads: 2, microBatch: 4) < 1e-4)
        }
    }

    /// Batch 1 on 2 threads (one micro-batch, every step split) matches 1 thread on a
    /// MobileNet-like block: pointwise, depthwise, Winograd, direct, global pool, Gemm.
    @Test func singleMicroBatchSplitMatchesOneThread() throws {
        var rng = TestRNG(seed: 11)
        var b = ONNXBuilder()
        b.constant("w0", [16, 3, 3, 3], rng.floats(16 * 27, scale: 0.5))
        b.node("Conv", ["x", "w0"], ["a"], ints: ["kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]])
        b.node("Relu", ["a"], ["a1"])
        b.constant("w1", [64, 16, 1, 1], rng.floats(64 * 16, scale: 0.5))
        b.node("Conv", ["a1", "w1"], ["p"], ints: ["kernel_shape": [1, 1]])
        b.constant("w2", [64, 1, 5, 5], rng.floats(64 * 25, scale: 0.5))
        b.node("Conv", ["p", "w2"], ["d"], ints: ["kernel_shape": [5, 5], "pads": [2, 2, 2, 2]], int: ["group": 64])
        b.constant("w3", [64, 64, 3, 3], rng.floats(64 * 64 * 9, scale: 0.1))
        b.node("Conv", ["d", "w3"], ["e"], ints: ["kernel_shape": [3, 3], "pads": [1, 1, 1, 1]])
        b.node("Add", ["e", "d"], ["f"])
        b.node("GlobalAveragePool", ["f"], ["g"])
        b.node("Flatten", ["g"], ["h"])
        b.constant("fc", [10, 64], rng.floats(640))
        b.node("Gemm", ["h", "fc"], ["y"], int: ["transB": 1])
        let model = try b.model(inputShape: [3, 40, 36], options: Self.builds[0])
        #expect(try compareWithReference(model, batch: 1, threads: 2) < 1e-4)
        var r2 = TestRNG(seed: 12)
        let input = Tensor(shape: [1, 3, 40, 36], data: r2.floats(3 * 40 * 36))
        let one = try Session(model: model, threads: 1).run(input)
        let two = try Session(model: model, threads: 2).run(input)
        #expect(relativeError(two.outputs[0].data, one.outputs[0].data) < 1e-5)
    }
}
