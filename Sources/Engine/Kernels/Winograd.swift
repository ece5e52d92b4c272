import CEngineKernels
import Foundation
import LinearAlgebra

/// Winograd F(2x2, 3x3) convolution for 3x3 / stride 1 / dilation 1 / ungrouped layers:
/// 16 GEMMs of `[cout x cin] x [cin x tiles]` replace one `[cout x 9cin] x [9cin x pixels]`
/// GEMM, 2.25x fewer multiplies and less data movement than im2col.
enum Winograd {
    /// Whether `c` can run as Winograd (and is worth it).
    static func eligible(_ c: ConvStep, _ o: EngineOptions) -> Bool {
        if o.winograd == .none { return false }
        let g = c.window
        return c.kind == .gemm && c.groups == 1 && g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1
            && g.dh == 1 && g.dw == 1 && c.cin >= 8 && c.cout >= 8
    }

    /// `U = G g G^T` for every (cout, cin): returns `[16, cout, cin]`.
    static func transformWeights(_ w: [Float], cout: Int, cin: Int) -> [Float] {
        var u = [Float](repeating: 0, count: 16 * cout * cin)
        for o in 0..<cout { for i in 0..<cin {
            let g = (0..<9).map { w[(o * cin + i) * 9 + $0] }
            // tmp = G g (4x3)
            var t = [Float](repeating: 0, count: 12)
            for c in 0..<3 {
                let g0 = g[c], g1 = g[3 + c], g2 = g[6 + c]
                t[c] = g0
                t[3 + c] = 0.5 * (g0 + g1 + g2)
                t[6 + c] = 0.5 * (g0 - g1 + g2)
                t[9 + c] = g2
            }
            for r in 0..<4 {
                let a = t[r * 3], b = t[r * 3 + 1], c = t[r * 3 + 2]
                let row = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
                for col in 0..<4 { u[((r * 4 + col) * cout + o) * cin + i] = row[col] }
            }
        } }
        return u
    }

    /// F(4x4,3x3) when it needs fewer transform-domain multiplies than F(2x2,3x3) (tile waste at small sizes).
    static func prefersF43(_ c: ConvStep, _ o: EngineOptions) -> Bool {
        if o.winograd != .all { return false }
        let g = c.window
        let t2 = ((g.oh + 1) / 2) * ((g.ow + 1) / 2) * 16
        let t4 = ((g.oh + 3) / 4) * ((g.ow + 3) / 4) * 36
        return t4 <= t2
    }

    /// `U = G g G^T` for F(4x4,3x3): returns `[36, cout, cin]`.
    static func transformWeights43(_ w: [Float], cout: Int, cin: Int) -> [Float] {
        let gm: [[Double]] = [[1.0 / 4, 0, 0], [-1.0 / 6, -1.0 / 6, -1.0 / 6], [-1.0 / 6, 1.0 / 6, -1.0 / 6],
                              [1.0 / 24, 1.0 / 12, 1.0 / 6], [1.0 / 24, -1.0 / 12, 1.0 / 6], [0, 0, 1]]
        var u = [Float](repeating: 0, count: 36 * cout * cin)
        for o in 0..<cout { for i in 0..<cin {
            let g = (0..<9).map { Double(w[(o * cin + i) * 9 + $0]) }
            for r in 0..<6 { for c in 0..<6 {
                var acc = 0.0
                for a in 0..<3 { for b in 0..<3 { acc += gm[r][a] * g[a * 3 + b] * gm[c][b] } }
                u[((r * 6 + c) * cout + o) * cin + i] = Float(acc)
            } }
        } }
        return u
    }

    /// Tiles per chunk: as many as fit `chunkFloats` (one chunk's transformed input and GEMM
    /// output, V and M together, sized to stay in a core's L2), in multiples of the GEMM tile's
    /// 48 columns, the tiles spread evenly over the chunks.
    static func tileChunk(entries: Int, cin: Int, cout: Int, tiles: Int, chunkFloats: Int) -> Int {
        let nr = 48
        let fit = max(nr, chunkFloats / (entries * (cin + cout)) / nr * nr)
        if tiles <= fit { return tiles }
        let chunks = (tiles + fit - 1) / fit
        return min(fit, ((tiles + chunks - 1) / chunks + nr - 1) / nr * nr)
    }

