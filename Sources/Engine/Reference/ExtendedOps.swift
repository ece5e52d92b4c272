import Foundation
import LinearAlgebra

/// Reference implementations of the operators transformers, segmentation nets and older
/// CNNs bring (LayerNormalization, batched MatMul, ConvTranspose, Resize, LRN, the
/// shape-computing ops, ...). The two heavy ones, MatMul and ConvTranspose, run their
/// products on OpenBLAS sgemm (one call per batch matrix / group), so a big layer never
/// runs as a naive triple loop.
extension Reference {
    /// Operators implemented here (their shapes come from evaluating them, see ``extendedShapes``).
    static let extendedOps: Set<String> = [
        "LayerNormalization", "Gelu", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Where",
        "Expand", "Split", "Mod", "Not", "And", "Or", "Range", "ScatterND", "ConvTranspose", "Resize",
        "Upsample", "Sum", "Max", "Min", "Mean", "LRN", "Abs", "Reciprocal", "Log", "Softplus", "ReduceSum",
        "ReduceMax", "Tile", BatchBroadcast.opType,
    ]

    /// Evaluates one of ``extendedOps``.
    static func evaluateExtended(_ node: Node, _ inputs: [Tensor?], opset: Int) throws -> [Tensor] {
        func input(_ i: Int) throws -> Tensor {
            guard i < inputs.count, let t = inputs[i] else { throw node.error("missing input \(i)") }
            return t
        }
        func bool(_ v: Bool) -> Float { v ? 1 : 0 }
        switch node.opType {
        case "Gelu":
            if node.string("approximate", "none") == "tanh" {
                let c = Float((2 / Double.pi).squareRoot())
                return [unary(try input(0)) { 0.5 * $0 * (1 + tanh(c * ($0 + 0.044715 * $0 * $0 * $0))) }]
            }
            return [unary(try input(0)) { 0.5 * $0 * (1 + erf($0 / Float(2).squareRoot())) }]
        case "Abs": return [unary(try input(0)) { abs($0) }]
        case "Reciprocal": return [unary(try input(0)) { 1 / $0 }]
        case "Log": return [unary(try input(0)) { log($0) }]
        case "Softplus": return [unary(try input(0)) { $0 > 20 ? $0 : log1p(exp($0)) }]
        case "Not": return [unary(try input(0)) { bool($0 == 0) }]
        case "Equal": return [try binary(try input(0), try input(1), node) { bool($0 == $1) }]
        case "Less": return [try binary(try input(0), try input(1), node) { bool($0 < $1) }]
        case "Greater": return [try binary(try input(0), try input(1), node) { bool($0 > $1) }]
        case "LessOrEqual": return [try binary(try input(0), try input(1), node) { bool($0 <= $1) }]
        case "GreaterOrEqual": return [try binary(try input(0), try input(1), node) { bool($0 >= $1) }]
        case "And": return [try binary(try input(0), try input(1), node) { bool($0 != 0 && $1 != 0) }]
        case "Or": return [try binary(try input(0), try input(1), node) { bool($0 != 0 || $1 != 0) }]
        case "Mod":
            if node.int("fmod", 0) != 0 { return [try binary(try input(0), try input(1), node) { fmod($0, $1) }] }
            return [try binary(try input(0), try input(1), node) { a, b in
                let r = fmod(a, b)
                return r != 0 && (r < 0) != (b < 0) ? r + b : r
            }]
        case "Sum", "Max", "Min", "Mean":
            let xs = try (0..<inputs.count).map { try input($0) }
            guard var acc = xs.first else { throw node.error("no inputs") }
            let f: (Float, Float) -> Float = switch node.opType {
            case "Max": { Swift.max($0, $1) }
            case "Min": { Swift.min($0, $1) }
            default: (+)
            }
            for x in xs.dropFirst() { acc = try binary(acc, x, node, f) }
            if node.opType == "Mean" { acc = unary(acc) { $0 / Float(xs.count) } }
            return [acc]
        case "Where":
            let c = try input(0), x = try input(1), y = try input(2)
            let shape = try broadcastShape(try broadcastShape(c.shape, x.shape, node), y.shape, node)
            var out = [Float](repeating: 0, count: shape.reduce(1, *))
            forEach(shape, [c, x, y].map { broadcastStrides($0.shape, to: shape) }) { i, o in
                out[i] = c.data[o[0]] != 0 ? x.data[o[1]] : y.data[o[2]]
            }
            return [Tensor(shape: shape, data: out)]
        case "Expand":
            let x = try input(0)
            let shape = try broadcastShape(x.shape, try input(1).data.map(int), node)
            return [broadcast(x, to: shape)]
        case "Tile":
            let x = try input(0), reps = try input(1).data.map(int)
            guard reps.count == x.rank, reps.allSatisfy({ $0 >= 0 }) else { throw node.error("repeats must have rank \(x.rank) entries >= 0") }
            let shape = (0..<x.rank).map { x.shape[$0] * reps[$0] }
            var out = [Float](repeating: 0, count: shape.reduce(1, *))
            let st = rowMajorStrides(x.shape)
            var idx = [Int](repeating: 0, count: shape.count)
            for i in 0..<out.count {
                var rem = i, off = 0
                for d in stride(from: shape.count - 1, through: 0, by: -1) {
                    idx[d] = rem % shape[d]; rem /= shape[d]
                    off += (idx[d] % x.shape[d]) * st[d]
                }
                out[i] = x.data[off]
            }
            return [Tensor(shape: shape, data: out)]
        case "Range":
            let start = try input(0).data[0], limit = try input(1).data[0], delta = try input(2).data[0]
            guard delta != 0 else { throw node.error("delta is 0") }
            let n = Swift.max(0, Int((Double(limit - start) / Double(delta)).rounded(.up)))
            return [Tensor(shape: [n], data: (0..<n).map { start + Float($0) * delta })]
        case "Split":
            let x = try input(0)
            let axis = try normalizeAxis(node.int("axis", 0), rank: x.rank, node)
            var sizes = intList(node, inputs, input: 1, attribute: "split") ?? []
            let n = x.shape[axis], parts = node.outputs.count
            if sizes.isEmpty {
                let k = node.int("num_outputs", parts)
                let chunk = (n + k - 1) / Swift.max(k, 1)
                sizes = (0..<k).map { Swift.min(chunk, Swift.max(0, n - $0 * chunk)) }
            }
            guard sizes.reduce(0, +) == n, sizes.count == parts else { throw node.error("split \(sizes) does not cover \(n) in \(parts) outputs") }
            let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
            var begin = 0
            return sizes.map { size in
                var out: [Float] = []
                out.reserveCapacity(outer * size * inner)
                for o in 0..<outer {
                    let base = (o * n + begin) * inner
                    out.append(contentsOf: x.data[base..<(base + size * inner)])
                }
                begin += size
                var shape = x.shape; shape[axis] = size
                return Tensor(shape: shape, data: out)
            }
        case "ScatterND":
            let x = try input(0), idx = try input(1), upd = try input(2)
            guard node.string("reduction", "none") == "none" else { throw node.error("only reduction 'none' is supported") }
            guard let k = idx.shape.last, k <= x.rank else { throw node.error("indices' last dimension exceeds the data rank") }
            let slice = x.shape[k...].reduce(1, *), st = rowMajorStrides(x.shape)
            var out = x.data
            for u in 0..<(idx.count / Swift.max(k, 1)) {
                var off = 0
                for d in 0..<k {
                    var v = int(idx.data[u * k + d]); if v < 0 { v += x.shape[d] }
                    guard v >= 0, v < x.shape[d] else { throw node.error("index \(v) out of range") }
                    off += v * st[d]
                }
                for j in 0..<slice { out[off + j] = upd.data[u * slice + j] }
            }
            return [Tensor(shape: x.shape, data: out)]
        case "LayerNormalization":
            let x = try input(0), scale = try input(1)
            let bias = inputs.count > 2 ? inputs[2] : nil
            let axis = try normalizeAxis(node.int("axis", -1), rank: x.rank, node)
            let eps = node.float("epsilon", 1e-5)
            let n = x.shape[axis...].reduce(1, *), rows = x.count / Swift.max(n, 1)
            guard scale.count == n || scale.count == 1, bias.map({ $0.count == n || $0.count == 1 }) ?? true else {
                throw node.error("scale / B must have \(n) values")
            }
            var out = x.data, means = [Float](repeating: 0, count: rows), inv = means
            for r in 0..<rows {
                var mean: Float = 0
                for j in 0..<n { mean += x.data[r * n + j] }
                mean /= Float(n)
                var v: Float = 0
                for j in 0..<n { let d = x.data[r * n + j] - mean; v += d * d }
                let k = 1 / (v / Float(n) + eps).squareRoot()
                means[r] = mean; inv[r] = k
                for j in 0..<n {
                    let s = scale.data[scale.count == 1 ? 0 : j], b = bias.map { $0.data[$0.count == 1 ? 0 : j] } ?? 0
                    out[r * n + j] = (x.data[r * n + j] - mean) * k * s + b
                }
            }
            let stat = Array(x.shape[..<axis]) + [Int](repeating: 1, count: x.rank - axis)
            return [Tensor(shape: x.shape, data: out), Tensor(shape: stat, data: means), Tensor(shape: stat, data: inv)]
        case "LRN":
            let x = try input(0)
            guard x.rank >= 3 else { throw node.error("input rank < 3") }
            let size = node.int("size", 1), alpha = node.float("alpha", 1e-4), beta = node.float("beta", 0.75)
            let bias = node.float("bias", 1)
            let c = x.shape[1], s = x.shape.dropFirst(2).reduce(1, *)
            let lo = (size - 1) / 2, hi = size - 1 - lo
            var out = x.data
            for img in 0..<x.shape[0] { for ch in 0..<c { for i in 0..<s {
                var sq: Float = 0
                for k in Swift.max(0, ch - lo)...Swift.min(c - 1, ch + hi) {
                    let v = x.data[(img * c + k) * s + i]; sq += v * v
                }
                let at = (img * c + ch) * s + i
                out[at] = x.data[at] / pow(bias + alpha / Float(size) * sq, beta)
            } } }
            return [Tensor(shape: x.shape, data: out)]
        case "ReduceSum", "ReduceMax":
            let x = try input(0)
            let fromInput = node.opType == "ReduceSum" ? opset >= 13 : opset >= 18
            var axes = try (fromInput ? intList(node, inputs, input: 1, attribute: "axes") : node.ints("axes"))
                .map { try $0.map { try normalizeAxis($0, rank: x.rank, node) } } ?? []
            if axes.isEmpty {
                if node.int("noop_with_empty_axes", 0) != 0 { return [x] }
                axes = Array(0..<x.rank)
            }
            let keep = node.int("keepdims", 1) != 0
            let reduced = (0..<x.rank).map { axes.contains($0) ? 1 : x.shape[$0] }
            let isMax = node.opType == "ReduceMax"
            var acc = [Float](repeating: isMax ? -.infinity : 0, count: reduced.reduce(1, *))
            forEach(x.shape, [broadcastStrides(reduced, to: x.shape)]) { i, o in
                acc[o[0]] = isMax ? Swift.max(acc[o[0]], x.data[i]) : acc[o[0]] + x.data[i]
            }
            let shape = keep ? reduced : (0..<x.rank).filter { !axes.contains($0) }.map { x.shape[$0] }
            return [Tensor(shape: shape, data: acc)]
        case "ConvTranspose":
            return [try convTranspose(node, try input(0), try input(1), inputs.count > 2 ? inputs[2] : nil)]
        case "Resize", "Upsample":
            return [try resize(node, inputs, opset: opset)]
        case BatchBroadcast.opType:
            let batch = try input(0).shape[0], value = try input(1)
            return [Tensor(shape: [batch] + value.shape, data: Array([[Float]](repeating: value.data, count: batch).joined()))]
        default:
            throw ModelError.unsupportedOperator(op: node.opType, node: node.name)
        }
    }

