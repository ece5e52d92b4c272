/// A fused activation applied by the producing kernel's epilogue.
enum Activation: Sendable, Equatable {
    case none, relu, sigmoid, hardSwish, silu, mish
    /// The error function (GELU's `x * (1 + erf(x / sqrt 2)) / 2` as torch exports it).
    case erf
    /// `x * (1 + erf(x / sqrt 2)) / 2` (the Div, Erf, Add, Mul, Mul chain torch exports, fused).
    case gelu
    case clip(Float, Float)
    case leaky(Float)
    case hardSigmoid(Float, Float)
    /// `x ** e` for a constant exponent (LocalResponseNorm as torch writes it out: `x ** 2`, `d ** -beta`).
    case pow(Float)
}

/// A batched activation tensor in a worker's arena. Its logical shape is
/// `[nb] + perImage`. Rank >= 3 tensors (`perImage.count >= 2`) are stored channel-major,
/// `[C, nb, S]` with `S` the per-channel spatial size, so a convolution over a whole
/// micro-batch is one GEMM with `nb * S` columns; rank-2 tensors are stored `[nb, F]`.
struct Slot: Sendable {
    var perImage: [Int]
    var offset = 0
    /// The ONNX tensor it holds (calibration ranges are keyed by it).
    var name = ""
    /// In a graph run image by image (fixed batch 1): a value whose first axis is not the batch
    /// (attention's `[S, N, E]`); `perImage` is then its whole shape. Reference steps and the
    /// whole-tensor steps (stored row-major at batch 1) touch it.
    var batchless = false
    /// The shape the value has in a micro-batch of `nb` images.
    func fullShape(_ nb: Int) -> [Int] { batchless ? perImage : [nb] + perImage }
    var channelMajor: Bool { perImage.count >= 2 }
    var count: Int { perImage.reduce(1, *) }
    var channels: Int { channelMajor ? perImage[0] : count }
    var spatial: Int { channelMajor ? count / max(perImage[0], 1) : 1 }
}

enum Operand: Sendable {
    case value(Int)
    case constant(Tensor)
}

enum BinaryOp: Sendable { case add, sub, mul, div }

/// How the right operand of a binary step broadcasts against the left (batched) one.
enum BinaryKind: Sendable {
    /// Both batched with the same per-image shape (same layout).
    case same(Int)
    /// Right is batched with per-image shape [C, 1, ...]: one scalar per (channel, image) plane.
    case planeScalar(Int)
    /// Right is a constant with one value per channel (or one value in total).
    case channelConstant([Float])
    /// Right is a constant over the last axis of a channel-major value (a Linear layer's bias on
    /// tokens or NHWC maps): rows of that length are contiguous in the slot.
    case lastAxisConstant([Float])
}

struct ConvStep: Sendable {
    enum Kind: Sendable { case gemm, pointwise, depthwise, winograd, winograd43, direct }
    var kind: Kind
    var window: Window2D
    var cin: Int, cout: Int, groups: Int
    /// `[cout, cin / groups * kh * kw]` (Winograd F(2,3): `[16, cout, cin]`, F(4,3): `[36, cout, cin]`;
    /// direct: packed by `tessera_engine_conv_pack`).
    var weights: [Float]
    var bias: [Float]
    /// Winograd layers: the weights also packed for the direct kernel, used when a
    /// micro-batch has too few tiles for Winograd's GEMMs (see `Winograd.worthIt`).
    var directWeights: [Float]? = nil
    /// INT8 weights: the layer runs on the int8 kernel (``Quantized``), the fp32 weights unused.
    var q8: Q8Layer? = nil
    /// INT8 kept between layers: where the input codes already are, where the output codes go.
    var q8Link = Q8Link()
    /// BF16 weights: the layer runs on the bf16 kernel (``BF16``), the fp32 weights unused.
    var bf16: BF16Layer? = nil
    var activation: Activation = .none
    var residual: Int?
    var input: Int, output: Int
    /// Direct, dilated, AVX-512: the weights packed tap-major (`[cout][kh * kw][cin]`) for
    /// `tessera_engine_conv_live_taps`, which skips the taps a chunk of outputs reads only padding with.
    var tapMajor = false
    var k: Int { cin / groups * window.kh * window.kw }
}

struct PoolStep: Sendable {
    var isMax: Bool
    var window: Window2D
    /// Per-row / per-column window element counts for average pooling (divisor = product).
    var rowCount: [Float], colCount: [Float]
    /// A max pool between two chained int8 layers: it pools the codes of byte buffer
    /// `q8Link.input` (laid out as `q8Link.inputLayout`) into `q8Link.output`.
    var q8Link = Q8Link()
    var input: Int, output: Int
}

