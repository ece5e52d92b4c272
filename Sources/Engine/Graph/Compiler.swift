import Foundation
import CEngineKernels

/// Lowers a ``Graph`` to a ``Program``: constant folding, per-image shape inference,
/// BN folding, activation / residual fusion, weight packing and arena planning.
struct Compiler {
    /// Stand-in for the dynamic batch size inside folded shape tensors (exact in Float).
    static let batchSentinel: Float = 1_073_741_824

    let graph: Graph
    let options: EngineOptions
    /// Activation ranges for an int8 compile.
    let calibration: Calibration?
    var constants: [String: Tensor]
    var valueOf: [String: Int] = [:]
    var slots: [Slot] = []
    var steps: [Step?] = []
    var flops: Double = 0
    /// The batch size the graph is fixed to (a literal batch in its input or a Reshape), or nil
    /// when the batch is free; a fixed-batch program runs micro-batches of exactly that size.
    let fixedBatch: Int?
    /// Load-time warnings (nodes left on the slow reference path).
    var warnings: [String] = []

    /// The reason shape inference gives when a value does not keep the batch first.
    static let batchNotFirst = "the output does not keep the batch as its first dimension (unsupported)"
    /// Reference nodes above this many FLOPs per image get a load-time warning.
    static let slowFallbackFLOPs: Double = 1e6

    init(graph: Graph, options: EngineOptions, calibration: Calibration?, fixedBatch: Int? = nil) {
        self.graph = graph
        self.options = options
        self.calibration = calibration
        self.constants = graph.constants
        self.fixedBatch = fixedBatch
    }

    /// Compiles with a free batch; a graph that pins its batch (a value that does not keep the
    /// batch first at batch sizes 2 and 3, e.g. a Reshape to a literal 1) compiles at the
    /// input's declared batch size (1 when it is symbolic).
    static func compile(_ graph: Graph, inputShape: [Int], options: EngineOptions = EngineOptions(),
                        calibration: Calibration? = nil) throws -> Program {
        do {
            var c = Compiler(graph: graph, options: options, calibration: calibration)
            return try c.run(inputShape: inputShape)
        } catch ModelError.invalidNode(_, _, let reason) where reason == batchNotFirst || reason.contains("cannot reshape") {
            // A value that does not keep the batch first, or a reshape that only works at the
            // graph's own batch (Swin's window partition folds the batch into the window count).
            var c = Compiler(graph: graph, options: options, calibration: calibration,
                             fixedBatch: (graph.inputDims.first ?? nil) ?? 1)
            return try c.run(inputShape: inputShape)
        }
    }

    mutating func newValue(_ name: String, _ perImage: [Int]) -> Int {
        slots.append(Slot(perImage: perImage, name: name))
        valueOf[name] = slots.count - 1
        return slots.count - 1
    }

    mutating func run(inputShape: [Int]) throws -> Program {
        let input = newValue(graph.inputName, inputShape)
        let embeddingName = graph.nodes.last { ($0.opType == "Gemm" || $0.opType == "MatMul") && $0.input(0).map { constants[$0] == nil } == true }?.inputs[0]
        for node in graph.nodes { try lower(node) }
        var outputs: [Int] = []
        for name in graph.outputNames {
            guard let v = valueOf[name] else {
                throw ModelError.invalidGraph(reason: "output '\(name)' is not computed from the input (constant outputs are not supported)")
            }
            guard !slots[v].batchless else {
                throw ModelError.invalidGraph(reason: "output '\(name)' of shape \(slots[v].perImage) does not have the batch as its first dimension")
            }
            outputs.append(v)
        }
        let embedding = embeddingName.flatMap { valueOf[$0] }
        var protected = Set(outputs)
        if let embedding { protected.insert(embedding) }
        fuse(protected: protected)
        var finalSteps = steps.compactMap { $0 }.map { step -> Step in
            if let q = quantized(step) { return q }
            if case var .gemm(g) = step {
                guard Self.gemmOnPanels(g, options) else { return step }
                g.panels = [Float](repeating: 0, count: tessera_engine_gemm_panels_count(Int32(g.n), Int32(g.k)))
                g.weights.withUnsafeBufferPointer { w in g.panels.withUnsafeMutableBufferPointer {
                    tessera_engine_gemm_pack_panels(w.baseAddress!, Int32(g.n), Int32(g.k), $0.baseAddress!)
                } }
                g.weights = []
                return .gemm(g)
            }
            guard case var .conv(c) = step else { return step }
            guard Winograd.eligible(c, options) else {
                if c.kind == .pointwise && options.directConvolution && !options.pointwiseOnBLAS {
                    c.directWeights = ConvKernels.packDirect(c.weights, cout: c.cout, k: c.k)
                } else if directEligible(c) {
                    let taps = c.window.kh * c.window.kw
                    if (c.window.dh > 1 || c.window.dw > 1) && taps <= 64
                        && options.effectiveISA.rawValue >= CPUISA.avx512.rawValue && Self.liveTapFraction(c.window) <= 0.8 {
                        // [cout][cin][taps] -> [cout][taps][cin]
                        let w = c.weights, cin = c.cin
                        c.weights = [Float](unsafeUninitializedCapacity: w.count) { buf, n in
                            for o in 0..<c.cout { for ci in 0..<cin { for t in 0..<taps {
                                buf[(o * taps + t) * cin + ci] = w[(o * cin + ci) * taps + t]
                            } } }
                            n = w.count
                        }
                        c.tapMajor = true
                    }
                    c.weights = ConvKernels.packDirect(c.weights, cout: c.cout, k: c.k)
                    c.kind = .direct
                } else if options.directConvolution && c.kind == .gemm && c.groups > 1 && (c.cout / c.groups) % 8 == 0 {
                    // Grouped (not depthwise): each group on the direct kernel, its weights packed
                    // one group after another (RegNet's group convolutions); groups of a multiple of
                    // 8 output channels, so every group starts a block of the kernel's tile.
                    let perGroup = c.cout / c.groups * c.k
                    c.weights = (0..<c.groups).flatMap { gi in
                        ConvKernels.packDirect(Array(c.weights[(gi * perGroup)..<((gi + 1) * perGroup)]), cout: c.cout / c.groups, k: c.k)
                    }
                    c.kind = .direct
                }
                return .conv(c)
            }
            if options.directConvolution { c.directWeights = ConvKernels.packDirect(c.weights, cout: c.cout, k: c.k) }
            if Winograd.prefersF43(c, options) {
                c.weights = Winograd.packEntries(Winograd.transformWeights43(c.weights, cout: c.cout, cin: c.cin),
                                                 cout: c.cout, cin: c.cin)
                c.kind = .winograd43
            } else {
                c.weights = Winograd.packEntries(Winograd.transformWeights(c.weights, cout: c.cout, cin: c.cin),
                                                 cout: c.cout, cin: c.cin)
                c.kind = .winograd
            }
            return .conv(c)
        }
        if options.precision == .int8 && options.int8Chaining {
            finalSteps = Self.chainInt8(finalSteps, slots: slots, protected: protected)
        }
        let (arena, planned) = Self.plan(slots: slots, steps: finalSteps, input: input, pinned: protected)
        var maxK = 0
        for case let .conv(cs) in finalSteps where cs.kind == .gemm { maxK = max(maxK, cs.k) }
        var program = Program(slots: planned, steps: finalSteps, inputValue: input, outputValues: outputs,
                              embeddingValue: embedding, arenaUnits: arena, maxScratchK: maxK, flopsPerImage: flops,
                              options: options)
        program.fixedBatch = fixedBatch
        program.warnings = warnings
        let readers = finalSteps.indices.filter { finalSteps[$0].inputs.contains(input) }
        if readers.count == 1, !protected.contains(input),
           case let .pool(p) = finalSteps[readers[0]], p.input == input, planned[input].channelMajor {
            program.directInputStep = readers[0]
        }
        return program
    }