    /// Output shapes of an extended op, by evaluating it on zeros where inputs are not constant.
    static func extendedShapes(_ node: Node, _ shapes: [[Int]], _ consts: [Tensor?], opset: Int) throws -> [[Int]] {
        let ins: [Tensor?] = node.inputs.indices.map { i in
            if node.inputs[i].isEmpty { return nil }
            if i < consts.count, let t = consts[i] { return t }
            return Tensor(zeros: i < shapes.count ? shapes[i] : [])
        }
        let outs = try evaluateExtended(node, ins, opset: opset)
        return Array(outs.prefix(node.outputs.count).map(\.shape))
    }

    /// `x` broadcast (numpy rules) to `shape`.
    static func broadcast(_ x: Tensor, to shape: [Int]) -> Tensor {
        if x.shape == shape { return x }
        var out = [Float](repeating: 0, count: shape.reduce(1, *))
        forEach(shape, [broadcastStrides(x.shape, to: shape)]) { i, o in out[i] = x.data[o[0]] }
        return Tensor(shape: shape, data: out)
    }

    /// numpy `matmul`: rank-1 operands are promoted, batch dims broadcast; one sgemm per batch
    /// matrix, or one for the whole batch when the right operand is a single matrix.
    static func matmulBroadcast(_ node: Node, _ a0: Tensor, _ b0: Tensor) throws -> Tensor {
        let a = a0.rank == 1 ? Tensor(shape: [1, a0.count], data: a0.data) : a0
        let b = b0.rank == 1 ? Tensor(shape: [b0.count, 1], data: b0.data) : b0
        let m = a.shape[a.rank - 2], k = a.shape[a.rank - 1], k2 = b.shape[b.rank - 2], n = b.shape[b.rank - 1]
        guard k == k2 else { throw node.error("inner dimensions \(k) and \(k2) differ (\(a0.shape) x \(b0.shape))") }
        let batch = try broadcastShape(Array(a.shape.dropLast(2)), Array(b.shape.dropLast(2)), node)
        var shape = batch + [m, n]
        var out = [Float](repeating: 0, count: shape.reduce(1, *))
        if b.rank == 2 {
            let rows = a.count / Swift.max(k, 1)
            a.data.withUnsafeBufferPointer { pa in b.data.withUnsafeBufferPointer { pb in out.withUnsafeMutableBufferPointer { pc in
                BLAS.sgemm(m: rows, n: n, k: k, a: pa.baseAddress!, lda: Swift.max(k, 1), b: pb.baseAddress!, ldb: Swift.max(n, 1),
                           c: pc.baseAddress!, ldc: Swift.max(n, 1))
            } } }
        } else {
            let sa = broadcastStrides(Array(a.shape.dropLast(2)), to: batch)
            let sb = broadcastStrides(Array(b.shape.dropLast(2)), to: batch)
            a.data.withUnsafeBufferPointer { pa in b.data.withUnsafeBufferPointer { pb in out.withUnsafeMutableBufferPointer { pc in
                forEach(batch, [sa, sb]) { i, o in
                    BLAS.sgemm(m: m, n: n, k: k, a: pa.baseAddress! + o[0] * m * k, lda: Swift.max(k, 1),
                               b: pb.baseAddress! + o[1] * k * n, ldb: Swift.max(n, 1),
                               c: pc.baseAddress! + i * m * n, ldc: Swift.max(n, 1))
                }
            } } }
        }
        if a0.rank == 1 { shape.remove(at: shape.count - 2) }
        if b0.rank == 1 { shape.removeLast() }
        return Tensor(shape: shape, data: out)
    }