struct GemmStep: Sendable {
    /// `[n, k]`.
    var weights: [Float]
    var bias: [Float]
    var n: Int, k: Int
    /// Rows of `k` per image: 1 for a `[nb, k]` value; a MatMul by a constant over the last
    /// axis of a channel-major value (tokens `[T, E]`, NHWC maps `[H, W, C]`) multiplies all
    /// `nb * rows` contiguous rows of its slot at once, and its output keeps that row order.
    var rows = 1
    var q8: Q8Layer? = nil
    var bf16: BF16Layer? = nil
    /// FP32 at the AVX-512 level: the weights as 48-column panels of W^T
    /// (`tessera_engine_gemm_pack_panels`) for the engine's own tile, and `weights` emptied.
    var panels: [Float] = []
    var activation: Activation = .none
    var input: Int, output: Int
}

/// Group normalisation on a channel-major `[C, nb, S]` slot: for each image and group of
/// `C / groups` consecutive channels, `(x - mean) / sqrt(var + eps)`, then `* scale[c] + shift[c]`
/// and the activation. Instance normalisation is `groups == C`; GroupNorm as torch exports it
/// (Reshape to `[N, G, -1]`, InstanceNormalization, Reshape back, Mul, Add) is lowered to one step.
struct GroupNormStep: Sendable {
    var groups: Int
    var epsilon: Float
    var scale: [Float], shift: [Float]
    var activation: Activation = .none
    var input: Int, output: Int
}

/// Spatial resize of a channel-major `[C, nb, H, W]` slot: every output row (column) reads input
/// rows (columns) `i0` and `i1` weighted `1 - w` and `w` (nearest: `w == 0`).
struct ResizeStep: Sendable {
    struct Tap: Sendable { var i0: Int, i1: Int, w: Float }
    /// Taps of one axis as the C kernel reads them: indexes `i0`, `i1`, weight `w`.
    struct Axis: Sendable {
        var i0: [Int32], i1: [Int32], w: [Float]
        init(_ taps: [Tap]) { i0 = taps.map { Int32($0.i0) }; i1 = taps.map { Int32($0.i1) }; w = taps.map(\.w) }
    }
    var ih: Int, iw: Int, oh: Int, ow: Int
    var rows: Axis, cols: Axis
    var input: Int, output: Int
    init(ih: Int, iw: Int, oh: Int, ow: Int, rows: [Tap], cols: [Tap], input: Int, output: Int) {
        (self.ih, self.iw, self.oh, self.ow) = (ih, iw, oh, ow)
        (self.rows, self.cols) = (Axis(rows), Axis(cols))
        (self.input, self.output) = (input, output)
    }
}

enum Step: Sendable {
    /// Output channel k is input channel `sources[k]` (channel-major: one plane copy each):
    /// channel splits and ShuffleNet's channel shuffle.
    case channels(sources: [Int], input: Int, output: Int)
    case conv(ConvStep)
    case groupNorm(GroupNormStep)
    case resize(ResizeStep)
    case pool(PoolStep)
    case globalPool(isMax: Bool, input: Int, output: Int)
    case activation(Activation, input: Int, output: Int)
    case channelAffine(scale: [Float], shift: [Float], lo: Float = -.infinity, hi: Float = .infinity, input: Int, output: Int)
    case binary(BinaryOp, lhs: Int, kind: BinaryKind, swapped: Bool, output: Int)
    case concat(inputs: [Int], output: Int)
    case relayout(input: Int, output: Int)
    /// A Transpose that keeps the batch first, between channel-major values (ConvNeXt's NCHW <->
    /// NHWC permutes): `perm` over the per-image axes.
    case transpose(perm: [Int], input: Int, output: Int)
    /// LayerNormalization over the last axis of a channel-major value (rows of `scale.count`
    /// contiguous in the slot): `(x - mean) / sqrt(var + epsilon) * scale + shift` per row.
    case layerNorm(epsilon: Float, scale: [Float], shift: [Float], input: Int, output: Int)
    case gemm(GemmStep)
    /// Constant-value Pad of per-image axes (the batch unpadded) between channel-major values:
    /// `pads[a]` values before axis `a` (all >= 0), the rest `value`.
    case pad(before: [Int], value: Float, input: Int, output: Int)
    /// Transpose of whole row-major tensors (`shape` the input's, the batch axis included where it
    /// has one): graphs run image by image (fixed batch 1), where every value is stored so.
    /// Softmax over rows of the last axis (contiguous in every layout); MatMul of two values with
    /// the same leading axes: `count` products of `m x k` by `k x n` per image, each matrix
    /// contiguous (channel-major values of rank >= 3, or whole tensors at batch 1): attention.
    case wholeTranspose(perm: [Int], shape: [Int], input: Int, output: Int)
    case rowSoftmax(n: Int, input: Int, output: Int)
    case batchedMatMul(count: Int, m: Int, k: Int, n: Int, lhs: Int, rhs: Int, output: Int)
    /// At batch 1: a broadcasting binary op of whole row-major tensors (values or constants,
    /// shapes aligned to the output's rank), and a strided Slice (`start`, `step` per axis).
    case wholeBinary(BinaryOp, lhs: Operand, lhsShape: [Int], rhs: Operand, rhsShape: [Int], shape: [Int], output: Int)
    case wholeSlice(start: [Int], step: [Int], inShape: [Int], shape: [Int], input: Int, output: Int)
    /// At batch 1: Concat of whole row-major tensors; `runs[i]` floats of input i per index before `axis`.
    case wholeConcat(outer: Int, runs: [Int], inputs: [Int], output: Int)
    case fallback(Node, inputs: [Operand?], outputs: [Int], opset: Int)

