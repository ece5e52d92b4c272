import Foundation
import LinearAlgebra

/// Naive, obviously-correct implementations of every supported operator on whole NCHW
/// tensors. They define the semantics the optimised kernels are tested against, fold
/// constants at load time, and run the rare ops the optimised path has no kernel for.
enum Reference {
    // MARK: helpers

    static func int(_ v: Float) -> Int {
        if v >= 9.2e18 { return Int.max }
        if v <= -9.2e18 { return Int.min }
        return Int(v)
    }

    static func normalizeAxis(_ axis: Int, rank: Int, _ node: Node) throws -> Int {
        let a = axis < 0 ? axis + rank : axis
        guard a >= 0, a < max(rank, 1) else { throw node.error("axis \(axis) out of range for rank \(rank)") }
        return a
    }

    static func broadcastShape(_ a: [Int], _ b: [Int], _ node: Node) throws -> [Int] {
        let r = max(a.count, b.count)
        let pa = [Int](repeating: 1, count: r - a.count) + a
        let pb = [Int](repeating: 1, count: r - b.count) + b
        return try (0..<r).map { i in
            if pa[i] == pb[i] || pb[i] == 1 { return pa[i] }
            if pa[i] == 1 { return pb[i] }
            throw node.error("shapes \(a) and \(b) do not broadcast")
        }
    }

    /// Strides of `shape` broadcast to `out` (0 where broadcast).
    static func broadcastStrides(_ shape: [Int], to out: [Int]) -> [Int] {
        let padded = [Int](repeating: 1, count: out.count - shape.count) + shape
        let s = rowMajorStrides(padded)
        return (0..<out.count).map { padded[$0] == 1 && out[$0] != 1 ? 0 : s[$0] }
    }

    /// Calls `body(outIndex, offsets)` for every element of `out`, with each operand's offset.
    static func forEach(_ out: [Int], _ strides: [[Int]], _ body: (Int, [Int]) -> Void) {
        let total = out.reduce(1, *)
        if total == 0 { return }
        var idx = [Int](repeating: 0, count: out.count)
        var offs = [Int](repeating: 0, count: strides.count)
        for i in 0..<total {
            body(i, offs)
            var d = out.count - 1
            while d >= 0 {
                idx[d] += 1
                for k in 0..<strides.count { offs[k] += strides[k][d] }
                if idx[d] < out[d] { break }
                for k in 0..<strides.count { offs[k] -= strides[k][d] * out[d] }
                idx[d] = 0
                d -= 1
            }
        }
    }

    static func binary(_ a: Tensor, _ b: Tensor, _ node: Node, _ f: (Float, Float) -> Float) throws -> Tensor {
        let shape = try broadcastShape(a.shape, b.shape, node)
        var out = [Float](repeating: 0, count: shape.reduce(1, *))
        // Fast paths: an operand repeating over the leading dims (same shape, a bias row, a scalar).
        func repeats(_ t: Tensor) -> Bool {
            let padded = [Int](repeating: 1, count: shape.count - t.rank) + t.shape
            guard let first = padded.firstIndex(where: { $0 != 1 }) else { return true }
            return Array(padded[first...]) == Array(shape[first...])
        }
        if a.shape == shape, repeats(b), b.count > 0 {
            let n = b.count
            for i in 0..<out.count { out[i] = f(a.data[i], b.data[i % n]) }
            return Tensor(shape: shape, data: out)
        }
        if b.shape == shape, repeats(a), a.count > 0 {
            let n = a.count
            for i in 0..<out.count { out[i] = f(a.data[i % n], b.data[i]) }
            return Tensor(shape: shape, data: out)
        }
        forEach(shape, [broadcastStrides(a.shape, to: shape), broadcastStrides(b.shape, to: shape)]) { i, o in
            out[i] = f(a.data[o[0]], b.data[o[1]])
        }
        return Tensor(shape: shape, data: out)
    }

    static func unary(_ x: Tensor, _ f: (Float) -> Float) -> Tensor { Tensor(shape: x.shape, data: x.data.map(f)) }

    static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