    /// Output geometry of a 2-D ConvTranspose: (pads [t, l, b, r], output H, W).
    static func convTransposeGeometry(_ node: Node, h: Int, w: Int, kh: Int, kw: Int) throws -> ([Int], Int, Int) {
        let s = node.ints("strides") ?? [1, 1], d = node.ints("dilations") ?? [1, 1]
        let op = node.ints("output_padding") ?? [0, 0]
        var pads = node.ints("pads") ?? [0, 0, 0, 0]
        guard s.count == 2, d.count == 2, op.count == 2, pads.count == 4, s.allSatisfy({ $0 > 0 }), d.allSatisfy({ $0 > 0 }) else {
            throw node.error("only 2-D ConvTranspose is supported (strides \(s), dilations \(d), pads \(pads))")
        }
        let ins = [h, w], ks = [kh, kw]
        var full = [0, 0]
        for i in 0..<2 {
            let span: Int = (ks[i] - 1) * d[i] + 1
            full[i] = s[i] * (ins[i] - 1) + op[i] + span
        }
        let autoPad = node.string("auto_pad", "NOTSET")
        if let outShape = node.ints("output_shape") ?? (autoPad.hasPrefix("SAME") ? ins.indices.map { ins[$0] * s[$0] } : nil) {
            let o = Array(outShape.suffix(2))
            for i in 0..<2 {
                let total = Swift.max(0, full[i] - o[i])
                let upper = autoPad == "SAME_UPPER"
                pads[i] = upper ? total / 2 : total - total / 2
                pads[i + 2] = total - pads[i]
            }
        } else if autoPad == "VALID" { pads = [0, 0, 0, 0] }
        let oh = full[0] - pads[0] - pads[2], ow = full[1] - pads[1] - pads[3]
        guard oh > 0, ow > 0 else { throw node.error("empty output") }
        return (pads, oh, ow)
    }

