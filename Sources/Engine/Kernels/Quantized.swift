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
                     residual: UnsafePointer<Float>?, nb: Int, bytes: (Int) -> UnsafeMutablePointer<UInt8>, par: IntraOp) {
        let g = c.window
        let hp = g.h + g.pt + g.pb, wp = g.w + g.pl + g.pr
        let xq: UnsafeMutablePointer<UInt8>
        if let input = c.q8Link.input {
            xq = bytes(input.buffer)
        } else {
            xq = bytes(0)
            par.ranges(nb) { _, images in
                tessera_engine_q8_quantize(x, 1, Int32(nb), Int32(c.cin), Int32(g.h), Int32(g.w), Int32(g.pt), Int32(g.pl),
                                           Int32(hp), Int32(wp), q.inverseInputScale, q.zeroPoint,
                                           images.lowerBound, images.upperBound, xq)
            }
        }
        if let t = c.q8Link.output { Self.fillBorder(t, nb: nb, bytes: bytes) }
        let target = c.q8Link.output.map { Self.target($0, dual: c.q8Link.dual, bytes: bytes) } ?? tessera_q8_target()
        let total = nb * g.oh * g.ow
        let (lo, hi) = ConvKernels.clampBounds(c.activation) ?? (-.infinity, .infinity)
        q.packed.withUnsafeBufferPointer { w in
            q.correction.withUnsafeBufferPointer { corr in
                q.scale.withUnsafeBufferPointer { scale in
                    c.bias.withUnsafeBufferPointer { bias in
                        withUnsafePointer(to: target) { tp in
                            let tptr = c.q8Link.output == nil ? nil : tp
                            func run(_ cols: Range<Int>, _ chans: Range<Int>) {
                                tessera_engine_q8_conv(isa, xq, Int32(hp), Int32(wp), Int32(c.cin), Int32(g.kh), Int32(g.kw),
                                                       Int32(g.sh), Int32(g.sw), Int32(g.dh), Int32(g.dw), Int32(g.oh), Int32(g.ow),
                                                       Int32(c.cout), w.baseAddress!, corr.baseAddress!, scale.baseAddress!,
                                                       bias.baseAddress!, residual, lo, hi, total, cols.lowerBound, cols.upperBound,
                                                       Int32(chans.lowerBound), Int32(chans.upperBound), y, total, 1, tptr)
                            }
                            Self.split(total: total, cout: c.cout, par: par, run)
                        }
                    }
                }
            }
        }
        if c.q8Link.output == nil, ConvKernels.clampBounds(c.activation) == nil { Epilogue.apply(c.activation, y, c.cout * total) }
    }

    /// The lanes' shares of an int8 / bf16 conv: output pixels in pieces of 16, or output channels when
    /// there are too few pixels for every lane (batch 1, small maps).
    static func split(total: Int, cout: Int, par: IntraOp, _ run: (Range<Int>, Range<Int>) -> Void) {
        if par.lanes > 1 && total < par.lanes * 64 && cout >= 32 {
            par.ranges(cout, grain: 16) { _, chans in run(0..<total, chans) }
        } else {
            par.ranges(total, grain: 16) { _, cols in run(cols, 0..<cout) }
        }
    }

    /// The C view of a layout in a worker's byte buffer.
    static func target(_ t: Q8Layout, dual: Bool = false, bytes: (Int) -> UnsafeMutablePointer<UInt8>) -> tessera_q8_target {
        tessera_q8_target(xq: bytes(t.buffer), hp: Int32(t.hp), wp: Int32(t.wp), pt: Int32(t.pt), pl: Int32(t.pl),
                          c4: Int32(t.c4), inv: t.inverseScale, zp: t.zeroPoint, dual: dual ? 1 : 0)
    }

    /// The padding ring of a layout about to be written (its pixels are written by the producer).
    static func fillBorder(_ t: Q8Layout, nb: Int, bytes: (Int) -> UnsafeMutablePointer<UInt8>) {
        guard t.hp > t.h || t.wp > t.w else { return }
        tessera_engine_q8_fill_border(bytes(t.buffer), Int32(t.channels), Int32(t.h), Int32(t.w), Int32(t.pt), Int32(t.pl),
                                      Int32(t.hp), Int32(t.wp), t.padCode, 0, nb)
    }

    /// A max pool between chained int8 layers, on the codes.
    static func maxPool(_ p: PoolStep, nb: Int, bytes: (Int) -> UnsafeMutablePointer<UInt8>, par: IntraOp) {
        guard let input = p.q8Link.input, let output = p.q8Link.output else { return }
        fillBorder(output, nb: nb, bytes: bytes)
        let target = Self.target(output, bytes: bytes)
        let x = bytes(input.buffer), g = p.window
        par.ranges(nb) { _, images in
            withUnsafePointer(to: target) { tp in
                tessera_engine_q8_maxpool(x, Int32(input.hp), Int32(input.wp), Int32(input.c4), Int32(g.kh), Int32(g.kw),
                                          Int32(g.sh), Int32(g.sw), Int32(g.dh), Int32(g.dw), Int32(g.oh), Int32(g.ow),
                                          tp, images.lowerBound, images.upperBound)
            }
        }
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
                                                   y, 1, g.n, nil)
                        }
                    }
                }
            }
        }
        if ConvKernels.clampBounds(g.activation) == nil { Epilogue.apply(g.activation, y, nb * g.n) }
    }
}