    /// Whether an FP32 dense layer (a MatMul or Gemm by constant weights) runs on the engine's
    /// AVX-512 tile instead of OpenBLAS. Measured on the Zen 5 VM (OpenBLAS at its Haswell
    /// kernels there, `OPENBLAS_CORETYPE`): see docs/engine.md, "AVX-512 again".
    static func gemmOnPanels(_ g: GemmStep, _ options: EngineOptions) -> Bool {
        g.q8 == nil && g.bf16 == nil && options.directConvolution
            && options.effectiveISA.rawValue >= CPUISA.avx512.rawValue && g.n * g.k > 0
    }

    /// The step on the int8 kernel, when compiling for int8 and the step's input was calibrated, or
    /// on the bf16 kernel when compiling for bf16: ungrouped convolutions (1x1 ones with at least
    /// 64 input and output channels) and dense layers.
    func quantized(_ step: Step) -> Step? {
        // A 1x1 layer with few input or output channels does too little arithmetic per value it
        // quantises (or rounds) and writes for the int8 / bf16 tile to pay (MobileNetV2's 16->96,
        // 24->144 and 144->24 layers ran 2-3x slower in int8 than on the fp32 pointwise kernel): fp32.
        func eligible(_ c: ConvStep) -> Bool {
            c.groups == 1 && c.kind != .depthwise && !(c.window.kh * c.window.kw == 1 && min(c.cin, c.cout) < 64)
        }
        if options.precision == .bf16 {
            switch step {
            case var .conv(c) where eligible(c):
                c.bf16 = BF16Layer(weights: c.weights, cout: c.cout, cin: c.cin, taps: c.window.kh * c.window.kw)
                return .conv(c)
            case var .gemm(g) where g.rows == 1:
                g.bf16 = BF16Layer(weights: g.weights, cout: g.n, cin: g.k, taps: 1)
                return .gemm(g)
            default: return nil
            }
        }
        guard options.precision == .int8, let calibration else { return nil }
        switch step {
        case var .conv(c) where eligible(c):
            guard let range = calibration.ranges[slots[c.input].name] else { return nil }
            c.q8 = Q8Layer(weights: c.weights, cout: c.cout, cin: c.cin, taps: c.window.kh * c.window.kw, range: range)
            return .conv(c)
        case var .gemm(g) where g.rows == 1:
            guard let range = calibration.ranges[slots[g.input].name] else { return nil }
            g.q8 = Q8Layer(weights: g.weights, cout: g.n, cin: g.k, taps: 1, range: range)
            return .gemm(g)
        default: return nil
        }
    }

    /// Ungrouped convolutions that are not 1x1 run on the direct C kernel (1x1 strided ones
    /// stay on a strided im2col + OpenBLAS, which measured faster; so do dilated ones below the
    /// AVX-512 level: DeepLabV3's 2048->256 3x3 dilated layers ran 2.8x faster on OpenBLAS on the
    /// AVX2 VM, and still 1.2x faster once the AVX2 panels ran k in L1-sized passes (507 against
    /// 623 ms per 4 images at 32 x 32), while
    /// on the AVX-512 one the direct kernel is faster: DeepLabV3-ResNet50 2.4-2.8 -> 3.4-3.5 img/s
    /// at batch 4, 2 threads); `options.directConvolution` false keeps every dense convolution on
    /// im2col + OpenBLAS.
    /// Name suffix of the value a strided 1x1 conv's picking pool writes (see `lower`; calibration
    /// records the pool's input under its own name for the int8 build, which keeps the strided conv).
    static let stridedPixelsSuffix = "/strided-pixels"

    /// The fraction of (output, tap) pairs of a conv that read inside the map: DeepLabV3's rate-12
    /// and rate-24 ASPP convs on 32 x 32 maps 0.56 and 0.25, its backbone's rate-4 convs 0.84. At
    /// <= 0.8 a dilated conv runs on `tessera_engine_conv_live_taps` (per-tap passes over output
    /// rectangles; the rate-4 convs ran 6-15% slower there than on the single-pass panels).
    static func liveTapFraction(_ w: Window2D) -> Double {
        func counts(_ on: Int, _ s: Int, _ p: Int, _ d: Int, _ k: Int, _ n: Int) -> Int {
            (0..<k).reduce(0) { sum, t in sum + (0..<on).filter { o in let i = o * s - p + t * d; return i >= 0 && i < n }.count }
        }
        let ys = counts(w.oh, w.sh, w.pt, w.dh, w.kh, w.h), xs = counts(w.ow, w.sw, w.pl, w.dw, w.kw, w.w)
        return Double(ys) * Double(xs) / (Double(w.kh * w.kw) * Double(w.oh * w.ow))
    }

    func directEligible(_ c: ConvStep) -> Bool {
        options.directConvolution && c.kind == .gemm && c.groups == 1 && c.window.kh * c.window.kw > 1
            && ((c.window.dh == 1 && c.window.dw == 1) || options.effectiveISA.rawValue >= CPUISA.avx512.rawValue)
    }

    // MARK: lowering

    static func constantsOf(_ ops: [Operand?]) -> [Tensor?] {
        ops.map { op -> Tensor? in
            if case let .constant(t)? = op { return t }
            return nil
        }
    }