    /// ConvTranspose as sgemm (`W^T x X` per group) followed by a col2im scatter-add.
    static func convTranspose(_ node: Node, _ x: Tensor, _ w: Tensor, _ b: Tensor?) throws -> Tensor {
        guard x.rank == 4, w.rank == 4 else { throw node.error("only 2-D ConvTranspose (rank-4 input and weight) is supported") }
        let group = node.int("group", 1)
        let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        guard group > 0, cin % group == 0, w.shape[0] == cin else { throw node.error("weight \(w.shape) does not match \(cin) input channels, group \(group)") }
        let cog = w.shape[1], cout = cog * group, kh = w.shape[2], kw = w.shape[3], cig = cin / group
        let (pads, oh, ow) = try convTransposeGeometry(node, h: h, w: wd, kh: kh, kw: kw)
        let s = node.ints("strides") ?? [1, 1], d = node.ints("dilations") ?? [1, 1]
        let rows = cog * kh * kw, cols = h * wd
        var col = [Float](repeating: 0, count: rows * cols)
        var out = [Float](repeating: 0, count: n * cout * oh * ow)
        for img in 0..<n { for g in 0..<group {
            x.data.withUnsafeBufferPointer { px in w.data.withUnsafeBufferPointer { pw in col.withUnsafeMutableBufferPointer { pc in
                BLAS.sgemm(transA: true, m: rows, n: cols, k: cig, a: pw.baseAddress! + g * cig * rows, lda: rows,
                           b: px.baseAddress! + (img * cin + g * cig) * cols, ldb: cols, c: pc.baseAddress!, ldc: cols)
            } } }
            for oc in 0..<cog {
                let plane = (img * cout + g * cog + oc) * oh * ow
                for ky in 0..<kh { for kx in 0..<kw {
                    let r = (oc * kh + ky) * kw + kx
                    for iy in 0..<h {
                        let oy = iy * s[0] - pads[0] + ky * d[0]
                        if oy < 0 || oy >= oh { continue }
                        for ix in 0..<wd {
                            let ox = ix * s[1] - pads[1] + kx * d[1]
                            if ox < 0 || ox >= ow { continue }
                            out[plane + oy * ow + ox] += col[r * cols + iy * wd + ix]
                        }
                    }
                } }
                if let b { let v = b.data[g * cog + oc]; for i in 0..<(oh * ow) { out[plane + i] += v } }
            }
        } }
        return Tensor(shape: [n, cout, oh, ow], data: out)
    }

