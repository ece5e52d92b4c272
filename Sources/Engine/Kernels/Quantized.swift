import CEngineKernels
import Foundation

/// Per-tensor activation ranges measured by running the FP32 model on real tiles: the input of
/// every convolution and dense layer, by ONNX tensor name. Encoded with sorted keys, so the same
/// tiles give the same file.
public struct Calibration: Codable, Sendable, Equatable {
    /// `[min, max]` seen per tensor.
    public var ranges: [String: [Float]]
    /// Images the ranges were measured on.
    public var images: Int

    public init(ranges: [String: [Float]] = [:], images: Int = 0) {
        self.ranges = ranges
        self.images = images
    }

    /// Widens the ranges by those of `other`.
    public mutating func merge(_ other: Calibration) {
        for (name, r) in other.ranges {
            if let old = ranges[name] { ranges[name] = [min(old[0], r[0]), max(old[1], r[1])] } else { ranges[name] = r }
        }
        images += other.images
    }

    /// Deterministic JSON (sorted keys, the floats' shortest round-trip text).
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return try encoder.encode(self)
    }

    public static func decode(_ data: Data) throws -> Calibration {
        do { return try JSONDecoder().decode(Calibration.self, from: data) } catch {
            throw ModelError.invalidArgument("not a calibration file: \(error)")
        }
    }

    /// Quantisation of a range to 0...TESSERA_Q8_MAX (7 bits): scale and zero point (the range always includes 0).
    static func affine(_ r: [Float]) -> (scale: Float, zeroPoint: Int32) {
        let lo = min(r[0], 0), hi = max(r[1], 0)
        let levels = Float(TESSERA_Q8_MAX)
        let scale = max(hi - lo, 1e-8) / levels
        let zp = Int32(min(max((-lo / scale).rounded(), 0), levels))
        return (scale, zp)
    }
}

/// INT8 weights of one convolution or dense layer and the constants of its fused epilogue.
struct Q8Layer: Sendable {
    /// Packed by `tessera_engine_q8_pack`.
    var packed: [Int8]
    /// `zp * sum_k w_q[o][k]`, subtracted from the int32 sums.
    var correction: [Int32]
    /// `s_x * s_w[o]`.
    var scale: [Float]
    var inverseInputScale: Float
    var zeroPoint: Int32
    var taps: Int, cin: Int

    /// Per-output-channel symmetric int8 weights (`w[(o * cin + ci) * taps + t]`), input range `range`.
    init(weights w: [Float], cout: Int, cin: Int, taps: Int, range: [Float]) {
        let (sx, zp) = Calibration.affine(range)
        let per = cin * taps
        var q = [Int8](repeating: 0, count: w.count)
        var scale = [Float](repeating: 0, count: cout), corr = [Int32](repeating: 0, count: cout)
        for o in 0..<cout {
            var m: Float = 0
            for j in 0..<per { m = max(m, abs(w[o * per + j])) }
            let sw = m > 0 ? m / 127 : 1
            var sum: Int32 = 0
            for j in 0..<per {
                let v = Int8(max(-127, min(127, (w[o * per + j] / sw).rounded())))
                q[o * per + j] = v
                sum += Int32(v)
            }
            scale[o] = sx * sw
            corr[o] = zp * sum
        }
        var packed = [Int8](repeating: 0, count: tessera_engine_q8_packed_bytes(Int32(cout), Int32(taps), Int32(cin)))
        q.withUnsafeBufferPointer { src in
            packed.withUnsafeMutableBufferPointer {
                tessera_engine_q8_pack(src.baseAddress!, Int32(cout), Int32(cin), Int32(taps), $0.baseAddress!)
            }
        }
        self.packed = packed
        self.correction = corr
        self.scale = scale
        self.inverseInputScale = 1 / sx
        self.zeroPoint = zp
        self.taps = taps
        self.cin = cin
    }
}

/// Runs the INT8 layers: quantise the input once into the worker's byte scratch, then the tile.
enum Quantized {
    /// Bytes of the quantised input copy of a conv for a micro-batch of `nb`.
    static func inputBytes(_ c: ConvStep, nb: Int) -> Int {
        let g = c.window
        return nb * (g.h + g.pt + g.pb) * (g.w + g.pl + g.pr) * ((c.cin + 3) / 4 * 4) + 64
    }