    /// Optional constant-or-attribute list input (opset 13+ moved several attributes to inputs).
    static func intList(_ node: Node, _ inputs: [Tensor?], input: Int, attribute: String) -> [Int]? {
        if input < inputs.count, let t = inputs[input] { return t.data.map(int) }
        return node.ints(attribute)
    }

    // MARK: evaluation

    /// Evaluates `node` on concrete inputs (absent optional inputs are nil).
    static func evaluate(_ node: Node, _ inputs: [Tensor?], opset: Int) throws -> [Tensor] {
        func input(_ i: Int) throws -> Tensor {
            guard i < inputs.count, let t = inputs[i] else { throw node.error("missing input \(i)") }
            return t
        }
        switch node.opType {
        case "Identity", "Dropout", "Cast":
            return [try input(0)]
        case "Constant":
            return [try constantValue(node)]
        case "Relu": return [unary(try input(0)) { max($0, 0) }]
        case "LeakyRelu":
            let alpha = node.float("alpha", 0.01)
            return [unary(try input(0)) { $0 >= 0 ? $0 : alpha * $0 }]
        case "Sigmoid": return [unary(try input(0), sigmoid)]
        case "Tanh": return [unary(try input(0)) { tanh($0) }]
        case "Sqrt": return [unary(try input(0)) { sqrt($0) }]
        case "Neg": return [unary(try input(0)) { -$0 }]
        case "Exp": return [unary(try input(0)) { exp($0) }]
        case "Erf": return [unary(try input(0)) { erf($0) }]
        case "Mish": return [unary(try input(0)) { $0 * tanh(log1p(exp($0))) }]
        case "HardSigmoid":
            let alpha = node.float("alpha", 0.2), beta = node.float("beta", 0.5)
            return [unary(try input(0)) { max(0, min(1, alpha * $0 + beta)) }]
        case "HardSwish": return [unary(try input(0)) { $0 * max(0, min(1, $0 / 6 + 0.5)) }]
        case "Clip":
            let (lo, hi) = clipBounds(node, inputs, opset: opset)
            return [unary(try input(0)) { min(max($0, lo), hi) }]
        case "Add": return [try binary(try input(0), try input(1), node, +)]
        case "Sub": return [try binary(try input(0), try input(1), node, -)]
        case "Mul": return [try binary(try input(0), try input(1), node, *)]
        case "Div": return [try binary(try input(0), try input(1), node, /)]
        case "Pow": return [try binary(try input(0), try input(1), node) { pow($0, $1) }]
        case "Conv": return [try conv(node, try input(0), try input(1), inputs.count > 2 ? inputs[2] : nil)]
        case "BatchNormalization":
            let x = try input(0), scale = try input(1), bias = try input(2), mean = try input(3), variance = try input(4)
            let eps = node.float("epsilon", 1e-5)
            guard x.rank >= 2 else { throw node.error("input rank \(x.rank) < 2") }
            let c = x.shape[1], inner = x.shape.dropFirst(2).reduce(1, *)
            guard [scale, bias, mean, variance].allSatisfy({ $0.count == c }) else { throw node.error("parameter sizes != channels \(c)") }
            var out = x.data
            for i in 0..<out.count {
                let ch = (i / inner) % c
                out[i] = (x.data[i] - mean.data[ch]) / sqrt(variance.data[ch] + eps) * scale.data[ch] + bias.data[ch]
            }
            return [Tensor(shape: x.shape, data: out)]
        case "InstanceNormalization":
            let x = try input(0), scale = try input(1), bias = try input(2)
            let eps = node.float("epsilon", 1e-5)
            guard x.rank >= 3, scale.count == x.shape[1], bias.count == x.shape[1] else {
                throw node.error("needs rank >= 3 input and per-channel scale / B")
            }
            let c = x.shape[1], s = x.shape.dropFirst(2).reduce(1, *)
            var out = x.data
            for p in 0..<(x.shape[0] * c) {
                let plane = x.data[(p * s)..<((p + 1) * s)]
                let mean = plane.reduce(0, +) / Float(s)
                let variance = plane.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(s)
                let k = scale.data[p % c] / sqrt(variance + eps), b = bias.data[p % c]
                for i in 0..<s { out[p * s + i] = (x.data[p * s + i] - mean) * k + b }
            }
            return [Tensor(shape: x.shape, data: out)]
        case "MaxPool", "AveragePool": return [try pool(node, try input(0))]
        case "GlobalAveragePool", "GlobalMaxPool":
            let x = try input(0)
            guard x.rank >= 3 else { throw node.error("input rank \(x.rank) < 3") }
            let planes = x.shape[0] * x.shape[1], s = x.shape.dropFirst(2).reduce(1, *)
            let isMax = node.opType == "GlobalMaxPool"
            let out = (0..<planes).map { p -> Float in
                let plane = x.data[(p * s)..<((p + 1) * s)]
                return isMax ? (plane.max() ?? 0) : plane.reduce(0, +) / Float(s)
            }
            return [Tensor(shape: [x.shape[0], x.shape[1]] + [Int](repeating: 1, count: x.rank - 2), data: out)]
        case "Gemm":
            let a = try input(0), b = try input(1)
            return [try gemm(node, a, b, inputs.count > 2 ? inputs[2] : nil)]
        case "MatMul": return [try matmul(node, try input(0), try input(1))]
        case "Softmax":
            let x = try input(0)
            let axis = try normalizeAxis(node.int("axis", opset >= 13 ? -1 : 1), rank: x.rank, node)
            var out = x.data
            if opset >= 13 {
                let n = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *)
                let outer = x.shape[..<axis].reduce(1, *)
                for o in 0..<outer { for i in 0..<inner {
                    let base = o * n * inner + i
                    var m = -Float.infinity
                    for k in 0..<n { m = max(m, x.data[base + k * inner]) }
                    var s: Float = 0
                    for k in 0..<n { let e = exp(x.data[base + k * inner] - m); out[base + k * inner] = e; s += e }
                    for k in 0..<n { out[base + k * inner] /= s }
                } }
            } else {
                let n = x.shape[axis...].reduce(1, *)
                for o in 0..<(x.count / max(n, 1)) {
                    let row = out[(o * n)..<((o + 1) * n)]
                    let m = row.max() ?? 0
                    let e = row.map { exp($0 - m) }
                    let s = e.reduce(0, +)
                    for k in 0..<n { out[o * n + k] = e[k] / s }
                }
            }
            return [Tensor(shape: x.shape, data: out)]
        case "Concat":
            let xs = try (0..<inputs.count).map { try input($0) }
            let shapes = try outputShapes(node, xs.map(\.shape), inputs, opset: opset)
            let axis = try normalizeAxis(node.int("axis", 1), rank: xs[0].rank, node)
            let outer = xs[0].shape[..<axis].reduce(1, *)
            var out: [Float] = []
            out.reserveCapacity(shapes[0].reduce(1, *))
            for o in 0..<outer { for x in xs {
                let block = x.shape[axis...].reduce(1, *)
                out.append(contentsOf: x.data[(o * block)..<((o + 1) * block)])
            } }
            return [Tensor(shape: shapes[0], data: out)]
        case "Flatten", "Reshape", "Squeeze", "Unsqueeze":
            let x = try input(0)
            let shape = try outputShapes(node, inputs.map { $0?.shape ?? [] }, inputs, opset: opset)[0]
            return [Tensor(shape: shape, data: x.data)]
        case "Transpose":
            let x = try input(0)
            let perm = node.ints("perm") ?? Array((0..<x.rank).reversed())
            let shape = perm.map { x.shape[$0] }
            let st = rowMajorStrides(x.shape)
            var out = [Float](repeating: 0, count: x.count)
            forEach(shape, [perm.map { st[$0] }]) { i, o in out[i] = x.data[o[0]] }
            return [Tensor(shape: shape, data: out)]
        case "Pad":
            let x = try input(0)
            let shape = try outputShapes(node, inputs.map { $0?.shape ?? [] }, inputs, opset: opset)[0]
            let pads = intList(node, inputs, input: 1, attribute: "pads") ?? []
            let value: Float = (inputs.count > 2 ? inputs[2]?.data.first : nil) ?? node.float("value", 0)
            var out = [Float](repeating: value, count: shape.reduce(1, *))
            let ost = rowMajorStrides(shape)
            let base = (0..<x.rank).reduce(0) { $0 + pads[$1] * ost[$1] }
            forEach(x.shape, [ost]) { i, o in out[base + o[0]] = x.data[i] }
            return [Tensor(shape: shape, data: out)]
        case "ReduceMean":
            let x = try input(0)
            let axes = try reduceAxes(node, inputs, rank: x.rank, opset: opset)
            let keep = node.int("keepdims", 1) != 0
            let reducedShape = (0..<x.rank).map { axes.contains($0) ? 1 : x.shape[$0] }
            var sums = [Float](repeating: 0, count: reducedShape.reduce(1, *))
            let st = broadcastStrides(reducedShape, to: x.shape)
            forEach(x.shape, [st]) { i, o in sums[o[0]] += x.data[i] }
            let n = Float(axes.reduce(1) { $0 * x.shape[$1] })
            let shape = keep ? reducedShape : (0..<x.rank).filter { !axes.contains($0) }.map { x.shape[$0] }
            return [Tensor(shape: shape, data: sums.map { $0 / n })]
        case "Shape":
            let x = try input(0)
            let r = x.rank
            var start = node.int("start", 0), end = node.int("end", r)
            if start < 0 { start += r }; if end < 0 { end += r }
            start = min(max(start, 0), r); end = min(max(end, start), r)
            return [Tensor(shape: [end - start], data: x.shape[start..<end].map { Float($0) })]
        case "Gather":
            let x = try input(0), idx = try input(1)
            let axis = try normalizeAxis(node.int("axis", 0), rank: x.rank, node)
            let n = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *), outer = x.shape[..<axis].reduce(1, *)
            var out: [Float] = []
            for o in 0..<outer { for v in idx.data {
                var k = int(v); if k < 0 { k += n }
                guard k >= 0, k < n else { throw node.error("index \(int(v)) out of range \(n)") }
                out.append(contentsOf: x.data[((o * n + k) * inner)..<((o * n + k + 1) * inner)])
            } }
            return [Tensor(shape: Array(x.shape[..<axis]) + idx.shape + Array(x.shape[(axis + 1)...]), data: out)]
        case "Slice":
            let x = try input(0)
            let (starts, steps, shape) = try sliceGeometry(node, inputs, x.shape)
            let st = rowMajorStrides(x.shape)
            let base = (0..<x.rank).reduce(0) { $0 + starts[$1] * st[$1] }
            var out = [Float](repeating: 0, count: shape.reduce(1, *))
            forEach(shape, [(0..<x.rank).map { st[$0] * steps[$0] }]) { i, o in out[i] = x.data[base + o[0]] }
            return [Tensor(shape: shape, data: out)]
        case "ConstantOfShape":
            let shape = try input(0).data.map(int)
            var value: Float = 0
            if case let .tensor(t)? = node.attributes["value"], let v = t.data.first { value = v }
            return [Tensor(shape: shape, data: [Float](repeating: value, count: shape.reduce(1, *)))]
        default:
            return try evaluateExtended(node, inputs, opset: opset)
        }
    }

    static func constantValue(_ node: Node) throws -> Tensor {
        switch node.attributes["value"] ?? node.attributes["value_float"] ?? node.attributes["value_floats"]
            ?? node.attributes["value_int"] ?? node.attributes["value_ints"] {
        case let .tensor(t)?: return t
        case let .float(v)?: return Tensor(shape: [], data: [v])
        case let .floats(v)?: return Tensor(shape: [v.count], data: v)
        case let .int(v)?: return Tensor(shape: [], data: [Float(v)])
        case let .ints(v)?: return Tensor(shape: [v.count], data: v.map { Float($0) })
        default: throw node.error("no supported value attribute")
        }
    }

    static func clipBounds(_ node: Node, _ inputs: [Tensor?], opset: Int) -> (Float, Float) {
        var lo = -Float.infinity, hi = Float.infinity
        if opset < 11 {
            lo = node.float("min", lo); hi = node.float("max", hi)
        } else {
            if inputs.count > 1, let t = inputs[1], let v = t.data.first { lo = v }
            if inputs.count > 2, let t = inputs[2], let v = t.data.first { hi = v }
        }
        return (lo, hi)
    }

    static func reduceAxes(_ node: Node, _ inputs: [Tensor?], rank: Int, opset: Int) throws -> [Int] {
        let raw = (opset >= 18 ? intList(node, inputs, input: 1, attribute: "axes") : node.ints("axes")) ?? Array(0..<rank)
        return try raw.map { try normalizeAxis($0, rank: rank, node) }
    }

    static func sliceGeometry(_ node: Node, _ inputs: [Tensor?], _ shape: [Int]) throws -> ([Int], [Int], [Int]) {
        let starts = intList(node, inputs, input: 1, attribute: "starts") ?? []
        let ends = intList(node, inputs, input: 2, attribute: "ends") ?? []
        let rank = shape.count
        let axes = try (intList(node, inputs, input: 3, attribute: "axes") ?? Array(0..<starts.count)).map {
            try normalizeAxis($0, rank: rank, node)
        }
        let steps = intList(node, inputs, input: 4, attribute: "steps") ?? [Int](repeating: 1, count: starts.count)
        guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count else {
            throw node.error("starts/ends/axes/steps lengths differ")
        }
        var st = [Int](repeating: 0, count: rank), sp = [Int](repeating: 1, count: rank), out = shape
        for (i, a) in axes.enumerated() {
            let n = shape[a], step = steps[i]
            guard step != 0 else { throw node.error("zero step") }
            var s = starts[i], e = ends[i]
            if s < 0 { s += n }; if e < 0 { e = e == Int.min ? -1 : e + n }
            if step > 0 { s = min(max(s, 0), n); e = min(max(e, 0), n) } else { s = min(max(s, -1), n - 1); e = min(max(e, -1), n - 1) }
            st[a] = s; sp[a] = step
            out[a] = step > 0 ? max(0, (e - s + step - 1) / step) : max(0, (s - e - step - 1) / -step)
        }
        return (st, sp, out)
    }

    static func conv(_ node: Node, _ x: Tensor, _ w: Tensor, _ b: Tensor?) throws -> Tensor {
        guard x.rank == 4, w.rank == 4 else { throw node.error("only 2-D convolution (rank-4 input and weight) is supported") }
        let group = node.int("group", 1)
        let (n, c) = (x.shape[0], x.shape[1]), m = w.shape[0]
        guard group > 0, c % group == 0, m % group == 0, w.shape[1] == c / group else {
            throw node.error("channels \(c), weight \(w.shape), group \(group) are inconsistent")
        }
        let g = try Window2D(node: node, h: x.shape[2], w: x.shape[3], kernel: (w.shape[2], w.shape[3]))
        let cg = c / group, mg = m / group
        var out = [Float](repeating: 0, count: n * m * g.oh * g.ow)
        for img in 0..<n { for oc in 0..<m {
            let grp = oc / mg
            for oy in 0..<g.oh { for ox in 0..<g.ow {
                var acc: Float = b?.data[oc] ?? 0
                for ic in 0..<cg { for ky in 0..<g.kh { for kx in 0..<g.kw {
                    let iy = oy * g.sh - g.pt + ky * g.dh, ix = ox * g.sw - g.pl + kx * g.dw
                    if iy < 0 || iy >= g.h || ix < 0 || ix >= g.w { continue }
                    let xv = x.data[((img * c + grp * cg + ic) * g.h + iy) * g.w + ix]
                    acc += xv * w.data[((oc * cg + ic) * g.kh + ky) * g.kw + kx]
                } } }
                out[((img * m + oc) * g.oh + oy) * g.ow + ox] = acc
            } }
        } }
        return Tensor(shape: [n, m, g.oh, g.ow], data: out)
    }

    static func pool(_ node: Node, _ x: Tensor) throws -> Tensor {
        // A 3-D pool over the first spatial axis only: a 2-D pool with the last two axes merged.
        if x.rank == 5, let flat = node.depthPoolAs2D() {
            let s = x.shape
            let out = try pool(flat, Tensor(shape: [s[0], s[1], s[2], s[3] * s[4]], data: x.data))
            return Tensor(shape: [s[0], s[1], out.shape[2], s[3], s[4]], data: out.data)
        }
        guard x.rank == 4 else { throw node.error("only 2-D pooling, or 3-D pooling with [k, 1, 1] windows, is supported") }
        let g = try Window2D(node: node, h: x.shape[2], w: x.shape[3], kernel: nil, ceilMode: node.int("ceil_mode", 0) != 0)
        let isMax = node.opType == "MaxPool"
        let includePad = node.int("count_include_pad", 0) != 0
        let planes = x.shape[0] * x.shape[1]
        var out = [Float](repeating: 0, count: planes * g.oh * g.ow)
        for p in 0..<planes { for oy in 0..<g.oh { for ox in 0..<g.ow {
            var acc: Float = isMax ? -.infinity : 0
            var count = 0
            for ky in 0..<g.kh { for kx in 0..<g.kw {
                let iy = oy * g.sh - g.pt + ky * g.dh, ix = ox * g.sw - g.pl + kx * g.dw
                if iy < 0 || iy >= g.h || ix < 0 || ix >= g.w { continue }
                let v = x.data[(p * g.h + iy) * g.w + ix]
                if isMax { acc = max(acc, v) } else { acc += v }
                count += 1
            } }
            if !isMax {
                if includePad {
                    let y0 = oy * g.sh - g.pt, x0 = ox * g.sw - g.pl
                    let y1 = min(y0 + (g.kh - 1) * g.dh + 1, g.h + g.pb), x1 = min(x0 + (g.kw - 1) * g.dw + 1, g.w + g.pr)
                    count = ((y1 - y0 + g.dh - 1) / g.dh) * ((x1 - x0 + g.dw - 1) / g.dw)
                }
                acc /= Float(max(count, 1))
            }
            out[(p * g.oh + oy) * g.ow + ox] = acc
        } } }
        return Tensor(shape: [x.shape[0], x.shape[1], g.oh, g.ow], data: out)
    }

    static func gemm(_ node: Node, _ a: Tensor, _ b: Tensor, _ c: Tensor?) throws -> Tensor {
        guard a.rank == 2, b.rank == 2 else { throw node.error("Gemm needs rank-2 inputs, got \(a.shape) and \(b.shape)") }
        let ta = node.int("transA", 0) != 0, tb = node.int("transB", 0) != 0
        let alpha = node.float("alpha", 1), beta = node.float("beta", 1)
        let (m, k) = ta ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
        let (k2, n) = tb ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
        guard k == k2 else { throw node.error("inner dimensions \(k) and \(k2) differ") }
        var out = [Float](repeating: 0, count: m * n)
        // alpha op(A) op(B) on OpenBLAS, then beta C broadcast.
        if m > 0, n > 0, k > 0 {
            a.data.withUnsafeBufferPointer { pa in b.data.withUnsafeBufferPointer { pb in out.withUnsafeMutableBufferPointer { pc in
                BLAS.sgemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: pa.baseAddress!, lda: ta ? m : k,
                           b: pb.baseAddress!, ldb: tb ? k : n, c: pc.baseAddress!, ldc: n)
            } } }
        }
        if let c {
            let cs = broadcastStrides(c.shape, to: [m, n])
            for i in 0..<m { for j in 0..<n { out[i * n + j] += beta * c.data[i * cs[0] + j * cs[1]] } }
        }
        return Tensor(shape: [m, n], data: out)
    }

    static func matmul(_ node: Node, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        try matmulBroadcast(node, a, b)
    }

    // MARK: shape inference

    /// Output shapes of `node` from input shapes (and the constant inputs where the shape depends on values).
    static func outputShapes(_ node: Node, _ shapes: [[Int]], _ consts: [Tensor?], opset: Int) throws -> [[Int]] {
        func s(_ i: Int) throws -> [Int] {
            guard i < shapes.count, !node.inputs[i].isEmpty else { throw node.error("missing input \(i)") }
            return shapes[i]
        }
        func const(_ i: Int) throws -> Tensor {
            guard i < consts.count, let t = consts[i] else { throw node.error("input \(i) must be a constant") }
            return t
        }
        switch node.opType {
        case "InstanceNormalization":
            let x = try s(0)
            guard x.count >= 3 else { throw node.error("input rank < 3") }
            return [x]
        case "Identity", "Dropout", "Cast", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Sqrt", "Neg", "Exp", "Erf",
             "Mish", "HardSigmoid", "HardSwish", "Clip", "Softmax":
            return [try s(0)]
        case "BatchNormalization":
            let x = try s(0)
            guard x.count >= 2, shapes.count >= 5 else { throw node.error("needs X, scale, B, mean, var") }
            for i in 1...4 where (try s(i)).reduce(1, *) != x[1] { throw node.error("parameter \(i) size != channels \(x[1])") }
            return [x]
        case "Constant": return [try constantValue(node).shape]
        case "Add", "Sub", "Mul", "Div", "Pow": return [try broadcastShape(try s(0), try s(1), node)]
        case "Conv":
            let x = try s(0), w = try s(1)
            guard x.count == 4, w.count == 4 else { throw node.error("only 2-D convolution is supported (input \(x), weight \(w))") }
            let group = node.int("group", 1)
            guard group > 0, x[1] % group == 0, w[0] % group == 0, w[1] == x[1] / group else {
                throw node.error("input channels \(x[1]), weight \(w), group \(group) are inconsistent")
            }
            if shapes.count > 2, !node.inputs[2].isEmpty, shapes[2].reduce(1, *) != w[0] { throw node.error("bias size != \(w[0])") }
            let g = try Window2D(node: node, h: x[2], w: x[3], kernel: (w[2], w[3]))
            return [[x[0], w[0], g.oh, g.ow]]
        case "MaxPool", "AveragePool":
            let x = try s(0)
            guard x.count == 4 else { throw node.error("only 2-D pooling is supported (input \(x))") }
            let g = try Window2D(node: node, h: x[2], w: x[3], kernel: nil, ceilMode: node.int("ceil_mode", 0) != 0)
            return [[x[0], x[1], g.oh, g.ow]]
        case "GlobalAveragePool", "GlobalMaxPool":
            let x = try s(0)
            guard x.count >= 3 else { throw node.error("input rank < 3") }
            return [[x[0], x[1]] + [Int](repeating: 1, count: x.count - 2)]
        case "Flatten":
            let x = try s(0)
            let axis = node.int("axis", 1)
            let a = axis < 0 ? axis + x.count : axis
            guard a >= 0, a <= x.count else { throw node.error("axis \(axis) out of range") }
            return [[x[..<a].reduce(1, *), x[a...].reduce(1, *)]]
        case "Reshape":
            let x = try s(0)
            var target = try const(1).data.map(int)
            let allowZero = node.int("allowzero", 0) != 0
            for i in target.indices where target[i] == 0 && !allowZero {
                guard i < x.count else { throw node.error("0 in shape at \(i) beyond input rank") }
                target[i] = x[i]
            }
            let total = x.reduce(1, *)
            let known = target.filter { $0 != -1 }.reduce(1, *)
            let unknown = target.filter { $0 == -1 }.count
            guard unknown <= 1, target.allSatisfy({ $0 >= -1 }) else { throw node.error("bad target shape \(target)") }
            if unknown == 1 {
                guard known > 0, total % known == 0 else { throw node.error("cannot reshape \(x) to \(target)") }
                target = target.map { $0 == -1 ? total / known : $0 }
            }
            guard target.reduce(1, *) == total else { throw node.error("cannot reshape \(x) to \(target)") }
            return [target]
        case "Squeeze":
            let x = try s(0)
            let axes = try (intList(node, consts, input: 1, attribute: "axes") ?? x.indices.filter { x[$0] == 1 })
                .map { try normalizeAxis($0, rank: x.count, node) }
            for a in axes where x[a] != 1 { throw node.error("cannot squeeze axis \(a) of size \(x[a])") }
            return [x.indices.filter { !axes.contains($0) }.map { x[$0] }]
        case "Unsqueeze":
            let x = try s(0)
            guard let raw = intList(node, consts, input: 1, attribute: "axes") else { throw node.error("no axes") }
            let r = x.count + raw.count
            let axes = try raw.map { try normalizeAxis($0, rank: r, node) }
            var out: [Int] = [], it = x.makeIterator()
            for i in 0..<r { out.append(axes.contains(i) ? 1 : (it.next() ?? 1)) }
            return [out]
        case "Gemm":
            let a = try s(0), b = try s(1)
            guard a.count == 2, b.count == 2 else { throw node.error("Gemm needs rank-2 inputs, got \(a) and \(b)") }
            let ta = node.int("transA", 0) != 0, tb = node.int("transB", 0) != 0
            let (m, k) = ta ? (a[1], a[0]) : (a[0], a[1]), (k2, n) = tb ? (b[1], b[0]) : (b[0], b[1])
            guard k == k2 else { throw node.error("inner dimensions \(k) and \(k2) differ") }
            if shapes.count > 2, !node.inputs[2].isEmpty { _ = try broadcastShape([m, n], shapes[2], node) }
            return [[m, n]]
        case "MatMul":
            let a = try s(0), b = try s(1)
            guard !a.isEmpty, !b.isEmpty, a.last == (b.count == 1 ? b[0] : b[b.count - 2]) else {
                throw node.error("unsupported MatMul shapes \(a) x \(b)")
            }
            let batch = try broadcastShape(Array(a.dropLast(2)), Array(b.dropLast(2)), node)
            return [batch + (a.count >= 2 ? [a[a.count - 2]] : []) + (b.count >= 2 ? [b[b.count - 1]] : [])]
        case "Concat":
            guard !shapes.isEmpty else { throw node.error("no inputs") }
            let x = try s(0)
            let axis = try normalizeAxis(node.int("axis", 1), rank: x.count, node)
            var out = x
            out[axis] = 0
            for (i, sh) in shapes.enumerated() {
                guard sh.count == x.count, (0..<x.count).allSatisfy({ $0 == axis || sh[$0] == x[$0] }) else {
                    throw node.error("input \(i) shape \(sh) does not match \(x) outside axis \(axis)")
                }
                out[axis] += sh[axis]
            }
            return [out]
        case "Transpose":
            let x = try s(0)
            let perm = node.ints("perm") ?? Array((0..<x.count).reversed())
            guard perm.sorted() == Array(0..<x.count) else { throw node.error("bad perm \(perm)") }
            return [perm.map { x[$0] }]
        case "Pad":
            let x = try s(0)
            let mode = node.string("mode", "constant")
            guard mode == "constant" else { throw node.error("only constant padding is supported (mode \(mode))") }
            guard let pads = intList(node, consts, input: 1, attribute: "pads"), pads.count == 2 * x.count,
                  pads.allSatisfy({ $0 >= 0 }) else { throw node.error("pads must be constant, non-negative, 2*rank long") }
            if shapes.count > 3, !node.inputs[3].isEmpty { throw node.error("the axes input is not supported") }
            return [(0..<x.count).map { x[$0] + pads[$0] + pads[$0 + x.count] }]
        case "ReduceMean":
            let x = try s(0)
            let axes = try reduceAxes(node, consts, rank: x.count, opset: opset)
            let keep = node.int("keepdims", 1) != 0
            return [keep ? (0..<x.count).map { axes.contains($0) ? 1 : x[$0] } : (0..<x.count).filter { !axes.contains($0) }.map { x[$0] }]
        case "Shape":
            let r = try s(0).count
            var start = node.int("start", 0), end = node.int("end", r)
            if start < 0 { start += r }; if end < 0 { end += r }
            return [[max(0, min(end, r) - max(0, min(start, r)))]]
        case "Gather":
            let x = try s(0), idx = try s(1)
            let axis = try normalizeAxis(node.int("axis", 0), rank: x.count, node)
            return [Array(x[..<axis]) + idx + Array(x[(axis + 1)...])]
        case "Slice":
            let x = try s(0)
            for i in 1..<min(shapes.count, 5) where !node.inputs[i].isEmpty { _ = try const(i) }
            return [try sliceGeometry(node, consts, x).2]
        case "ConstantOfShape": return [try const(0).data.map(int)]
        default:
            return try extendedShapes(node, shapes, consts, opset: opset)
        }
    }
}
