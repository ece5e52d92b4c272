import CTesseraShims
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

    /// GEMM-based convolution (im2col unless pointwise) with fused bias/residual/activation.
    static func gemmConv(_ c: ConvStep, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                         residual: UnsafePointer<Float>?, nb: Int, scratch: UnsafeMutablePointer<Float>) {
        let g = c.window
        let total = nb * g.oh * g.ow
        let cg = c.cin / c.groups, mg = c.cout / c.groups, k = c.k
        let chunk = c.kind == .pointwise ? pointwiseChunk(total: total) : columnChunk(k: k, total: total)
        c.weights.withUnsafeBufferPointer { wbuf in
            c.bias.withUnsafeBufferPointer { bias in
                for grp in 0..<c.groups {
                    var n0 = 0
                    while n0 < total {
                        let cols = min(chunk, total - n0)
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

    /// Direct depthwise convolution: one (channel, image) plane at a time, row accumulation.
    static func depthwise(_ c: ConvStep, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                          residual: UnsafePointer<Float>?, nb: Int) {
        let g = c.window
        let hw = g.h * g.w, ohw = g.oh * g.ow, khw = g.kh * g.kw
        c.weights.withUnsafeBufferPointer { wbuf in
            for ch in 0..<c.cout {
                let w = wbuf.baseAddress! + ch * khw
                let bias = c.bias[ch]
                for b in 0..<nb {
                    let plane = x + (ch * nb + b) * hw
                    let out = y + (ch * nb + b) * ohw
                    for oy in 0..<g.oh {
                        let orow = out + oy * g.ow
                        orow.update(repeating: bias, count: g.ow)
                        for ky in 0..<g.kh {
                            let iy = oy * g.sh - g.pt + ky * g.dh
                            if iy < 0 || iy >= g.h { continue }
                            let src = plane + iy * g.w
                            for kx in 0..<g.kw {
                                let (lo, hi) = g.validColumns(kx: kx)
                                let wv = w[ky * g.kw + kx]
                                let s = src + (kx * g.dw - g.pl)
                                if g.sw == 1 {
                                    for ox in lo..<hi { orow[ox] += wv * s[ox] }
                                } else if g.sw == 2 {
                                    for ox in lo..<hi { orow[ox] += wv * s[2 * ox] }
                                } else {
                                    for ox in lo..<hi { orow[ox] += wv * s[ox * g.sw] }
                                }
                            }
                        }
                        Epilogue.row(orow, g.ow, bias: 0,
                                     residual: residual.map { $0 + (ch * nb + b) * ohw + oy * g.ow }, c.activation)
                    }
                }
            }
        }
    }

    /// Max / average pooling over channel-major planes.
    static func pool(_ p: PoolStep, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, planes: Int) {
        let g = p.window
        let hw = g.h * g.w, ohw = g.oh * g.ow
        p.colCount.withUnsafeBufferPointer { colCount in
            for pl in 0..<planes {
                let plane = x + pl * hw, out = y + pl * ohw
                for oy in 0..<g.oh {
                    let orow = out + oy * g.ow
                    orow.update(repeating: p.isMax ? -.infinity : 0, count: g.ow)
                    for ky in 0..<g.kh {
                        let iy = oy * g.sh - g.pt + ky * g.dh
                        if iy < 0 || iy >= g.h { continue }
                        let src = plane + iy * g.w
                        for kx in 0..<g.kw {
                            let (lo, hi) = g.validColumns(kx: kx)
                            let s = src + (kx * g.dw - g.pl)
                            let st = g.sw
                            if p.isMax {
                                for ox in lo..<hi { orow[ox] = max(orow[ox], s[ox * st]) }
                            } else {
                                for ox in lo..<hi { orow[ox] += s[ox * st] }
                            }
                        }
                    }
                    if !p.isMax {
                        let rc = p.rowCount[oy]
                        for ox in 0..<g.ow { orow[ox] /= max(rc * colCount[ox], 1) }
                    }
                }
            }
        }
    }
}
