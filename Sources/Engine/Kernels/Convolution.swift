import CEngineKernels
import LinearAlgebra

/// Convolution kernels over channel-major activations (`[C, nb, H, W]`).
enum ConvKernels {
    /// Columns per GEMM call for pointwise convolutions (no im2col buffer; long GEMMs).
    static func pointwiseChunk(total: Int) -> Int { min(total, 8192) }

    /// Output columns per GEMM call; bounds the im2col buffer and keeps epilogues cache-warm.
    static func columnChunk(k: Int, total: Int) -> Int {
        let byBuffer = max(256, (1 << 20) / max(k, 1))
        return min(total, max(64, byBuffer / 16 * 16))
    }

    /// Swift im2col (reference for the C kernel `tessera_engine_im2col` used at run time).
    /// im2col of output columns `[n0, n0 + cols)` (flattened `(image, oy, ox)`) for input
    /// channels `c0 ..< c0 + cg`: writes `col[k * cols + j]`, `k = (ci * kh + ky) * kw + kx`.
    static func im2col(_ x: UnsafePointer<Float>, nb: Int, c0: Int, cg: Int, g: Window2D,
                       n0: Int, cols: Int, col: UnsafeMutablePointer<Float>) {
        let hw = g.h * g.w, ohw = g.oh * g.ow
        var n = n0
        let end = n0 + cols
        while n < end {
            let b = n / ohw, rem = n - b * ohw
            let oy = rem / g.ow, ox0 = rem - oy * g.ow
            let len = min(g.ow - ox0, end - n)
            let jBase = n - n0
            for ci in 0..<cg {
                let plane = x + (c0 + ci) * nb * hw + b * hw
                for ky in 0..<g.kh {
                    let iy = oy * g.sh - g.pt + ky * g.dh
                    let rowValid = iy >= 0 && iy < g.h
                    let src = plane + (rowValid ? iy * g.w : 0)
                    for kx in 0..<g.kw {
                        let dst = col + ((ci * g.kh + ky) * g.kw + kx) * cols + jBase
                        if !rowValid { dst.update(repeating: 0, count: len); continue }
                        let (lo, hi) = g.validColumns(kx: kx)
                        let a = min(max(lo, ox0), ox0 + len), z = max(min(hi, ox0 + len), a)
                        if a > ox0 { dst.update(repeating: 0, count: a - ox0) }
                        if z < ox0 + len { (dst + (z - ox0)).update(repeating: 0, count: ox0 + len - z) }
                        let off = kx * g.dw - g.pl
                        if g.sw == 1 {
                            (dst + (a - ox0)).update(from: src + a + off, count: z - a)
                        } else {
                            let s = g.sw
                            for ox in a..<z { dst[ox - ox0] = src[ox * s + off] }
                        }
                    }
                }
            }
            n += len
        }
    }

    /// Clamp bounds `[lo, hi]` that implement `act` inside a kernel epilogue, or nil when the
    /// activation needs a separate pass (`Epilogue.apply`).
    static func clampBounds(_ act: Activation) -> (Float, Float)? {
        switch act {
        case .none: (-.infinity, .infinity)
        case .relu: (0, .infinity)
        case let .clip(lo, hi): (lo, hi)
        default: nil
        }
    }

    /// GEMM-based convolution (im2col unless pointwise) with fused bias/residual/activation,
    /// for output columns `[n0, n1)` (flattened (image, oy, ox)); `scratch` holds one im2col chunk.
    static func gemmConv(_ c: ConvStep, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                         residual: UnsafePointer<Float>?, nb: Int, scratch: UnsafeMutablePointer<Float>,
                         columns: Range<Int>? = nil) {
        let g = c.window
        let total = nb * g.oh * g.ow
        let range = columns ?? 0..<total
        let cg = c.cin / c.groups, mg = c.cout / c.groups, k = c.k
        let chunk = c.kind == .pointwise ? pointwiseChunk(total: total) : columnChunk(k: k, total: total)
        c.weights.withUnsafeBufferPointer { wbuf in
            c.bias.withUnsafeBufferPointer { bias in
                for grp in 0..<c.groups {
                    var n0 = range.lowerBound
                    while n0 < range.upperBound {
                        let cols = min(chunk, range.upperBound - n0)
                        let cOut = y + grp * mg * total + n0
                        if c.kind == .pointwise {
                            BLAS.sgemm(m: mg, n: cols, k: k, a: wbuf.baseAddress! + grp * mg * k, lda: k,
                                       b: x + n0, ldb: total, c: cOut, ldc: total)
                        } else {
                            tessera_engine_im2col(x, Int32(nb), Int32(grp * cg), Int32(cg), Int32(g.h), Int32(g.w),
                                                  Int32(g.kh), Int32(g.kw), Int32(g.sh), Int32(g.sw), Int32(g.dh), Int32(g.dw),
                                                  Int32(g.pt), Int32(g.pl), Int32(g.oh), Int32(g.ow), n0, cols, scratch)
                            BLAS.sgemm(m: mg, n: cols, k: k, a: wbuf.baseAddress! + grp * mg * k, lda: k,
                                       b: scratch, ldb: cols, c: cOut, ldc: total)
                        }
                        for o in 0..<mg {
                            let row = cOut + o * total
                            Epilogue.row(row, cols, bias: bias[grp * mg + o],
                                         residual: residual.map { $0 + (grp * mg + o) * total + n0 }, c.activation)
                        }
                        n0 += cols
                    }
                }
            }
        }
    }