/// A padded pixel-major byte copy in one of a worker's two byte buffers (see ``Q8Link``), with the
/// scale and zero point its codes were made with.
struct Q8Layout: Sendable, Equatable {
    var buffer: Int
    var h: Int, w: Int, pt: Int, pl: Int, hp: Int, wp: Int
    var channels: Int
    var inverseScale: Float
    var zeroPoint: Int32
    /// The code of the padding ring: the zero point before a convolution, 0 before a max pool.
    var padCode: Int32
    var c4: Int { (channels + 3) / 4 * 4 }
    func bytes(nb: Int) -> Int { nb * hp * wp * c4 + 64 }
}

/// INT8 kept between layers (`EngineOptions.int8Chaining`): on a step of a chain, where its input
/// codes are (nil: fp32 in its slot, quantised by the step itself into byte buffer 0) and where it
/// writes its output codes (nil: fp32 into its slot). Links only join adjacent steps, so two byte
/// buffers, used in turn, are enough.
struct Q8Link: Sendable {
    var input: Q8Layout? = nil
    var output: Q8Layout? = nil
    /// With `output`: the fp32 output is written too (it has other readers, or the step adds a residual).
    var dual = false
}

extension Compiler {
    /// Joins adjacent int8 convolutions: A clamp-activated, B reading A's output (or a max pool
    /// read only by B reading it, when A's output has no other reader, A adds no residual and is
    /// not a program output). A then writes B's quantised input (through the pool's byte kernel),
    /// bit for bit the bytes B would have made of A's fp32 output; when that output has other
    /// readers (a ResNet block's output is the next block's residual too) or A adds a residual,
    /// A writes the fp32 output as well and the codes of it (`dual`).
    static func chainInt8(_ steps: [Step], slots: [Slot], protected: Set<Int>) -> [Step] {
        var steps = steps
        var readers = [Int](repeating: 0, count: slots.count)
        for step in steps { for v in step.inputs { readers[v] += 1 } }
        func sole(_ v: Int) -> Bool { readers[v] == 1 && !protected.contains(v) && !slots[v].batchless }
        func layout(of c: ConvStep, buffer: Int) -> Q8Layout {
            let g = c.window
            return Q8Layout(buffer: buffer, h: g.h, w: g.w, pt: g.pt, pl: g.pl, hp: g.h + g.pt + g.pb, wp: g.w + g.pl + g.pr,
                            channels: c.cin, inverseScale: c.q8!.inverseInputScale, zeroPoint: c.q8!.zeroPoint,
                            padCode: c.q8!.zeroPoint)
        }
        func producer(_ i: Int) -> ConvStep? {
            guard case let .conv(a) = steps[i], a.q8 != nil, !slots[a.output].batchless,
                  ConvKernels.clampBounds(a.activation) != nil else { return nil }
            return a
        }
        func consumer(_ i: Int, reads v: Int) -> ConvStep? {
            guard i < steps.count, case let .conv(b) = steps[i], b.q8 != nil, b.input == v, b.residual != v else { return nil }
            return b
        }
        var i = 0
        while i < steps.count {
            guard var a = producer(i) else { i += 1; continue }
            let free = 1 - (a.q8Link.input?.buffer ?? 0)
            let dual = a.residual != nil || !sole(a.output)
            if var b = consumer(i + 1, reads: a.output) {
                let target = layout(of: b, buffer: free)
                a.q8Link.output = target
                a.q8Link.dual = dual
                b.q8Link.input = target
                steps[i] = .conv(a)
                steps[i + 1] = .conv(b)
                i += 1
                continue
            }
            if !dual, i + 2 < steps.count, case var .pool(p) = steps[i + 1], p.isMax, p.input == a.output, sole(p.output),
               var b = consumer(i + 2, reads: p.output) {
                let g = p.window, hp = g.h + g.pt + g.pb, wp = g.w + g.pl + g.pr
                // every window inside the padded input (no ceil-mode overhang): the byte pool does not clip
                if (g.oh - 1) * g.sh + (g.kh - 1) * g.dh < hp, (g.ow - 1) * g.sw + (g.kw - 1) * g.dw < wp {
                    let target = layout(of: b, buffer: 1 - free)
                    // code 0 in the pool's padding: no code is below it, so padding never wins a window
                    let pooled = Q8Layout(buffer: free, h: g.h, w: g.w, pt: g.pt, pl: g.pl, hp: hp, wp: wp, channels: b.cin,
                                          inverseScale: target.inverseScale, zeroPoint: target.zeroPoint, padCode: 0)
                    a.q8Link.output = pooled
                    p.q8Link = Q8Link(input: pooled, output: target)
                    b.q8Link.input = target
                    steps[i] = .conv(a)
                    steps[i + 1] = .pool(p)
                    steps[i + 2] = .conv(b)
                    i += 2
                    continue
                }
            }
            i += 1
        }
        return steps
    }
}