    mutating func lower(_ node: Node) throws {
        let present = node.inputs.filter { !$0.isEmpty }
        for name in present where constants[name] == nil && valueOf[name] == nil {
            throw ModelError.invalidGraph(reason: "node '\(node.name)' (\(node.opType)) reads '\(name)', which is not defined before it")
        }
        // An If whose condition is known when the model loads (a shape test, as torch exports
        // LocalResponseNorm): the branch it takes is lowered in its place.
        if node.opType == "If" {
            guard let condition = node.input(0).flatMap({ constants[$0] }), condition.count == 1 else {
                throw node.error("its condition depends on the image's pixels; only conditions known when the model loads "
                                 + "(shapes, constants) are supported")
            }
            let branch = try node.branch(condition.data[0] != 0)
            constants.merge(branch.constants) { current, _ in current }
            for inner in branch.nodes { try lower(inner) }
            for (from, to) in zip(branch.outputNames, node.outputs) where !to.isEmpty {
                try lower(Node(name: node.name + "/" + to, opType: "Identity", inputs: [from], outputs: [to], attributes: [:]))
            }
            return
        }
        // A 3-D pool over the first spatial axis only ([k, 1, 1] windows: torch's LocalResponseNorm
        // averages squares across channels this way) is a 2-D pool with the last two axes merged.
        if var pool = node.depthPoolAs2D(), let name = node.input(0), let xv = valueOf[name], !slots[xv].batchless,
           slots[xv].perImage.count == 4 {
            let shape = slots[xv].perImage
            let flat = node.name + "/flat", pooled = node.name + "/pooled"
            constants[flat + "/shape"] = Tensor(shape: [4], data: [0, Float(shape[0]), Float(shape[1]), Float(shape[2] * shape[3])])
            try lower(Node(name: flat, opType: "Reshape", inputs: [name, flat + "/shape"], outputs: [flat], attributes: [:]))
            (pool.name, pool.inputs, pool.outputs) = (pooled, [flat], [pooled])
            try lower(pool)
            let depth = slots[valueOf[pooled]!].perImage[1]
            constants[pooled + "/shape"] = Tensor(shape: [5], data: [0, Float(shape[0]), Float(depth), Float(shape[2]), Float(shape[3])])
            try lower(Node(name: node.name, opType: "Reshape", inputs: [pooled, pooled + "/shape"], outputs: node.outputs,
                           attributes: [:]))
            return
        }
        // A constant materialised at a shape holding the batch (ViT's class token expanded to
        // [N, 1, D]): one copy per image.
        if present.allSatisfy({ constants[$0] != nil }), ["Expand", "ConstantOfShape", "Tile"].contains(node.opType),
           present.contains(where: { constants[$0]!.data.contains(Self.batchSentinel) }) {
            try lowerBatchBroadcast(node)
            return
        }
        // Constant folding: every input known.
        if present.allSatisfy({ constants[$0] != nil }) {
            let ins: [Tensor?] = node.inputs.map { $0.isEmpty ? nil : constants[$0] }
            let outs = try Reference.evaluate(node, ins, opset: graph.opset)
            for (name, t) in zip(node.outputs, outs) where !name.isEmpty { constants[name] = t }
            return
        }
        if node.opType == "Shape", let first = node.input(0), let xv = valueOf[first], node.outputs.count == 1 {
            let x = slots[xv].perImage
            let full = slots[xv].batchless ? x.map { Float($0) } : [fixedBatch.map(Float.init) ?? Self.batchSentinel] + x.map { Float($0) }
            let r = full.count
            var start = node.int("start", 0), end = node.int("end", r)
            if start < 0 { start += r }; if end < 0 { end += r }
            start = min(max(start, 0), r); end = min(max(end, start), r)
            constants[node.outputs[0]] = Tensor(shape: [end - start], data: Array(full[start..<end]))
            return
        }
        let (perImage, batchlessOutputs) = try inferPerImage(node)
        let batchless = batchlessOutputs.contains(true) || present.contains { valueOf[$0].map { slots[$0].batchless } == true }
        let ins = node.inputs.map { name -> Operand? in
            if name.isEmpty { return nil }
            if let v = valueOf[name] { return .value(v) }
            return .constant(constants[name]!)
        }
        func const(_ i: Int) -> Tensor? { node.input(i).flatMap { constants[$0] } }
        func batched(_ i: Int) -> Int? { node.input(i).flatMap { valueOf[$0] } }
        let x = batched(0)

        // Values off the batch-first layout (image by image only): the whole-tensor steps where
        // they apply, otherwise the reference path.
        if batchless, fixedBatch == 1, lowerAtBatchOne(node, perImage: perImage, batchless: batchlessOutputs) { return }
        switch batchless ? "" : node.opType {
        case "Identity", "Dropout", "Cast":
            if let x { valueOf[node.outputs[0]] = x; return }
        case "Conv":
            if let x, let w = const(1), node.inputs.count < 3 || node.input(2) == nil || const(2) != nil {
                let xs = slots[x].perImage
                let groups = node.int("group", 1)
                var (window, weights) = Self.pruneTaps(try Window2D(node: node, h: xs[1], w: xs[2], kernel: (w.shape[2], w.shape[3])), w)
                var source = x
                let cout = w.shape[0], cin = xs[0]
                // A strided 1x1 conv without padding (ResNet's downsample) at the AVX-512 level: a
                // 1x1 max pool picks the pixels it reads, then the pointwise kernel runs on them
                // (it ran as im2col + OpenBLAS, whose Haswell kernels this VM's OPENBLAS_CORETYPE
                // selects: ResNet-50's 1024 -> 2048 1x1/2 at 7x7 16.3 ms per 4 images).
                if groups == 1 && window.kh == 1 && window.kw == 1 && (window.sh > 1 || window.sw > 1)
                    && window.pt + window.pl + window.pb + window.pr == 0 && options.directConvolution
                    && !options.pointwiseOnBLAS && options.precision != .int8
                    && options.effectiveISA.rawValue >= CPUISA.avx512.rawValue {
                    source = newValue(node.outputs[0] + Self.stridedPixelsSuffix, [cin, window.oh, window.ow])
                    steps.append(.pool(PoolStep(isMax: true, window: window,
                                                rowCount: [Float](repeating: 1, count: window.oh),
                                                colCount: [Float](repeating: 1, count: window.ow), input: x, output: source)))
                    window.sh = 1; window.sw = 1; window.h = window.oh; window.w = window.ow
                }
                let kind: ConvStep.Kind
                if groups == cin && groups == cout && groups > 1 { kind = .depthwise }
                else if groups == 1 && window.kh == 1 && window.kw == 1 && window.sh == 1 && window.sw == 1
                            && window.pt + window.pl + window.pb + window.pr == 0 { kind = .pointwise }
                else { kind = .gemm }
                let out = newValue(node.outputs[0], perImage[0])
                flops += 2 * Double(cout * window.oh * window.ow) * Double(cin / groups * window.kh * window.kw)
                steps.append(.conv(ConvStep(kind: kind, window: window, cin: cin, cout: cout, groups: groups,
                                            weights: weights, bias: const(2)?.data ?? [Float](repeating: 0, count: cout),
                                            input: source, output: out)))
                return
            }
        case "BatchNormalization":
            if let x, let s = const(1), let b = const(2), let m = const(3), let v = const(4), slots[x].perImage.count >= 1 {
                let eps = node.float("epsilon", 1e-5)
                let scale = (0..<s.count).map { s.data[$0] / sqrt(v.data[$0] + eps) }
                let shift = (0..<s.count).map { b.data[$0] - m.data[$0] * scale[$0] }
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.channelAffine(scale: scale, shift: shift, input: x, output: out))
                return
            }
        case "Relu", "Sigmoid", "HardSwish", "LeakyRelu", "HardSigmoid", "Clip", "Mish", "Erf":
            if let x {
                let act: Activation
                switch node.opType {
                case "Relu": act = .relu
                case "Mish": act = .mish
                case "Erf": act = .erf
                case "Sigmoid": act = .sigmoid
                case "HardSwish": act = .hardSwish
                case "LeakyRelu": act = .leaky(node.float("alpha", 0.01))
                case "HardSigmoid": act = .hardSigmoid(node.float("alpha", 0.2), node.float("beta", 0.5))
                default:
                    if (1..<node.inputs.count).contains(where: { node.input($0) != nil && const($0) == nil }) {
                        throw node.error("min/max must be constants")
                    }
                    let (lo, hi) = Reference.clipBounds(node, Self.constantsOf(ins), opset: graph.opset)
                    act = lo == 0 && hi == .infinity ? .relu : .clip(lo, hi)
                }
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.activation(act, input: x, output: out))
                return
            }
        case "Pow":
            // A constant scalar exponent (LocalResponseNorm as torch writes it out).
            if let x, let e = const(1), e.count == 1 {
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.activation(.pow(e.data[0]), input: x, output: out))
                return
            }
        case "Pad":
            // Constant mode, constant non-negative pads, the batch axis unpadded, channel-major in and out.
            let cs = Self.constantsOf(ins)
            if let x, slots[x].channelMajor, perImage[0].count == slots[x].perImage.count,
               node.string("mode", "constant") == "constant", node.inputs.count < 4 || node.inputs[3].isEmpty,
               node.input(2) == nil || const(2)?.count == 1,
               let pads = Reference.intList(node, cs, input: 1, attribute: "pads") {
                let r = slots[x].perImage.count + 1
                if pads.count == 2 * r, pads.allSatisfy({ $0 >= 0 }), pads[0] == 0, pads[r] == 0,
                   (1..<r).allSatisfy({ slots[x].perImage[$0 - 1] + pads[$0] + pads[$0 + r] == perImage[0][$0 - 1] }) {
                    let value = const(2)?.data.first ?? node.float("value", 0)
                    let out = newValue(node.outputs[0], perImage[0])
                    steps.append(.pad(before: Array(pads[1..<r]), value: value, input: x, output: out))
                    return
                }
            }
        case "InstanceNormalization":
            if let x, slots[x].perImage.count >= 2, let scale = const(1), let bias = const(2),
               scale.count == slots[x].perImage[0], bias.count == scale.count {
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.groupNorm(GroupNormStep(groups: scale.count, epsilon: node.float("epsilon", 1e-5),
                                                      scale: scale.data, shift: bias.data, input: x, output: out)))
                return
            }
        case "Split":
            // Along channels of a map: each output a run of whole channel planes.
            if let x, slots[x].channelMajor, perImage.count == node.outputs.count,
               [1, -(slots[x].perImage.count + 1)].contains(node.int("axis", 0)),
               perImage.allSatisfy({ $0.count == slots[x].perImage.count && $0.dropFirst() == slots[x].perImage.dropFirst() }),
               !node.outputs.contains(where: \.isEmpty) {
                var begin = 0
                for (name, shape) in zip(node.outputs, perImage) {
                    let out = newValue(name, shape)
                    steps.append(.channels(sources: Array(begin..<(begin + shape[0])), input: x, output: out))
                    begin += shape[0]
                }
                return
            }
        case "Slice":
            // Channels of a map (opset 10+: constant starts, ends, axes, steps; positive step).
            if let x, slots[x].channelMajor, graph.opset >= 10, let starts = const(1), let ends = const(2),
               starts.count == 1, ends.count == 1, node.inputs.count < 4 || node.input(3) == nil || const(3)?.count == 1,
               node.inputs.count < 5 || node.input(4) == nil || const(4)?.count == 1 {
                let rank = slots[x].perImage.count + 1
                let axis = node.input(3) == nil ? 0 : Int(const(3)!.data[0])
                let step = node.input(4) == nil ? 1 : Int(const(4)!.data[0])
                let n = slots[x].perImage[0]
                if (axis == 1 || axis == 1 - rank), step > 0 {
                    func clamp(_ v: Float) -> Int {
                        var i = v >= 9.2e18 ? n : v <= -9.2e18 ? 0 : Int(v)
                        if i < 0 { i += n }
                        return min(max(i, 0), n)
                    }
                    let lo = clamp(starts.data[0]), hi = clamp(ends.data[0])
                    let sources = Array(stride(from: lo, to: hi, by: step))
                    if !sources.isEmpty, perImage[0].first == sources.count, perImage[0].dropFirst() == slots[x].perImage.dropFirst() {
                        let out = newValue(node.outputs[0], perImage[0])
                        steps.append(.channels(sources: sources, input: x, output: out))
                        return
                    }
                }
            }
        case "Resize":
            if let x, let step = try resizeStep(node, x, perImage[0]) {
                steps.append(.resize(step))
                return
            }
        case "Add", "Sub", "Mul", "Div":
            if try lowerBinary(node, perImage[0]) { return }
        case "Concat":
            let axis = node.int("axis", 1)
            let vs = node.inputs.compactMap { valueOf[$0] }
            if vs.count == node.inputs.count, perImage[0].count >= 2, axis == 1 || axis == -(perImage[0].count + 1) {
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.concat(inputs: vs, output: out))
                return
            }
        case "MaxPool", "AveragePool":
            if let x, slots[x].perImage.count == 3 {
                let xs = slots[x].perImage
                let w = try Window2D(node: node, h: xs[1], w: xs[2], kernel: nil, ceilMode: node.int("ceil_mode", 0) != 0)
                let includePad = node.int("count_include_pad", 0) != 0
                func counts(_ o: Int, _ s: Int, _ p0: Int, _ p1: Int, _ k: Int, _ d: Int, _ n: Int) -> [Float] {
                    (0..<o).map { i in
                        let start = i * s - p0
                        if includePad {
                            let end = min(start + (k - 1) * d + 1, n + p1)
                            return Float((end - start + d - 1) / d)
                        }
                        return Float((0..<k).filter { start + $0 * d >= 0 && start + $0 * d < n }.count)
                    }
                }
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.pool(PoolStep(isMax: node.opType == "MaxPool", window: w,
                                            rowCount: counts(w.oh, w.sh, w.pt, w.pb, w.kh, w.dh, w.h),
                                            colCount: counts(w.ow, w.sw, w.pl, w.pr, w.kw, w.dw, w.w),
                                            input: x, output: out)))
                return
            }
        case "GlobalAveragePool", "GlobalMaxPool", "ReduceMean":
            if let x, slots[x].perImage.count >= 2 {
                var ok = node.opType != "ReduceMean"
                if !ok {
                    let rank = slots[x].perImage.count + 1
                    let cs = Self.constantsOf(ins)
                    let axes = try Reference.reduceAxes(node, cs, rank: rank, opset: graph.opset)
                    ok = Set(axes) == Set(2..<rank)
                }
                if ok {
                    let out = newValue(node.outputs[0], perImage[0])
                    steps.append(.globalPool(isMax: node.opType == "GlobalMaxPool", input: x, output: out))
                    return
                }
            }
        case "Flatten", "Reshape", "Squeeze", "Unsqueeze":
            if let x {
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.relayout(input: x, output: out))
                return
            }
        case "LayerNormalization":
            // Over the last axis only, constant scale and bias, only the normalised output used.
            if let x, slots[x].channelMajor, let scale = const(1), let e = slots[x].perImage.last,
               [-1, slots[x].perImage.count].contains(node.int("axis", -1)),
               scale.count == e, node.input(2) == nil || const(2)?.count == e,
               node.outputs.dropFirst().allSatisfy(\.isEmpty) {
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.layerNorm(epsilon: node.float("epsilon", 1e-5), scale: scale.data,
                                        shift: const(2)?.data ?? [Float](repeating: 0, count: e), input: x, output: out))
                return
            }
        case "Transpose":
            // Batch kept first, channel-major in and out: a strided copy. (Without `perm` the
            // axes reverse, which moves the batch: left to the reference path.)
            if let x, slots[x].channelMajor, perImage[0].count >= 2, let perm = node.ints("perm"),
               perm.count == slots[x].perImage.count + 1, perm[0] == 0, Set(perm) == Set(perm.indices) {
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.transpose(perm: perm.dropFirst().map { $0 - 1 }, input: x, output: out))
                return
            }
        case "MatMul" where x != nil && batched(1) != nil:
            // Two batched values with the same leading per-image axes (attention's [N, heads, S, d]):
            // channel-major, every (leading index, image) matrix is contiguous, in the same order in
            // both operands and the output.
            let xs = slots[x!].perImage, ys = slots[batched(1)!].perImage
            if xs.count >= 3, ys.count == xs.count, xs.dropLast(2) == ys.dropLast(2), xs[xs.count - 1] == ys[ys.count - 2],
               perImage[0] == Array(xs.dropLast(2)) + [xs[xs.count - 2], ys[ys.count - 1]] {
                let m = xs[xs.count - 2], k = xs[xs.count - 1], n = ys[ys.count - 1]
                let out = newValue(node.outputs[0], perImage[0])
                let count = xs.dropLast(2).reduce(1, *)
                flops += 2 * Double(count * m * k * n)
                steps.append(.batchedMatMul(count: count, m: m, k: k, n: n, lhs: x!, rhs: batched(1)!, output: out))
                return
            }
        case "Gemm", "MatMul":
            // `[nb, k]` times a constant; or a MatMul by a constant over the last axis of a
            // channel-major value (a Linear layer on tokens or NHWC maps): every row of k in its
            // slot times B, one product over all of them.
            if let x, let b = const(1), b.rank == 2, node.int("transA", 0) == 0,
               slots[x].perImage.count == 1
                || (node.opType == "MatMul" && slots[x].channelMajor && slots[x].perImage.last == b.shape[0]
                    && perImage[0] == Array(slots[x].perImage.dropLast()) + [b.shape[1]]) {
                let k = slots[x].perImage.last!, rows = slots[x].count / k
                let transB = node.opType == "Gemm" && node.int("transB", 0) != 0
                let n = transB ? b.shape[0] : b.shape[1]
                let alpha = node.opType == "Gemm" ? node.float("alpha", 1) : 1
                var w = [Float](repeating: 0, count: n * k)
                for j in 0..<n { for p in 0..<k { w[j * k + p] = alpha * (transB ? b.data[j * k + p] : b.data[p * n + j]) } }
                var bias = [Float](repeating: 0, count: n)
                if node.opType == "Gemm", let c = const(2) {
                    let beta = node.float("beta", 1)
                    // C broadcasts over the output's rows only as [n], [1, n] or one value ([n, 1]
                    // would be one value per row: left to the reference path)
                    guard c.count == 1 || (c.shape.last == n && c.count == n) else { break }
                    for j in 0..<n { bias[j] = beta * c.data[c.count == 1 ? 0 : j] }
                } else if node.opType == "Gemm", node.input(2) != nil {
                    break
                }
                let out = newValue(node.outputs[0], perImage[0])
                flops += 2 * Double(n * k * rows)
                steps.append(.gemm(GemmStep(weights: w, bias: bias, n: n, k: k, rows: rows, input: x, output: out)))
                return
            }
        case "Softmax" where x.map { slots[$0].channelMajor } == true:
            // Over the last axis: its rows are contiguous in the channel-major slot.
            let axis = node.int("axis", graph.opset >= 13 ? -1 : 1), r = slots[x!].perImage.count + 1
            if graph.opset >= 13, axis == -1 || axis == r - 1, let n = slots[x!].perImage.last, n > 0 {
                let out = newValue(node.outputs[0], perImage[0])
                steps.append(.rowSoftmax(n: n, input: x!, output: out))
                return
            }
        case "Softmax":
            if let x, slots[x].perImage.count == 1 {
                let axis = node.int("axis", graph.opset >= 13 ? -1 : 1)
                if axis == -1 || axis == 1 {
                    let out = newValue(node.outputs[0], perImage[0])
                    steps.append(.rowSoftmax(n: slots[x].count, input: x, output: out))
                    return
                }
            }
        default: break
        }
        // Generic path: at batch 1 the whole-tensor steps where they apply, else the reference op
        // on an NCHW copy of the micro-batch.
        if !batchless, fixedBatch == 1, lowerAtBatchOne(node, perImage: perImage, batchless: batchlessOutputs) { return }
        let cost = referenceFLOPs(node, ins)
        if node.opType == "MatMul" || node.opType == "Gemm" || node.opType == "ConvTranspose" { flops += cost.blas }
        if cost.naive >= Self.slowFallbackFLOPs {
            warnings.append(String(format: "node '%@' (%@) runs on the naive reference interpreter (%.0f MFLOP per image): expect it to be slow",
                                   node.name, node.opType, cost.naive / 1e6))
        }
        var outs: [Int] = []
        for (i, name) in node.outputs.enumerated() where !name.isEmpty {
            if i < perImage.count {
                let v = newValue(name, perImage[i])
                slots[v].batchless = batchlessOutputs[i]
                outs.append(v)
            }
        }
        steps.append(.fallback(node, inputs: ins, outputs: outs, opset: graph.opset))
    }

    /// A 2-D Resize (opset 11+) of a `[C, H, W]` value with N and C kept: nearest or linear, the
    /// coordinate transformations torch exports. Anything else stays on the reference path.
    mutating func resizeStep(_ node: Node, _ x: Int, _ out: [Int]) throws -> ResizeStep? {
        let xs = slots[x].perImage
        guard graph.opset >= 11, xs.count == 3, out.count == 3, out[0] == xs[0] else { return nil }
        let mode = node.string("mode", "nearest"), coord = node.string("coordinate_transformation_mode", "half_pixel")
        let nearestMode = node.string("nearest_mode", "round_prefer_floor")
        guard mode == "nearest" || mode == "linear",
              ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"].contains(coord),
              node.int("antialias", 0) == 0, node.string("keep_aspect_ratio_policy", "stretch") == "stretch" else { return nil }
        // `axes` (opset 18) must name the two spatial axes; scales then hold only those two.
        let axes = node.ints("axes").map { $0.map { $0 < 0 ? $0 + 4 : $0 } }
        guard axes == nil || axes == [2, 3] else { return nil }
        var scales: [Float] = [Float(out[1]) / Float(xs[1]), Float(out[2]) / Float(xs[2])]
        if let s = node.input(2).flatMap({ constants[$0] }), s.count == 4 || (axes != nil && s.count == 2) {
            if s.count == 4 { guard s.data[0] == 1, s.data[1] == 1 else { return nil } }
            scales = Array(s.data.suffix(2))
        } else if node.input(2).map({ !$0.isEmpty && constants[$0] == nil }) == true {
            return nil
        }
        func taps(_ n: Int, _ o: Int, _ scale: Float) -> [ResizeStep.Tap]? {
            (0..<o).map { i -> ResizeStep.Tap in
                let fi = Float(i)
                var c: Float
                switch coord {
                case "align_corners": c = o > 1 ? fi * Float(n - 1) / Float(o - 1) : 0
                case "asymmetric": c = fi / scale
                case "pytorch_half_pixel": c = o > 1 ? (fi + 0.5) / scale - 0.5 : 0
                default: c = (fi + 0.5) / scale - 0.5
                }
                if mode == "nearest" {
                    let r: Float
                    switch nearestMode {
                    case "floor": r = c.rounded(.down)
                    case "ceil": r = c.rounded(.up)
                    case "round_prefer_ceil": r = (c + 0.5).rounded(.down)
                    default: r = c == c.rounded(.down) + 0.5 ? c.rounded(.down) : c.rounded()
                    }
                    let k = min(max(Int(r), 0), n - 1)
                    return .init(i0: k, i1: k, w: 0)
                }
                c = min(max(c, 0), Float(n - 1))
                let i0 = min(Int(c.rounded(.down)), n - 1), i1 = min(i0 + 1, n - 1)
                return .init(i0: i0, i1: i1, w: c - Float(i0))
            }
        }
        guard let rows = taps(xs[1], out[1], scales[0]), let cols = taps(xs[2], out[2], scales[1]) else { return nil }
        let y = newValue(node.outputs[0], out)
        return ResizeStep(ih: xs[1], iw: xs[2], oh: out[1], ow: out[2], rows: rows, cols: cols, input: x, output: y)
    }

    /// A constant-input node whose shape input holds the batch: evaluated once at batch 1
    /// (checked at 2) and repeated per image at run time.
    mutating func lowerBatchBroadcast(_ node: Node) throws {
        func evaluate(_ batch: Int) throws -> Tensor {
            let ins: [Tensor?] = node.inputs.map { name in
                guard let t = constants[name] else { return nil }
                return Tensor(shape: t.shape, data: t.data.map { $0 == Self.batchSentinel ? Float(batch) : $0 })
            }
            return try Reference.evaluate(node, ins, opset: graph.opset)[0]
        }
        let one = try evaluate(1), two = try evaluate(2)
        guard one.shape.first == 1, two.shape.first == 2, one.shape.dropFirst() == two.shape.dropFirst() else {
            throw node.error(Self.batchNotFirst)
        }
        let perImage = Array(one.shape.dropFirst())
        let out = newValue(node.outputs[0], perImage)
        let synthetic = Node(name: node.name, opType: BatchBroadcast.opType, inputs: [graph.inputName, node.outputs[0]],
                             outputs: [node.outputs[0]], attributes: [:])
        steps.append(.fallback(synthetic, inputs: [.value(valueOf[graph.inputName]!), .constant(Tensor(shape: perImage, data: one.data))],
                               outputs: [out], opset: graph.opset))
    }

    /// Per-image FLOPs of a node on the reference path: (naive loops, OpenBLAS products).
    func referenceFLOPs(_ node: Node, _ ins: [Operand?]) -> (naive: Double, blas: Double) {
        func shape(_ i: Int) -> [Int]? {
            guard i < ins.count, let op = ins[i] else { return nil }
            switch op {
            case let .value(v): return slots[v].fullShape(1)
            case let .constant(t): return t.shape
            }
        }
        switch node.opType {
        case "Conv":
            guard let x = shape(0), let w = shape(1), x.count == 4, w.count == 4 else { return (0, 0) }
            return (2 * Double(w.reduce(1, *)) * Double(x[2] * x[3]) / Double(max(node.int("group", 1), 1)), 0)
        case "MatMul", "Gemm":
            guard let a = shape(0), let b = shape(1), a.count >= 1, b.count >= 1 else { return (0, 0) }
            let n = b.count >= 2 ? b[b.count - 1] : 1, bBatch = b.count > 2 ? b.dropLast(2).reduce(1, *) : 1
            return (0, 2 * Double(max(a.reduce(1, *), bBatch * (b.count >= 2 ? b[b.count - 2] : b[0]))) * Double(n))
        case "ConvTranspose":
            guard let x = shape(0), let w = shape(1), x.count == 4 else { return (0, 0) }
            return (0, 2 * Double(w.reduce(1, *)) * Double(x[2] * x[3]))
        case "LRN":
            guard let x = shape(0) else { return (0, 0) }
            return (Double(x.reduce(1, *)) * Double(2 * node.int("size", 1) + 4), 0)
        default: return (0, 0)
        }
    }

    mutating func lowerBinary(_ node: Node, _ perImage: [Int]) throws -> Bool {
        guard node.inputs.count == 2 else { return false }
        let op: BinaryOp = switch node.opType { case "Add": .add; case "Sub": .sub; case "Mul": .mul; default: .div }
        let a = valueOf[node.inputs[0]], b = valueOf[node.inputs[1]]
        func emit(_ lhs: Int, _ kind: BinaryKind, swapped: Bool) -> Bool {
            let out = newValue(node.outputs[0], perImage)
            steps.append(.binary(op, lhs: lhs, kind: kind, swapped: swapped, output: out))
            return true
        }
        if let a, let b {
            let sa = slots[a].perImage, sb = slots[b].perImage
            if sa == sb { return emit(a, .same(b), swapped: false) }
            func planeScalar(_ big: [Int], _ small: [Int]) -> Bool {
                big.count >= 2 && small.count == big.count && small[0] == big[0] && small.dropFirst().allSatisfy { $0 == 1 }
            }
            if planeScalar(sa, sb), sa == perImage { return emit(a, .planeScalar(b), swapped: false) }
            if planeScalar(sb, sa), sb == perImage { return emit(b, .planeScalar(a), swapped: true) }
            return false
        }
        let (lhs, constName, swapped) = a != nil ? (a!, node.inputs[1], false) : (b!, node.inputs[0], true)
        guard let c = constants[constName], slots[lhs].perImage == perImage else { return false }
        if c.count == 1 { return emit(lhs, .channelConstant([c.data[0]]), swapped: swapped) }
        // One value per channel: shape (1,) C, 1, ..., 1 aligned with the per-image shape.
        let full = [1] + perImage
        var dims = c.shape
        while dims.first == 1 && dims.count > full.count - 1 { dims.removeFirst() }
        if perImage.count >= 2 {
            let padded = [Int](repeating: 1, count: max(0, perImage.count - dims.count)) + dims
            if padded.count == perImage.count, padded[0] == perImage[0], padded.dropFirst().allSatisfy({ $0 == 1 }) {
                return emit(lhs, .channelConstant(c.data), swapped: swapped)
            }
            // One value per position of the last axis (a bias on tokens or NHWC maps).
            if padded.count == perImage.count, padded.last == perImage.last, padded.dropLast().allSatisfy({ $0 == 1 }) {
                return emit(lhs, .lastAxisConstant(c.data), swapped: swapped)
            }
        } else if dims == perImage || (dims.count == 1 && dims[0] == perImage[0]) {
            return emit(lhs, .channelConstant(c.data), swapped: swapped)
        }
        return false
    }

    /// Drops the kernel rows and columns of a dilated conv that read only padding for every
    /// output (the dilation reaches past the map: DeepLabV3's rate-36 ASPP branch on a 32 x 32 map
    /// is a 1x1 conv), keeping the output geometry; returns the window and the weights
    /// `[cout, cin / groups, kh, kw]` it runs with.
    static func pruneTaps(_ g: Window2D, _ w: Tensor) -> (Window2D, [Float]) {
        // Only dilated kernels: an undilated one reads padding only on maps smaller than its padding.
        guard g.dh > 1 || g.dw > 1 else { return (g, w.data) }
        func valid(_ k: Int, _ s: Int, _ d: Int, _ p: Int, _ n: Int, _ o: Int) -> [Int] {
            // tap t reads row o * s - p + t * d for o in 0..<o: inside [0, n) for some o?
            (0..<k).filter { t in (0..<o).contains { let i = $0 * s - p + t * d; return i >= 0 && i < n } }
        }
        let rows = valid(g.kh, g.sh, g.dh, g.pt, g.h, g.oh), cols = valid(g.kw, g.sw, g.dw, g.pl, g.w, g.ow)
        guard let r0 = rows.first, let r1 = rows.last, let c0 = cols.first, let c1 = cols.last,
              r1 - r0 + 1 < g.kh || c1 - c0 + 1 < g.kw else { return (g, w.data) }
        var p = g
        p.kh = r1 - r0 + 1; p.kw = c1 - c0 + 1
        p.pt = g.pt - r0 * g.dh; p.pb = g.pb - (g.kh - 1 - r1) * g.dh
        p.pl = g.pl - c0 * g.dw; p.pr = g.pr - (g.kw - 1 - c1) * g.dw
        if p.kh == 1 { p.dh = 1 }
        if p.kw == 1 { p.dw = 1 }
        guard p.pt >= 0, p.pb >= 0, p.pl >= 0, p.pr >= 0 else { return (g, w.data) }
        let cout = w.shape[0], cg = w.shape[1]
        var out = [Float]()
        out.reserveCapacity(cout * cg * p.kh * p.kw)
        for o in 0..<(cout * cg) {
            for ky in r0...r1 { for kx in c0...c1 { out.append(w.data[(o * g.kh + ky) * g.kw + kx]) } }
        }
        return (p, out)
    }

    /// A node touching values off the batch-first layout, in a graph run image by image: at batch 1
    /// every value is stored row-major whole, so Transpose, Softmax over the last axis, MatMul of
    /// two values with the same leading axes (or by a constant) and the reshapes run on the engine's
    /// own steps instead of the reference path. Returns false to leave the node to it.
    mutating func lowerAtBatchOne(_ node: Node, perImage: [[Int]], batchless: [Bool]) -> Bool {
        func whole(_ v: Int) -> [Int] { slots[v].fullShape(1) }
        func value(_ i: Int) -> Int? { node.input(i).flatMap { valueOf[$0] } }
        func output(_ shape: [Int]) -> Int? {
            guard node.outputs.count == 1, !node.outputs[0].isEmpty, perImage.count == 1, batchless.count == 1,
                  (batchless[0] ? perImage[0] : [1] + perImage[0]) == shape else { return nil }
            let v = newValue(node.outputs[0], perImage[0])
            slots[v].batchless = batchless[0]
            return v
        }
        if ["Add", "Sub", "Mul", "Div"].contains(node.opType), node.inputs.count == 2 {
            func operand(_ i: Int) -> (Operand, [Int])? {
                if let v = value(i) { return (.value(v), whole(v)) }
                if let name = node.input(i), let t = constants[name] { return (.constant(t), t.shape) }
                return nil
            }
            guard let (a, ash) = operand(0), let (b, bsh) = operand(1), value(0) != nil || value(1) != nil,
                  let shape = try? Reference.broadcastShape(ash, bsh, node), let out = output(shape) else { return false }
            func aligned(_ s: [Int]) -> [Int] { [Int](repeating: 1, count: shape.count - s.count) + s }
            let op: BinaryOp = ["Add": .add, "Sub": .sub, "Mul": .mul, "Div": .div][node.opType]!
            steps.append(.wholeBinary(op, lhs: a, lhsShape: aligned(ash), rhs: b, rhsShape: aligned(bsh), shape: shape, output: out))
            return true
        }
        if node.opType == "Concat" {
            let vs = node.inputs.compactMap { valueOf[$0] }
            guard vs.count == node.inputs.count, let r = vs.first.map({ whole($0).count }), r > 0 else { return false }
            var axis = node.int("axis", 0)
            if axis < 0 { axis += r }
            let shapes = vs.map(whole)
            guard axis >= 0, axis < r, shapes.allSatisfy({ $0.count == r && Array($0[..<axis]) == Array(shapes[0][..<axis])
                                                          && Array($0[(axis + 1)...]) == Array(shapes[0][(axis + 1)...]) }) else { return false }
            var shape = shapes[0]
            shape[axis] = shapes.reduce(0) { $0 + $1[axis] }
            guard let out = output(shape) else { return false }
            steps.append(.wholeConcat(outer: shape[..<axis].reduce(1, *), runs: shapes.map { $0[axis...].reduce(1, *) },
                                      inputs: vs, output: out))
            return true
        }
        guard let x = value(0) else { return false }
        let xs = whole(x)
        switch node.opType {
        case "Transpose":
            let perm = node.ints("perm") ?? Array((0..<xs.count).reversed())
            guard perm.count == xs.count, Set(perm) == Set(xs.indices),
                  let out = output(perm.map { xs[$0] }) else { return false }
            steps.append(.wholeTranspose(perm: perm, shape: xs, input: x, output: out))
            return true
        case "Softmax":
            let axis = node.int("axis", graph.opset >= 13 ? -1 : 1)
            guard graph.opset >= 13, axis == -1 || axis == xs.count - 1, let n = xs.last, n > 0,
                  let out = output(xs) else { return false }
            steps.append(.rowSoftmax(n: n, input: x, output: out))
            return true
        case "MatMul" where value(1) == nil, "Gemm" where value(1) == nil && node.int("transA", 0) == 0:
            // By a constant: one product over all rows of the last axis (Gemm: rank 2, its bias).
            guard let name = node.input(1), let b = constants[name], b.rank == 2, let k = xs.last, k > 0,
                  node.opType == "MatMul" || xs.count == 2 else { return false }
            let transB = node.opType == "Gemm" && node.int("transB", 0) != 0
            let n = transB ? b.shape[0] : b.shape[1], rows = xs.reduce(1, *) / k
            guard (transB ? b.shape[1] : b.shape[0]) == k else { return false }
            var bias = [Float](repeating: 0, count: n)
            if node.opType == "Gemm", let cname = node.input(2) {
                guard let c = constants[cname], c.count == 1 || (c.shape.last == n && c.count == n) else { return false }
                let beta = node.float("beta", 1)
                for j in 0..<n { bias[j] = beta * c.data[c.count == 1 ? 0 : j] }
            }
            guard let out = output(Array(xs.dropLast()) + [n]) else { return false }
            let alpha = node.opType == "Gemm" ? node.float("alpha", 1) : 1
            var w = [Float](repeating: 0, count: n * k)
            for j in 0..<n { for p in 0..<k { w[j * k + p] = alpha * (transB ? b.data[j * k + p] : b.data[p * n + j]) } }
            flops += 2 * Double(n * k * rows)
            steps.append(.gemm(GemmStep(weights: w, bias: bias, n: n, k: k, rows: rows, input: x, output: out)))
            return true
        case "MatMul":
            guard let y = value(1), xs.count >= 3 else { return false }
            let ys = whole(y)
            guard ys.count == xs.count, xs.dropLast(2) == ys.dropLast(2), xs[xs.count - 1] == ys[ys.count - 2] else { return false }
            let m = xs[xs.count - 2], k = xs[xs.count - 1], n = ys[ys.count - 1]
            let count = xs.dropLast(2).reduce(1, *) // at batch 1: the matrices of the one pass
            guard let out = output(Array(xs.dropLast(2)) + [m, n]) else { return false }
            flops += 2 * Double(count * m * k * n)
            steps.append(.batchedMatMul(count: count, m: m, k: k, n: n, lhs: x, rhs: y, output: out))
            return true
        case "Slice" where graph.opset >= 10:
            let cs = node.inputs.map { $0.isEmpty ? nil : constants[$0] }
            guard (1..<node.inputs.count).allSatisfy({ node.inputs[$0].isEmpty || cs[$0] != nil }),
                  let (start, step, shape) = try? Reference.sliceGeometry(node, cs, xs),
                  shape.allSatisfy({ $0 > 0 }), let out = output(shape) else { return false }
            steps.append(.wholeSlice(start: start, step: step, inShape: xs, shape: shape, input: x, output: out))
            return true
        case "Reshape", "Squeeze", "Unsqueeze", "Flatten":
            guard let shape = perImage.first, shape.reduce(1, *) == xs.reduce(1, *),
                  let out = output(batchless.first == true ? shape : [1] + shape) else { return false }
            steps.append(.relayout(input: x, output: out))
            return true
        default:
            return false
        }
    }

    /// Per-image output shapes, by inferring full shapes at two batch sizes, and which outputs are
    /// batchless: in a graph fixed to batch 1, an output whose first axis is not that batch is kept
    /// whole (see ``Slot/batchless``).
    func inferPerImage(_ node: Node) throws -> (shapes: [[Int]], batchless: [Bool]) {
        func shapes(_ batch: Int) throws -> [[Int]] {
            let consts: [Tensor?] = node.inputs.map { name in
                guard let t = constants[name] else { return nil }
                guard t.data.contains(Self.batchSentinel), fixedBatch == nil else { return t }
                return Tensor(shape: t.shape, data: t.data.map { $0 == Self.batchSentinel ? Float(batch) : $0 })
            }
            let ins: [[Int]] = node.inputs.map { name in
                if let v = valueOf[name] { return slots[v].fullShape(batch) }
                return constants[name]?.shape ?? []
            }
            return try Reference.outputShapes(node, ins, consts, opset: graph.opset)
        }
        if let fixedBatch {
            let full = try shapes(fixedBatch)
            if fixedBatch == 1 {
                return (full.map { $0.first == 1 ? Array($0.dropFirst()) : $0 }, full.map { $0.first != 1 })
            }
            return (try full.map { a in
                guard a.first == fixedBatch else {
                    throw node.error("the output \(a) does not keep the graph's batch \(fixedBatch) as its first dimension (unsupported)")
                }
                return Array(a.dropFirst())
            }, full.map { _ in false })
        }
        let s2 = try shapes(2), s3 = try shapes(3)
        let perImage = try zip(s2, s3).map { a, b in
            guard a.first == 2, b.first == 3, a.dropFirst() == b.dropFirst() else { throw node.error(Self.batchNotFirst) }
            return Array(a.dropFirst())
        }
        return (perImage, perImage.map { _ in false })
    }

    // MARK: fusion

    mutating func fuse(protected: Set<Int>) {
        var changed = true
        while changed {
            changed = false
            var consumers: [Int: [Int]] = [:]
            for (i, s) in steps.enumerated() { if let s { for v in s.inputs { consumers[v, default: []].append(i) } } }
            func sole(_ v: Int) -> Int? {
                guard !protected.contains(v), let c = consumers[v], c.count == 1 else { return nil }
                return c[0]
            }
            for i in steps.indices {
                guard let step = steps[i] else { continue }
                switch step {
                case var .conv(c):
                    // SiLU: x * sigmoid(x)
                    if c.activation == .none, !protected.contains(c.output), let cs = consumers[c.output], cs.count == 2,
                       let (sig, mul) = siluPair(cs, c.output, consumers, protected) {
                        if case let .binary(_, _, _, _, out)? = steps[mul] {
                            c.activation = .silu; c.output = out
                            steps[i] = nil; steps[sig] = nil; steps[mul] = .conv(c)
                            changed = true
                        }
                    } else if let j = sole(c.output), let next = steps[j] {
                        switch next {
                        case let .channelAffine(scale, shift, -Float.infinity, Float.infinity, _, out) where c.activation == .none && c.residual == nil:
                            foldAffine(&c, scale, shift); c.output = out
                            steps[i] = .conv(c); steps[j] = nil; changed = true
                        case let .binary(op, lhs, .channelConstant(k), false, out)
                            where c.activation == .none && c.residual == nil && lhs == c.output && (op == .mul || op == .add || op == .sub || op == .div):
                            let (scale, shift) = Self.affine(op, k, channels: c.cout)
                            foldAffine(&c, scale, shift)
                            c.output = out; steps[i] = .conv(c); steps[j] = nil; changed = true
                        case let .activation(act, _, out) where c.activation == .none:
                            c.activation = act; c.output = out
                            steps[i] = .conv(c); steps[j] = nil; changed = true
                        case let .binary(.add, lhs, .same(rhs), _, out) where c.activation == .none && c.residual == nil && c.kind != .depthwise:
                            let other = lhs == c.output ? rhs : lhs
                            if other != c.output {
                                c.residual = other; c.output = out
                                steps[i] = nil; steps[j] = .conv(c); changed = true
                            }
                        default: break
                        }
                    }
                case let .relayout(x, a) where slots[a].perImage.count == 4 && slots[x].perImage.count == 3:
                    // Channel shuffle: Reshape [N, g, C/g, H, W] -> Transpose (0, 2, 1, 3, 4) -> Reshape back.
                    if let j = sole(a), case let .transpose(perm, _, tOut)? = steps[j],
                       perm == [1, 0, 2, 3], let k = sole(tOut),
                       case let .relayout(_, back)? = steps[k], slots[back].perImage == slots[x].perImage, slots[x].channelMajor,
                       !slots[x].batchless, !slots[back].batchless {
                        let groups = slots[a].perImage[0], per = slots[a].perImage[1]
                        let sources = (0..<(groups * per)).map { ($0 % groups) * per + $0 / groups }
                        steps[i] = nil; steps[j] = nil
                        steps[k] = .channels(sources: sources, input: x, output: back)
                        changed = true
                    }
                case let .relayout(x, a):
                    // torch's GroupNorm: Reshape [N, G, -1] -> InstanceNormalization -> Reshape back.
                    if let j = sole(a), case let .groupNorm(g)? = steps[j], g.activation == .none,
                       let k = sole(g.output), case let .relayout(_, back)? = steps[k],
                       slots[back].perImage == slots[x].perImage, slots[x].channelMajor, slots[a].perImage.count == 2,
                       slots[x].channels % g.groups == 0, slots[a].channels == g.groups {
                        let per = slots[x].channels / g.groups
                        let scale = (0..<slots[x].channels).map { g.scale[$0 / per] }
                        let shift = (0..<slots[x].channels).map { g.shift[$0 / per] }
                        steps[i] = nil; steps[j] = nil
                        steps[k] = .groupNorm(GroupNormStep(groups: g.groups, epsilon: g.epsilon, scale: scale, shift: shift,
                                                            input: x, output: back))
                        changed = true
                    }
                case let .channelAffine(scale, shift, -Float.infinity, Float.infinity, x, out):
                    // BN + ReLU before a conv whose input is also used elsewhere (DenseNet's
                    // pre-activation on the concatenation): one pass, clamped.
                    if let j = sole(out), case let .activation(act, _, out2)? = steps[j],
                       let (lo, hi) = ConvKernels.clampBounds(act) {
                        steps[i] = .channelAffine(scale: scale, shift: shift, lo: lo, hi: hi, input: x, output: out2)
                        steps[j] = nil; changed = true
                    }
                case var .groupNorm(g):
                    if let j = sole(g.output), let next = steps[j] {
                        switch next {
                        case let .binary(op, lhs, .channelConstant(k), false, out) where g.activation == .none && lhs == g.output:
                            let (scale, shift) = Self.affine(op, k, channels: g.scale.count)
                            for c in g.scale.indices { g.scale[c] *= scale[c]; g.shift[c] = g.shift[c] * scale[c] + shift[c] }
                            g.output = out; steps[i] = .groupNorm(g); steps[j] = nil; changed = true
                        case let .activation(act, _, out) where g.activation == .none:
                            g.activation = act; g.output = out
                            steps[i] = .groupNorm(g); steps[j] = nil; changed = true
                        default: break
                        }
                    }
                case let .activation(.erf, d, e):
                    if let chain = geluChain(erfStep: i, d, e, consumers, protected) {
                        for k in chain.remove { steps[k] = nil }
                        steps[chain.last] = .activation(.gelu, input: chain.x, output: chain.out)
                        changed = true
                    }
                case var .gemm(g):
                    if g.activation == .none, let j = sole(g.output), case let .activation(act, _, out)? = steps[j] {
                        g.activation = act; g.output = out
                        steps[i] = .gemm(g); steps[j] = nil; changed = true
                    } else if g.activation == .none, let j = sole(g.output),
                              case let .binary(op, lhs, .lastAxisConstant(k), swapped, out)? = steps[j],
                              lhs == g.output, op == .add || (op == .sub && !swapped), k.count == g.n {
                        // The Linear layer's bias Add folded into the product.
                        for c in 0..<g.n { g.bias[c] += op == .add ? k[c] : -k[c] }
                        g.output = out
                        steps[i] = .gemm(g); steps[j] = nil; changed = true
                    }
                default: break
                }
                if changed { break }
            }
        }
    }

    /// GELU as torch exports it, around the Erf step `erfStep` (d -> e): d = x / sqrt 2,
    /// e1 = e + 1, g0 = x * e1 (either order), out = g0 * 0.5. Returns the steps to drop, the one
    /// to replace, x and the chain's output.
    func geluChain(erfStep: Int, _ d: Int, _ e: Int, _ consumers: [Int: [Int]], _ protected: Set<Int>)
        -> (remove: [Int], last: Int, x: Int, out: Int)? {
        func scalar(_ kind: BinaryKind) -> Float? {
            if case let .channelConstant(k) = kind, k.count == 1 { return k[0] }
            return nil
        }
        func only(_ v: Int) -> Int? {
            guard !protected.contains(v), let c = consumers[v], c.count == 1 else { return nil }
            return c[0]
        }
        guard let div = steps.firstIndex(where: { $0?.outputs == [d] }),
              case let .binary(.div, x, dk, false, _)? = steps[div], let s = scalar(dk), abs(s - 1.4142135) < 1e-5,
              only(d) == erfStep, let add = only(e),
              case let .binary(.add, eIn, ak, _, e1)? = steps[add], eIn == e, scalar(ak) == 1,
              let mul = only(e1), case let .binary(.mul, ml, .same(mr), _, g0)? = steps[mul], Set([ml, mr]) == Set([x, e1]),
              let half = only(g0), case let .binary(.mul, hIn, hk, _, out)? = steps[half], hIn == g0, scalar(hk) == 0.5
        else { return nil }
        return ([div, erfStep, add, mul], half, x, out)
    }

    func siluPair(_ cs: [Int], _ v: Int, _ consumers: [Int: [Int]], _ protected: Set<Int>) -> (Int, Int)? {
        for (sig, mul) in [(cs[0], cs[1]), (cs[1], cs[0])] {
            guard case let .activation(.sigmoid, _, sOut)? = steps[sig], !protected.contains(sOut),
                  consumers[sOut] == [mul],
                  case let .binary(.mul, lhs, .same(rhs), _, _)? = steps[mul],
                  Set([lhs, rhs]) == Set([v, sOut]) else { continue }
            return (sig, mul)
        }
        return nil
    }

    /// `y op k` (k one value per channel, or one in all) as `y * scale + shift` per channel.
    static func affine(_ op: BinaryOp, _ k: [Float], channels: Int) -> (scale: [Float], shift: [Float]) {
        let values = (0..<channels).map { k[k.count == 1 ? 0 : $0] }
        let ones = [Float](repeating: 1, count: channels), zeros = [Float](repeating: 0, count: channels)
        switch op {
        case .mul: return (values, zeros)
        case .div: return (values.map { 1 / $0 }, zeros)
        case .add: return (ones, values)
        case .sub: return (ones, values.map { -$0 })
        }
    }

    func foldAffine(_ c: inout ConvStep, _ scale: [Float], _ shift: [Float]) {
        let per = c.weights.count / c.cout
        for o in 0..<c.cout {
            for j in 0..<per { c.weights[o * per + j] *= scale[o] }
            c.bias[o] = c.bias[o] * scale[o] + shift[o]
        }
    }

    // MARK: arena planning

    /// Assigns arena offsets (in per-image floats) so that values whose lifetimes overlap
    /// do not share memory. Returns the arena size in per-image floats.
    static func plan(slots: [Slot], steps: [Step], input: Int, pinned: Set<Int>) -> (Int, [Slot]) {
        var slots = slots
        var defined = [Int](repeating: -1, count: slots.count)
        var lastUse = [Int](repeating: -1, count: slots.count)
        defined[input] = -1
        lastUse[input] = -1
        for (i, s) in steps.enumerated() {
            for v in s.inputs { lastUse[v] = max(lastUse[v], i) }
            for v in s.outputs where defined[v] < 0 { defined[v] = i; lastUse[v] = max(lastUse[v], i) }
        }
        for v in pinned { lastUse[v] = steps.count }
        // values that are live: input first, then in definition order.
        var order = [input]
        for s in steps { for v in s.outputs where !order.contains(v) { order.append(v) } }
        var live: [(offset: Int, size: Int, end: Int)] = []
        var total = 0
        for v in order {
            let start = v == input ? -1 : defined[v]
            live.removeAll { $0.end < start }
            live.sort { $0.offset < $1.offset }
            let size = (slots[v].count + 15) / 16 * 16
            var offset = 0
            for block in live {
                if block.offset - offset >= size { break }
                offset = max(offset, block.offset + block.size)
            }
            slots[v].offset = offset
            live.append((offset, size, max(lastUse[v], start)))
            total = max(total, offset + size)
        }
        return (total, slots)
    }
}