    /// Floats of one transform entry's weights packed for `tessera_engine_sgemm_packed`.
    static func packedCount(cout: Int, cin: Int) -> Int { tessera_engine_conv_packed_count(Int32(cout), Int32(cin)) }

    /// `C (m x n) = A (m x k, packed by packEntries) * B (k x n)`, row strides `ldb` / `ldc`.
    static func gemm(isa: Int32, packed: UnsafePointer<Float>, m: Int, k: Int, b: UnsafePointer<Float>, ldb: Int, n: Int,
                     c: UnsafeMutablePointer<Float>, ldc: Int) {
        tessera_engine_sgemm_packed(isa, packed, Int32(m), Int32(k), b, ldb, Int32(n), c, ldc)
    }

    /// Packs transformed weights `[entries][cout][cin]` entry by entry into 8-output-channel blocks
    /// (the transform-domain GEMMs run on the direct conv's register tile, not OpenBLAS).
    static func packEntries(_ u: [Float], cout: Int, cin: Int) -> [Float] {
        let entries = u.count / (cout * cin), per = packedCount(cout: cout, cin: cin)
        var out = [Float](repeating: 0, count: per * entries)
        u.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for e in 0..<entries {
                    tessera_engine_conv_pack(src.baseAddress! + e * cout * cin, Int32(cout), Int32(cin), dst.baseAddress! + e * per)
                }
            }
        }
        return out
    }

    /// (output tile size, transform entries) of the step's variant.
    static func shape(_ c: ConvStep) -> (Int, Int) { c.kind == .winograd43 ? (4, 36) : (2, 16) }

    static func scratchFloats(_ c: ConvStep, nb: Int, _ o: EngineOptions) -> Int {
        let g = c.window
        let (m, e) = shape(c)
        let tiles = nb * ((g.oh + m - 1) / m) * ((g.ow + m - 1) / m)
        return e * (c.cin + c.cout) * tileChunk(entries: e, cin: c.cin, cout: c.cout, tiles: tiles, chunkFloats: o.winogradChunkFloats) + 64 // + vector overrun
    }

    /// Whether Winograd beats the direct kernel for a micro-batch of `nb` images: its 16/36
    /// GEMMs need enough tiles and channels (measured on resnet18 / compact CNNs: few tiles or
    /// narrower layers are faster direct; 32-channel layers became faster as Winograd once
    /// the chunks fit L2). ``EngineOptions/forceWinograd`` (tests) always says yes.
    static func worthIt(_ c: ConvStep, nb: Int, _ o: EngineOptions) -> Bool {
        guard c.directWeights != nil, !o.forceWinograd else { return true }
        return enoughWork(c, nb: nb, o)
    }

    /// The tile and channel thresholds of ``worthIt(_:nb:)`` alone (no test override).
    static func enoughWork(_ c: ConvStep, nb: Int, _ o: EngineOptions) -> Bool {
        let g = c.window
        let (mt, _) = shape(c)
        let tiles = nb * ((g.oh + mt - 1) / mt) * ((g.ow + mt - 1) / mt)
        let ch = min(c.cin, c.cout)
        let minTiles = o.winogradMinTiles
        // A narrow output behind a wide input (DenseNet's 128 -> 32) on a small map spends its time
        // in the input transform: direct is faster (AVX2, per 4 images: 14 x 14 29.5 -> 19.0 ms,
        // 7 x 7 8.6 -> 4.0; on 28 x 28 Winograd still wins). At AVX-512 DenseNet-121 then takes
        // micro-batches of 4: 2 threads, batch 16, 55.0-55.9 -> 57.9-58.1 img/s.
        if c.cout <= 32 && c.cin >= 4 * c.cout && g.oh * g.ow < 512 { return false }
        return (ch >= o.winogradMinChannels && tiles >= minTiles) || (ch >= 384 && tiles >= minTiles / 4)
    }

    // Defaults of the thresholds (EngineOptions): fewest tiles 64 since the transform-domain GEMMs run on the packed AVX-512 tile (256 with OpenBLAS):
    /// batch 64 on 1 thread, compact_cnn_96 606 -> 693 img/s, compact_cnn_224 121 -> 144, resnet18
    /// equal; batch 1 equal or faster (resnet18_224 40.7 -> 45.0).
    // Fewest input / output channels 32 since chunks are sized for L2 (compact_cnn_96 batch 64,
    // 1 thread: 738 -> 897 img/s).

    /// Runs the convolution; with `par.lanes > 1` the tiles (many) or the transform-domain
    /// GEMMs (few tiles) are split across threads, lane `i` using `scratch(i)`.
    static func run(_ c: ConvStep, _ o: EngineOptions, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                    residual: UnsafePointer<Float>?, nb: Int, par: IntraOp,
                    scratch: (Int) -> UnsafeMutablePointer<Float>) {
        let g = c.window
        let (mt, _) = shape(c)
        let tiles = nb * ((g.oh + mt - 1) / mt) * ((g.ow + mt - 1) / mt)
        if par.lanes > 1 && tiles >= par.lanes * 32 {
            par.ranges(tiles, grain: 16, piecesPerLane: 2) { lane, r in
                runTiles(c, o, isa: isa, x: x, y: y, residual: residual, nb: nb, tiles: r, scratch: scratch(lane), par: IntraOp(lanes: 1))
            }
        } else {
            runTiles(c, o, isa: isa, x: x, y: y, residual: residual, nb: nb, tiles: 0..<tiles, scratch: scratch(0), par: par)
        }
        if ConvKernels.clampBounds(c.activation) == nil {
            Epilogue.apply(c.activation, y, c.cout * nb * g.oh * g.ow)
        }
    }

    /// Tiles `range` in chunks; `par` splits each chunk's GEMMs over the transform entries.
    static func runTiles(_ c: ConvStep, _ o: EngineOptions, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                         residual: UnsafePointer<Float>?, nb: Int, tiles range: Range<Int>,
                         scratch: UnsafeMutablePointer<Float>, par: IntraOp) {
        let g = c.window
        let (mt, entries) = shape(c)
        let th = (g.oh + mt - 1) / mt, tw = (g.ow + mt - 1) / mt
        let tiles = nb * th * tw
        let cin = c.cin, cout = c.cout
        let chunk = tileChunk(entries: entries, cin: cin, cout: cout, tiles: tiles, chunkFloats: o.winogradChunkFloats)
        let v = scratch, m = scratch + entries * cin * chunk
        let (lo, hi) = ConvKernels.clampBounds(c.activation) ?? (-.infinity, .infinity)
        c.weights.withUnsafeBufferPointer { ubuf in
            let u = ubuf.baseAddress!
            var t0 = range.lowerBound
            while t0 < range.upperBound {
                let tc = min(chunk, range.upperBound - t0)
                if entries == 36 {
                    tessera_engine_wino43_input(isa, x, Int32(nb), Int32(cin), Int32(g.h), Int32(g.w), Int32(g.pt), Int32(g.pl),
                                                Int32(th), Int32(tw), t0, tc, v)
                } else {
                    tessera_engine_wino_input(isa, x, Int32(nb), Int32(cin), Int32(g.h), Int32(g.w), Int32(g.pt), Int32(g.pl),
                                              Int32(th), Int32(tw), t0, tc, v)
                }
                // entries GEMMs: M[e] = U[e] (cout x cin, packed in 8-row blocks) * V[e] (cin x tc).
                let per = packedCount(cout: cout, cin: cin)
                par.ranges(entries) { _, es in
                    for e in es {
                        gemm(isa: isa, packed: u + e * per, m: cout, k: cin, b: v + e * cin * tc, ldb: tc, n: tc,
                             c: m + e * cout * tc, ldc: tc)
                    }
                }
                c.bias.withUnsafeBufferPointer { bias in
                    if entries == 36 {
                        tessera_engine_wino43_output(isa, m, Int32(nb), Int32(cout), Int32(g.oh), Int32(g.ow), Int32(th), Int32(tw),
                                                     t0, tc, bias.baseAddress!, residual, lo, hi, y)
                    } else {
                        tessera_engine_wino_output(isa, m, Int32(nb), Int32(cout), Int32(g.oh), Int32(g.ow), Int32(th), Int32(tw),
                                                   t0, tc, bias.baseAddress!, residual, lo, hi, y)
                    }
                }
                t0 += tc
            }
        }
    }
}