/// BF16 weights of one convolution or dense layer (`EngineOptions.precision == .bf16`): rounded to
/// bfloat16 and packed by `tessera_engine_bf16_pack`; the input is rounded the same way per call,
/// products accumulate in fp32.
struct BF16Layer: Sendable {
    var packed: [UInt16]

    /// `w[(o * cin + ci) * taps + t]`.
    init(weights w: [Float], cout: Int, cin: Int, taps: Int) {
        var packed = [UInt16](repeating: 0, count: tessera_engine_bf16_packed_count(Int32(cout), Int32(taps), Int32(cin)))
        w.withUnsafeBufferPointer { src in
            packed.withUnsafeMutableBufferPointer {
                tessera_engine_bf16_pack(src.baseAddress!, Int32(cout), Int32(cin), Int32(taps), $0.baseAddress!)
            }
        }
        self.packed = packed
    }
}

/// Runs the BF16 layers: round the input once into the worker's byte scratch, then the tile.
enum BF16 {
    static func inputBytes(_ c: ConvStep, nb: Int) -> Int {
        let g = c.window
        return 2 * nb * (g.h + g.pt + g.pb) * (g.w + g.pl + g.pr) * ((c.cin + 1) / 2 * 2) + 64
    }

    static func inputBytes(_ g: GemmStep, nb: Int) -> Int { 2 * nb * ((g.k + 1) / 2 * 2) + 64 }

    static func conv(_ c: ConvStep, _ l: BF16Layer, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                     residual: UnsafePointer<Float>?, nb: Int, bytes: UnsafeMutablePointer<UInt8>, par: IntraOp) {
        let g = c.window
        let hp = g.h + g.pt + g.pb, wp = g.w + g.pl + g.pr
        let xb = UnsafeMutableRawPointer(bytes).assumingMemoryBound(to: UInt16.self)
        par.ranges(nb) { _, images in
            tessera_engine_bf16_convert(isa, x, 1, Int32(nb), Int32(c.cin), Int32(g.h), Int32(g.w), Int32(g.pt), Int32(g.pl),
                                        Int32(hp), Int32(wp), images.lowerBound, images.upperBound, xb)
        }
        let total = nb * g.oh * g.ow
        let (lo, hi) = ConvKernels.clampBounds(c.activation) ?? (-.infinity, .infinity)
        l.packed.withUnsafeBufferPointer { w in
            c.bias.withUnsafeBufferPointer { bias in
                func run(_ cols: Range<Int>, _ chans: Range<Int>) {
                    tessera_engine_bf16_conv(isa, xb, Int32(hp), Int32(wp), Int32(c.cin), Int32(g.kh), Int32(g.kw),
                                             Int32(g.sh), Int32(g.sw), Int32(g.dh), Int32(g.dw), Int32(g.oh), Int32(g.ow),
                                             Int32(c.cout), w.baseAddress!, bias.baseAddress!, residual, lo, hi,
                                             cols.lowerBound, cols.upperBound, Int32(chans.lowerBound), Int32(chans.upperBound),
                                             y, total, 1)
                }
                Quantized.split(total: total, cout: c.cout, par: par, run)
            }
        }
        if ConvKernels.clampBounds(c.activation) == nil { Epilogue.apply(c.activation, y, c.cout * total) }
    }

    /// Dense layer `[nb, k] -> [nb, n]`.
    static func gemm(_ g: GemmStep, _ l: BF16Layer, isa: Int32, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                     nb: Int, bytes: UnsafeMutablePointer<UInt8>, par: IntraOp) {
        let xb = UnsafeMutableRawPointer(bytes).assumingMemoryBound(to: UInt16.self)
        tessera_engine_bf16_convert(isa, x, 0, Int32(nb), Int32(g.k), 1, 1, 0, 0, 1, 1, 0, nb, xb)
        let (lo, hi) = ConvKernels.clampBounds(g.activation) ?? (-.infinity, .infinity)
        l.packed.withUnsafeBufferPointer { w in
            g.bias.withUnsafeBufferPointer { bias in
                par.ranges(g.n, grain: 16) { _, chans in
                    tessera_engine_bf16_conv(isa, xb, 1, 1, Int32(g.k), 1, 1, 1, 1, 1, 1, 1, 1, Int32(g.n), w.baseAddress!,
                                             bias.baseAddress!, nil, lo, hi, 0, nb, Int32(chans.lowerBound), Int32(chans.upperBound),
                                             y, 1, g.n)
                }
            }
        }
        if ConvKernels.clampBounds(g.activation) == nil { Epilogue.apply(g.activation, y, nb * g.n) }
    }
}