    var inputs: [Int] {
        switch self {
        case let .conv(c): [c.input] + (c.residual.map { [$0] } ?? [])
        case let .channels(_, i, _): [i]
        case let .groupNorm(g): [g.input]
        case let .resize(r): [r.input]
        case let .pool(p): [p.input]
        case let .globalPool(_, i, _), let .activation(_, i, _), let .channelAffine(_, _, _, _, i, _),
             let .relayout(i, _), let .transpose(_, i, _), let .layerNorm(_, _, _, i, _),
             let .pad(_, _, i, _), let .wholeTranspose(_, _, i, _), let .rowSoftmax(_, i, _): [i]
        case let .batchedMatMul(_, _, _, _, l, r, _): [l, r]
        case let .wholeSlice(_, _, _, _, i, _): [i]
        case let .wholeConcat(_, _, ins, _): ins
        case let .wholeBinary(_, l, _, r, _, _, _): [l, r].compactMap { if case let .value(v) = $0 { v } else { nil } }
        case let .binary(_, lhs, kind, _, _):
            switch kind {
            case let .same(r), let .planeScalar(r): [lhs, r]
            case .channelConstant, .lastAxisConstant: [lhs]
            }
        case let .concat(inputs, _): inputs
        case let .gemm(g): [g.input]
        case let .fallback(_, inputs, _, _): inputs.compactMap { if case let .value(v)? = $0 { v } else { nil } }
        }
    }

    var outputs: [Int] {
        switch self {
        case let .conv(c): [c.output]
        case let .channels(_, _, o): [o]
        case let .groupNorm(g): [g.output]
        case let .resize(r): [r.output]
        case let .pool(p): [p.output]
        case let .globalPool(_, _, o), let .activation(_, _, o), let .channelAffine(_, _, _, _, _, o),
             let .binary(_, _, _, _, o), let .concat(_, o), let .relayout(_, o),
             let .transpose(_, _, o), let .layerNorm(_, _, _, _, o), let .pad(_, _, _, o),
             let .wholeTranspose(_, _, _, o), let .rowSoftmax(_, _, o), let .batchedMatMul(_, _, _, _, _, _, o),
             let .wholeBinary(_, _, _, _, _, _, o), let .wholeSlice(_, _, _, _, _, o),
             let .wholeConcat(_, _, _, o): [o]
        case let .gemm(g): [g.output]
        case let .fallback(_, _, outputs, _): outputs
        }
    }
}

/// The compiled, immutable execution plan of a model.
struct Program: Sendable {
    var slots: [Slot]
    var steps: [Step]
    var inputValue: Int
    var outputValues: [Int]
    var embeddingValue: Int?
    /// A pool step that is the input's only consumer: it reads the NCHW batch directly
    /// (no conversion to channel-major).
    var directInputStep: Int? = nil
    /// Arena size in per-image floats (multiply by the micro-batch size).
    var arenaUnits: Int
    /// im2col scratch floats needed per worker for a micro-batch of `n`: `scratchPerColumn * columns`.
    var maxScratchK: Int
    var flopsPerImage: Double
    /// The settings it was compiled with (the runtime knobs are read from here too).
    var options: EngineOptions
    /// The `TESSERA_ISA_*` level every kernel of this program runs at.
    let isa: Int32
    /// The batch size the graph is fixed to (micro-batches are exactly this size), or nil.
    var fixedBatch: Int? = nil
    /// Load-time warnings, e.g. nodes left on the naive reference interpreter.
    var warnings: [String] = []