    /// Resize / Upsample (nearest and linear) over the two innermost axes of an NCHW tensor.
    static func resize(_ node: Node, _ inputs: [Tensor?], opset: Int) throws -> Tensor {
        guard let x = inputs.first ?? nil, x.rank == 4 else { throw node.error("only rank-4 (NCHW) input is supported") }
        let mode = node.string("mode", "nearest")
        guard mode == "nearest" || mode == "linear" || mode == "bilinear" else { throw node.error("mode '\(mode)' is not supported (nearest, linear)") }
        var transform = node.string("coordinate_transformation_mode", "half_pixel")
        var scales: [Float]? = nil, sizes: [Int]? = nil
        if node.opType == "Upsample" || opset < 11 {
            transform = "asymmetric"
            scales = (inputs.count > 1 ? inputs[1]?.data : nil) ?? node.attributes["scales"].flatMap { if case let .floats(v) = $0 { v } else { nil } }
        } else {
            if inputs.count > 3, let t = inputs[3], t.count > 0 { sizes = t.data.map(int) }
            else if inputs.count > 2, let t = inputs[2], t.count > 0 { scales = t.data }
        }
        if let axes = node.ints("axes"), axes.map({ $0 < 0 ? $0 + 4 : $0 }) != [0, 1, 2, 3] {
            guard axes.map({ $0 < 0 ? $0 + 4 : $0 }) == [2, 3] else { throw node.error("axes \(axes) are not supported") }
            sizes = sizes.map { [x.shape[0], x.shape[1]] + $0 }
            scales = scales.map { [1, 1] + $0 }
        }
        let outHW: [Int], scaleHW: [Float]
        if let sizes {
            // sizes read from the input's Shape hold the compiler's batch stand-in.
            let batch = sizes.first.map { $0 == x.shape[0] || Float($0) == Compiler.batchSentinel } ?? false
            guard sizes.count == 4, batch, sizes[1] == x.shape[1] else { throw node.error("sizes \(sizes) must keep N and C") }
            outHW = [sizes[2], sizes[3]]
            scaleHW = (0..<2).map { Float(outHW[$0]) / Float(x.shape[$0 + 2]) }
        } else if let scales {
            guard scales.count == 4, scales[0] == 1, scales[1] == 1 else { throw node.error("scales \(scales) must keep N and C") }
            scaleHW = [scales[2], scales[3]]
            outHW = (0..<2).map { Int((Float(x.shape[$0 + 2]) * scaleHW[$0]).rounded(.down)) }
        } else { throw node.error("needs scales or sizes") }
        guard outHW.allSatisfy({ $0 > 0 }) else { throw node.error("empty output") }
        if node.string("keep_aspect_ratio_policy", "stretch") != "stretch" { throw node.error("keep_aspect_ratio_policy is not supported") }
        if node.int("antialias", 0) != 0 { throw node.error("antialias is not supported") }
        let known = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
        guard known.contains(transform) else { throw node.error("coordinate_transformation_mode '\(transform)' is not supported") }
        func source(_ o: Int, _ axis: Int) -> Float {
            let inSize = x.shape[axis + 2], outSize = outHW[axis], s = scaleHW[axis]
            switch transform {
            case "align_corners": return outSize == 1 ? 0 : Float(o) * Float(inSize - 1) / Float(outSize - 1)
            case "asymmetric": return Float(o) / s
            case "pytorch_half_pixel": return outSize > 1 ? (Float(o) + 0.5) / s - 0.5 : 0
            default: return (Float(o) + 0.5) / s - 0.5
            }
        }
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3], oh = outHW[0], ow = outHW[1]
        var out = [Float](repeating: 0, count: planes * oh * ow)
        if mode == "nearest" {
            let rounding = node.string("nearest_mode", "round_prefer_floor")
            func pick(_ v: Float, _ n: Int) -> Int {
                let f = v.rounded(.down)
                let i: Float = switch rounding {
                case "floor": f
                case "ceil": v.rounded(.up)
                case "round_prefer_ceil": v - f == 0.5 ? f + 1 : v.rounded()
                default: v - f == 0.5 ? f : v.rounded()
                }
                return Swift.min(Swift.max(Int(i), 0), n - 1)
            }
            let ys = (0..<oh).map { pick(source($0, 0), h) }, xs = (0..<ow).map { pick(source($0, 1), w) }
            for p in 0..<planes { for oy in 0..<oh { for ox in 0..<ow {
                out[(p * oh + oy) * ow + ox] = x.data[(p * h + ys[oy]) * w + xs[ox]]
            } } }
        } else {
            func taps(_ o: Int, _ axis: Int, _ n: Int) -> (Int, Int, Float) {
                let v = Swift.min(Swift.max(source(o, axis), 0), Float(n - 1))
                let i0 = Int(v.rounded(.down)), i1 = Swift.min(i0 + 1, n - 1)
                return (i0, i1, v - Float(i0))
            }
            let ys = (0..<oh).map { taps($0, 0, h) }, xs = (0..<ow).map { taps($0, 1, w) }
            for p in 0..<planes { for oy in 0..<oh {
                let (y0, y1, fy) = ys[oy]
                for ox in 0..<ow {
                    let (x0, x1, fx) = xs[ox]
                    let base = p * h * w
                    let top = x.data[base + y0 * w + x0] * (1 - fx) + x.data[base + y0 * w + x1] * fx
                    let bottom = x.data[base + y1 * w + x0] * (1 - fx) + x.data[base + y1 * w + x1] * fx
                    out[(p * oh + oy) * ow + ox] = top * (1 - fy) + bottom * fy
                }
            } }
        }
        return Tensor(shape: [x.shape[0], x.shape[1], oh, ow], data: out)
    }
}

/// A node the compiler synthesises for a constant the graph broadcasts over the batch
/// (e.g. ViT's class token expanded by a shape read from the input): input 0 is any batched
/// value (only its batch size is read), input 1 the per-image value.
enum BatchBroadcast {
    static let opType = "tessera.BatchBroadcast"
}