    /// Pointwise convolution of output channels `rows` over all columns (single micro-batch split).
    static func pointwiseRows(_ c: ConvStep, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                              residual: UnsafePointer<Float>?, nb: Int, rows: Range<Int>) {
        let g = c.window
        let total = nb * g.oh * g.ow, k = c.k
        c.weights.withUnsafeBufferPointer { wbuf in
            BLAS.sgemm(m: rows.count, n: total, k: k, a: wbuf.baseAddress! + rows.lowerBound * k, lda: k,
                       b: x, ldb: total, c: y + rows.lowerBound * total, ldc: total)
        }
        for o in rows {
            Epilogue.row(y + o * total, total, bias: c.bias[o], residual: residual.map { $0 + o * total }, c.activation)
        }
    }

    /// Dense convolution by the C direct kernel (`c.weights` packed by `tessera_engine_conv_pack`)
    /// of output rows `outRows` (of the `nb * oh` (image, oy) rows) and output channels
    /// `channels` (lower bound a multiple of 8).
    static func direct(_ c: ConvStep, _ o: EngineOptions, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                       residual: UnsafePointer<Float>?, nb: Int, outRows: Range<Int>, channels: Range<Int>) {
        let g = c.window
        let (lo, hi) = clampBounds(c.activation) ?? (-.infinity, .infinity)
        let total = nb * g.oh * g.ow
        // Grouped: group gi reads input channels [gi * cinG, ...) and writes [gi * coutG, ...), its
        // weights packed after the groups before it (see Compiler).
        let cinG = c.cin / c.groups, coutG = c.cout / c.groups
        let packedG = c.groups > 1 ? Int(tessera_engine_conv_packed_count(Int32(coutG), Int32(c.k))) : 0
        (c.kind == .direct ? c.weights : c.directWeights!).withUnsafeBufferPointer { w in
            c.bias.withUnsafeBufferPointer { b in
                for gi in 0..<c.groups {
                    let first = gi * coutG
                    let lower = max(channels.lowerBound, first), upper = min(channels.upperBound, first + coutG)
                    if lower >= upper { continue }
                    if c.tapMajor {
                        tessera_engine_conv_live_taps(isa, x, Int32(nb), Int32(c.cin), Int32(g.h), Int32(g.w), Int32(g.kh), Int32(g.kw),
                                                      Int32(g.sh), Int32(g.sw), Int32(g.dh), Int32(g.dw), Int32(g.pt), Int32(g.pl),
                                                      Int32(g.oh), Int32(g.ow), Int32(c.cout), w.baseAddress!, b.baseAddress!, residual,
                                                      lo, hi, outRows.lowerBound, outRows.upperBound,
                                                      Int32(lower), Int32(upper), y)
                        continue
                    }
                    tessera_engine_conv(isa, o.denseConvPath.rawValue, o.gatherCost, x + gi * cinG * nb * g.h * g.w, Int32(nb), Int32(cinG),
                                        Int32(g.h), Int32(g.w), Int32(g.kh), Int32(g.kw),
                                        Int32(g.sh), Int32(g.sw), Int32(g.dh), Int32(g.dw), Int32(g.pt), Int32(g.pl),
                                        Int32(g.oh), Int32(g.ow), Int32(coutG), w.baseAddress! + gi * packedG, b.baseAddress! + first,
                                        residual.map { $0 + first * total },
                                        lo, hi, outRows.lowerBound, outRows.upperBound,
                                        Int32(lower - first), Int32(upper - first), y + first * total)
                }
            }
        }
        if clampBounds(c.activation) == nil {
            for o in channels {
                Epilogue.apply(c.activation, y + o * total + outRows.lowerBound * g.ow, outRows.count * g.ow)
            }
        }
    }