    init(slots: [Slot], steps: [Step], inputValue: Int, outputValues: [Int], embeddingValue: Int?,
         arenaUnits: Int, maxScratchK: Int, flopsPerImage: Double, options: EngineOptions) {
        self.slots = slots
        self.steps = steps
        self.inputValue = inputValue
        self.outputValues = outputValues
        self.embeddingValue = embeddingValue
        self.arenaUnits = arenaUnits
        self.maxScratchK = maxScratchK
        self.flopsPerImage = flopsPerImage
        self.options = options
        self.isa = Int32(options.effectiveISA.rawValue)
    }
}

extension Step {
    /// Short description for profiles, e.g. `conv.winograd 64->64 3x3/1 56x56 relu +res`.
    func label(_ program: Program, nb: Int = 1) -> String {
        switch self {
        case let .conv(c):
            let g = c.window
            if c.bf16 != nil {
                return "conv.bf16 \(c.cin)->\(c.cout) \(g.kh)x\(g.kw)/\(g.sh) \(g.oh)x\(g.ow) \(c.activation)\(c.residual == nil ? "" : " +res")"
            }
            if c.q8 != nil {
                let link = (c.q8Link.input == nil ? "" : " <u8") + (c.q8Link.output == nil ? "" : c.q8Link.dual ? " >f32+u8" : " >u8")
                return "conv.int8 \(c.cin)->\(c.cout) \(g.kh)x\(g.kw)/\(g.sh) \(g.oh)x\(g.ow) \(c.activation)\(c.residual == nil ? "" : " +res")\(link)"
            }
            let kind = (c.kind == .winograd || c.kind == .winograd43) && !Winograd.worthIt(c, nb: nb, program.options) ? "direct" : "\(c.kind)"
            return "conv.\(kind) \(c.cin)->\(c.cout) \(g.kh)x\(g.kw)/\(g.sh) g\(c.groups) \(g.oh)x\(g.ow) \(c.activation)\(c.residual == nil ? "" : " +res")"
        case let .channels(sources, i, _): return "channels \(sources.count) of \(program.slots[i].perImage)"
        case let .groupNorm(g): return "groupnorm \(g.groups) groups \(program.slots[g.input].perImage) \(g.activation)"
        case let .resize(r): return "resize \(r.ih)x\(r.iw) -> \(r.oh)x\(r.ow)"
        case let .pool(p): return "\(p.isMax ? "maxpool" : "avgpool")\(p.q8Link.output == nil ? "" : ".u8") \(p.window.kh)x\(p.window.kw)/\(p.window.sh) \(p.window.oh)x\(p.window.ow)"
        case let .globalPool(isMax, i, _): return "globalpool\(isMax ? "max" : "avg") \(program.slots[i].perImage)"
        case let .activation(a, i, _): return "activation \(a) \(program.slots[i].perImage)"
        case let .channelAffine(_, _, lo, hi, i, _): return "affine \(program.slots[i].perImage)\(lo == -.infinity && hi == .infinity ? "" : " clamp")"
        case let .binary(op, l, _, _, _): return "binary.\(op) \(program.slots[l].perImage)"
        case let .concat(ins, o): return "concat \(ins.count) -> \(program.slots[o].perImage)"
        case let .relayout(i, o): return "relayout \(program.slots[i].perImage) -> \(program.slots[o].perImage)"
        case let .transpose(perm, i, _): return "transpose \(program.slots[i].perImage) by \(perm)"
        case let .layerNorm(_, _, _, i, _): return "layernorm \(program.slots[i].perImage)"
        case let .gemm(g): return "gemm\(g.q8 == nil ? "" : ".int8")\(g.bf16 == nil ? "" : ".bf16") \(g.k)->\(g.n)\(g.rows > 1 ? " x\(g.rows) rows" : "") \(g.activation)"
        case let .pad(_, _, i, o): return "pad \(program.slots[i].perImage) -> \(program.slots[o].perImage)"
        case let .wholeTranspose(perm, shape, _, _): return "transpose \(shape) by \(perm)"
        case let .rowSoftmax(n, i, _): return "softmax \(program.slots[i].count / max(n, 1)) rows of \(n)"
        case let .batchedMatMul(c, m, k, n, _, _, _): return "matmul \(c) x [\(m), \(k)] x [\(k), \(n)]"
        case let .wholeBinary(op, _, a, _, b, _, _): return "binary.\(op) \(a) by \(b)"
        case let .wholeSlice(_, _, i, o, _, _): return "slice \(i) -> \(o)"
        case let .wholeConcat(outer, runs, _, _): return "concat \(runs.count) x \(outer) runs"
        case let .fallback(node, _, _, _): return "reference \(node.opType) '\(node.name)'"
        }
    }
}