    static func inputBytes(_ g: GemmStep, nb: Int) -> Int { nb * ((g.k + 3) / 4 * 4) + 64 }

    static func conv(_ c: ConvStep, _ q: Q8Layer, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                     residual: UnsafePointer<Float>?, nb: Int, bytes: UnsafeMutablePointer<UInt8>, par: IntraOp) {
        let g = c.window
        let hp = g.h + g.pt + g.pb, wp = g.w + g.pl + g.pr
        par.ranges(nb) { _, images in
            tessera_engine_q8_quantize(x, 1, Int32(nb), Int32(c.cin), Int32(g.h), Int32(g.w), Int32(g.pt), Int32(g.pl),
                                       Int32(hp), Int32(wp), q.inverseInputScale, q.zeroPoint,
                                       images.lowerBound, images.upperBound, bytes)
        }
        let total = nb * g.oh * g.ow
        let (lo, hi) = ConvKernels.clampBounds(c.activation) ?? (-.infinity, .infinity)
        q.packed.withUnsafeBufferPointer { w in
            q.correction.withUnsafeBufferPointer { corr in
                q.scale.withUnsafeBufferPointer { scale in
                    c.bias.withUnsafeBufferPointer { bias in
                        func run(_ cols: Range<Int>, _ chans: Range<Int>) {
                            tessera_engine_q8_conv(isa, bytes, Int32(hp), Int32(wp), Int32(c.cin), Int32(g.kh), Int32(g.kw),
                                                   Int32(g.sh), Int32(g.sw), Int32(g.dh), Int32(g.dw), Int32(g.oh), Int32(g.ow),
                                                   Int32(c.cout), w.baseAddress!, corr.baseAddress!, scale.baseAddress!,
                                                   bias.baseAddress!, residual, lo, hi, total, cols.lowerBound, cols.upperBound,
                                                   Int32(chans.lowerBound), Int32(chans.upperBound), y, total, 1)
                        }
                        if par.lanes > 1 && total < par.lanes * 64 && c.cout >= 32 {
                            par.ranges(c.cout, grain: 16) { _, chans in run(0..<total, chans) }
                        } else {
                            par.ranges(total, grain: 16) { _, cols in run(cols, 0..<c.cout) }
                        }
                    }
                }
            }
        }
        if ConvKernels.clampBounds(c.activation) == nil { Epilogue.apply(c.activation, y, c.cout * total) }
    }

    /// Dense layer `[nb, k] -> [nb, n]`.
    static func gemm(_ g: GemmStep, _ q: Q8Layer, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                     nb: Int, bytes: UnsafeMutablePointer<UInt8>, par: IntraOp) {
        tessera_engine_q8_quantize(x, 0, Int32(nb), Int32(g.k), 1, 1, 0, 0, 1, 1, q.inverseInputScale, q.zeroPoint,
                                   0, nb, bytes)
        let (lo, hi) = ConvKernels.clampBounds(g.activation) ?? (-.infinity, .infinity)
        q.packed.withUnsafeBufferPointer { w in
            q.correction.withUnsafeBufferPointer { corr in
                q.scale.withUnsafeBufferPointer { scale in
                    g.bias.withUnsafeBufferPointer { bias in
                        par.ranges(g.n, grain: 16) { _, chans in
                            tessera_engine_q8_conv(isa, bytes, 1, 1, Int32(g.k), 1, 1, 1, 1, 1, 1, 1, 1, Int32(g.n),
                                                   w.baseAddress!, corr.baseAddress!, scale.baseAddress!, bias.baseAddress!,
                                                   nil, lo, hi, nb, 0, nb, Int32(chans.lowerBound), Int32(chans.upperBound),
                                                   y, 1, g.n)
                        }
                    }
                }
            }
        }
        if ConvKernels.clampBounds(g.activation) == nil { Epilogue.apply(g.activation, y, nb * g.n) }
    }
}