    /// Pointwise convolution by the C kernel (`c.directWeights` packed by `tessera_engine_conv_pack`)
    /// of columns `columns` (flattened (image, oy, ox)) and output channels `channels` (lower
    /// bound a multiple of 8); the input's channel rows are read in place.
    static func pointwise(_ c: ConvStep, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                          residual: UnsafePointer<Float>?, nb: Int, columns: Range<Int>, channels: Range<Int>) {
        let g = c.window
        let total = nb * g.oh * g.ow
        let (lo, hi) = clampBounds(c.activation) ?? (-.infinity, .infinity)
        c.directWeights!.withUnsafeBufferPointer { w in
            c.bias.withUnsafeBufferPointer { b in
                tessera_engine_pointwise(isa, x, total, Int32(c.cin), Int32(c.cout), w.baseAddress!, b.baseAddress!, residual,
                                         lo, hi, columns.lowerBound, columns.upperBound,
                                         Int32(channels.lowerBound), Int32(channels.upperBound), y)
            }
        }
        if clampBounds(c.activation) == nil {
            for o in channels { Epilogue.apply(c.activation, y + o * total + columns.lowerBound, columns.count) }
        }
    }

    /// Packs `[cout, k]` weights for ``direct(_:x:y:residual:nb:columns:rows:)``.
    static func packDirect(_ w: [Float], cout: Int, k: Int) -> [Float] {
        var packed = [Float](repeating: 0, count: tessera_engine_conv_packed_count(Int32(cout), Int32(k)))
        w.withUnsafeBufferPointer { src in
            packed.withUnsafeMutableBufferPointer { tessera_engine_conv_pack(src.baseAddress!, Int32(cout), Int32(k), $0.baseAddress!) }
        }
        return packed
    }

    /// Depthwise convolution of (channel, image) planes `planes` by the C kernel (16 planes per vector).
    static func depthwise(_ c: ConvStep, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                          residual: UnsafePointer<Float>?, nb: Int, planes: Range<Int>) {
        let g = c.window
        let (lo, hi) = clampBounds(c.activation) ?? (-.infinity, .infinity)
        c.weights.withUnsafeBufferPointer { w in
            c.bias.withUnsafeBufferPointer { b in
                tessera_engine_depthwise(isa, x, Int32(nb), Int32(g.h), Int32(g.w), Int32(g.kh), Int32(g.kw),
                                         Int32(g.sh), Int32(g.sw), Int32(g.dh), Int32(g.dw), Int32(g.pt), Int32(g.pl),
                                         Int32(g.oh), Int32(g.ow), w.baseAddress!, b.baseAddress!, residual, lo, hi,
                                         planes.lowerBound, planes.upperBound, y)
            }
        }
        if clampBounds(c.activation) == nil {
            let ohw = g.oh * g.ow
            Epilogue.apply(c.activation, y + planes.lowerBound * ohw, planes.count * ohw)
        }
    }

    /// Resize of planes `planes` (each `ih x iw` -> `oh x ow`).
    static func resize(_ r: ResizeStep, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                       planes: Range<Int>) {
        tessera_engine_resize(isa, x, planes.lowerBound, planes.upperBound, Int32(r.ih), Int32(r.iw), Int32(r.oh),
                              Int32(r.ow), r.rows.i0, r.rows.i1, r.rows.w, r.cols.i0, r.cols.i1, r.cols.w, y)
    }

    /// Mean (or max) of each of `planes` contiguous planes of `spatial` floats into `y`.
    static func globalPool(isa: Int32, x: UnsafePointer<Float>, planes: Int, spatial: Int, isMax: Bool,
                           y: UnsafeMutablePointer<Float>) {
        tessera_engine_global_pool(isa, x, planes, spatial, isMax ? 1 : 0, y)
    }

    /// Max / average pooling of output planes `planes`; `nchwChannels > 0` reads an NCHW input.
    static func pool(_ p: PoolStep, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, nb: Int,
                     planes: Range<Int>, nchwChannels: Int = 0) {
        let g = p.window
        p.rowCount.withUnsafeBufferPointer { rc in
            p.colCount.withUnsafeBufferPointer { cc in
                tessera_engine_pool(isa, x, Int32(nchwChannels), Int32(nb), Int32(g.h), Int32(g.w), Int32(g.kh), Int32(g.kw),
                                    Int32(g.sh), Int32(g.sw), Int32(g.dh), Int32(g.dw), Int32(g.pt), Int32(g.pl),
                                    Int32(g.oh), Int32(g.ow), p.isMax ? 1 : 0, rc.baseAddress!, cc.baseAddress!,
                                    planes.lowerBound, planes.upperBound, y)
            }
        }
    }
}
