import Foundation
import CEngineKernels
import LinearAlgebra
import Synchronization

/// One worker's memory: the activation arena and the im2col scratch, sized once for a
/// maximum micro-batch. Owned by exactly one ``Session`` and used by one thread at a time.
final class Workspace {
    let capacity: Int
    /// Threads that may cooperate inside one step (each gets its own scratch slice).
    let lanes: Int
    let arena: UnsafeMutablePointer<Float>
    let arenaCount: Int
    let scratch: UnsafeMutablePointer<Float>
    /// Scratch floats per lane.
    let scratchCount: Int
    /// The quantised input of the current int8 step, and a second buffer for chained int8 layers
    /// (a layer writes the next one's quantised input while reading its own, see ``Q8Link``).
    let bytes: UnsafeMutablePointer<UInt8>
    let bytes2: UnsafeMutablePointer<UInt8>

    init(program: Program, capacity: Int, lanes: Int = 1) {
        self.capacity = capacity
        self.lanes = max(1, lanes)
        arenaCount = max(16, program.arenaUnits * capacity)
        arena = .allocate(capacity: arenaCount)
        arena.initialize(repeating: 0, count: arenaCount)
        var need = 16
        for case let .conv(c) in program.steps {
            let total = capacity * c.window.oh * c.window.ow
            if c.kind == .gemm { need = max(need, c.k * ConvKernels.columnChunk(k: c.k, total: total)) }
            if c.kind == .winograd || c.kind == .winograd43 { need = max(need, Winograd.scratchFloats(c, nb: capacity, program.options)) }
        }
        var byteNeed = 64
        for step in program.steps {
            if case let .conv(c) = step, c.q8 != nil { byteNeed = max(byteNeed, Quantized.inputBytes(c, nb: capacity)) }
            if case let .gemm(g) = step, g.q8 != nil { byteNeed = max(byteNeed, Quantized.inputBytes(g, nb: capacity)) }
            if case let .conv(c) = step, c.bf16 != nil { byteNeed = max(byteNeed, BF16.inputBytes(c, nb: capacity)) }
            if case let .gemm(g) = step, g.bf16 != nil { byteNeed = max(byteNeed, BF16.inputBytes(g, nb: capacity)) }
            if case let .conv(c) = step, let t = c.q8Link.output { byteNeed = max(byteNeed, t.bytes(nb: capacity)) }
            if case let .pool(p) = step, let t = p.q8Link.output { byteNeed = max(byteNeed, t.bytes(nb: capacity)) }
        }
        let chained = program.steps.contains { if case let .conv(c) = $0 { c.q8Link.output != nil } else { false } }
        bytes = .allocate(capacity: byteNeed)
        bytes.initialize(repeating: 0, count: byteNeed)
        bytes2 = .allocate(capacity: chained ? byteNeed : 64)
        bytes2.initialize(repeating: 0, count: chained ? byteNeed : 64)
        scratchCount = (need + 15) / 16 * 16
        scratch = .allocate(capacity: scratchCount * self.lanes)
        scratch.initialize(repeating: 0, count: scratchCount * self.lanes)
    }

    /// Byte buffer `i` (0 or 1, see ``Q8Link``).
    func byteBuffer(_ i: Int) -> UnsafeMutablePointer<UInt8> { i == 0 ? bytes : bytes2 }

    /// Lane `i`'s scratch.
    func scratch(_ lane: Int) -> UnsafeMutablePointer<Float> { scratch + lane * scratchCount }

    deinit {
        arena.deallocate()
        scratch.deallocate()
        bytes.deallocate()
        bytes2.deallocate()
    }
}

/// Splits the work of one step across `lanes` threads (used when a batch is a single
/// micro-batch, so the Session's other cores would otherwise idle).
struct IntraOp {
    let lanes: Int
    /// Helper threads that poll between steps (see ``LaneTeam``); nil: Dispatch workers.
    var team: LaneTeam? = nil

    /// Calls `body(lane, range)` on pieces of `0..<n` (boundaries are multiples of `grain`).
    /// With several lanes the pieces (up to `piecesPerLane` per lane) are handed out
    /// dynamically to `lanes` concurrent workers, so a lane slowed by other load on its core
    /// takes fewer pieces; `lane` identifies the worker (for per-lane scratch).
    func ranges(_ n: Int, grain: Int = 1, piecesPerLane: Int = 4, _ body: (Int, Range<Int>) -> Void) {
        let units = (n + grain - 1) / grain
        let workers = min(lanes, units)
        if workers <= 1 { body(0, 0..<n); return }
        let pieces = min(units, workers * max(1, piecesPerLane))
        if let team, team.lanes == lanes {
            team.run(n: n, units: units, grain: grain, pieces: pieces, body)
            return
        }
        let next = Atomic<Int>(0)
        withoutActuallyEscaping(body) { body in
            let shared = SharedBody(body: body)
            DispatchQueue.concurrentPerform(iterations: workers) { lane in
                while true {
                    let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    if i >= pieces { break }
                    let lo = min(n, units * i / pieces * grain), hi = min(n, units * (i + 1) / pieces * grain)
                    shared.body(lane, lo..<hi)
                }
            }
        }
    }
}

/// `@unchecked Sendable`: the pieces handed to the lanes write disjoint parts of the step's
/// output (and per-lane scratch), and `concurrentPerform` returns only when all are done.
private struct SharedBody: @unchecked Sendable {
    let body: (Int, Range<Int>) -> Void
}

/// Runs a ``Program`` on one micro-batch inside a ``Workspace``.
struct Executor {
    let program: Program
    let ws: Workspace
    let nb: Int
    /// Intra-step parallelism (lanes <= `ws.lanes`).
    var par = IntraOp(lanes: 1)

    /// Steps with less work than this (FLOPs; default ~60 us on one core) are not split: waking the
    /// other lane costs tens of microseconds on this VM (tessera-crc-compact b1 measured slower).
    var minSplitFlops: Double { program.options.splitMinFlops }
    var isa: Int32 { program.isa }

    func ptr(_ v: Int) -> UnsafeMutablePointer<Float> { ws.arena + program.slots[v].offset * nb }

    /// Copies NCHW `src` (nb images) into the slot's layout.
    func load(_ v: Int, from src: UnsafePointer<Float>) {
        let s = program.slots[v], dst = ptr(v)
        if !s.channelMajor || nb == 1 { dst.update(from: src, count: s.count * nb); return }
        let c = s.channels, sp = s.spatial
        for b in 0..<nb { for ch in 0..<c {
            (dst + (ch * nb + b) * sp).update(from: src + (b * c + ch) * sp, count: sp)
        } }
    }

    /// Copies the slot into NCHW `dst`.
    func store(_ v: Int, to dst: UnsafeMutablePointer<Float>) {
        let s = program.slots[v], src = ptr(v)
        if !s.channelMajor || nb == 1 { dst.update(from: src, count: s.count * nb); return }
        let c = s.channels, sp = s.spatial
        for b in 0..<nb { for ch in 0..<c {
            (dst + (b * c + ch) * sp).update(from: src + (ch * nb + b) * sp, count: sp)
        } }
    }

    func tensor(_ v: Int) -> Tensor {
        let s = program.slots[v]
        var data = [Float](repeating: 0, count: s.count * nb)
        data.withUnsafeMutableBufferPointer { store(v, to: $0.baseAddress!) }
        return Tensor(shape: s.fullShape(nb), data: data)
    }

    /// Runs every step; `observe(i)` is called before step `i` (calibration reads its inputs).
    func run(input: UnsafePointer<Float>, observe: ((Int) -> Void)? = nil) throws {
        if program.directInputStep == nil { load(program.inputValue, from: input) }
        for (i, step) in program.steps.enumerated() {
            observe?(i)
            try execute(step, nchwInput: i == program.directInputStep ? input : nil)
        }
    }

    /// Runs the program `rounds` times after one warm-up and returns each step's label and its
    /// fastest wall time (single worker, for profiling).
    func profile(input: UnsafePointer<Float>, rounds: Int = 5) throws -> [(String, Double)] {
        var best = [Double](repeating: .infinity, count: program.steps.count)
        for round in 0...max(1, rounds) {
            if program.directInputStep == nil { load(program.inputValue, from: input) }
            for (i, step) in program.steps.enumerated() {
                let t0 = DispatchTime.now().uptimeNanoseconds
                try execute(step, nchwInput: i == program.directInputStep ? input : nil)
                let t1 = DispatchTime.now().uptimeNanoseconds
                if round > 0 { best[i] = min(best[i], Double(t1 - t0) / 1e9) }
            }
        }
        return program.steps.enumerated().map { ($1.label(program, nb: nb), best[$0]) }
    }

    /// Executes one step. `nchwInput`: the step's input is the batch's NCHW input itself
    /// (only for a pool that is the input's sole consumer, see `Program.directInputStep`).
    func execute(_ step: Step, nchwInput: UnsafePointer<Float>? = nil) throws {
        switch step {
        case let .conv(c):
            let residual = c.residual.map { UnsafePointer(ptr($0)) }
            let x = UnsafePointer(ptr(c.input)), y = ptr(c.output)
            let g = c.window
            let total = nb * g.oh * g.ow
            // Waking another thread costs more than a step this small gains from it.
            let par = Double(2 * total * c.cout * c.k) >= minSplitFlops ? self.par : IntraOp(lanes: 1)
            if let l = c.bf16 {
                BF16.conv(c, l, isa: isa, x: x, y: y, residual: residual, nb: nb, bytes: ws.bytes, par: par)
                return
            }
            if let q = c.q8 {
                Quantized.conv(c, q, isa: isa, x: x, y: y, residual: residual, nb: nb, bytes: ws.byteBuffer, par: par)
                return
            }
            switch c.kind {
            case .winograd where Winograd.worthIt(c, nb: nb, program.options),
                 .winograd43 where Winograd.worthIt(c, nb: nb, program.options):
                Winograd.run(c, program.options, isa: isa, x: x, y: y, residual: residual, nb: nb, par: par, scratch: { ws.scratch($0) })
            case .depthwise:
                par.ranges(c.cout * nb, grain: 16) { _, planes in
                    ConvKernels.depthwise(c, isa: isa, x: x, y: y, residual: residual, nb: nb, planes: planes)
                }
            case .direct, .winograd, .winograd43:
                // Few output rows (batch 1, small maps): split output channels instead.
                if par.lanes > 1 && nb * g.oh < par.lanes * 4 && c.cout >= 16 {
                    par.ranges(c.cout, grain: 8) { _, channels in
                        ConvKernels.direct(c, program.options, isa: isa, x: x, y: y, residual: residual, nb: nb, outRows: 0..<(nb * g.oh), channels: channels)
                    }
                } else {
                    // Whole bands: each piece rebuilds its padded input rows and its 48-column tiles
                    // straddle the band end, so pieces of fewer than ~8 rows lose efficiency.
                    let rowsTotal = nb * g.oh
                    let perLane = max(1, min(4, rowsTotal / (par.lanes * 8)))
                    par.ranges(rowsTotal, piecesPerLane: perLane) { _, outRows in
                        ConvKernels.direct(c, program.options, isa: isa, x: x, y: y, residual: residual, nb: nb, outRows: outRows, channels: 0..<c.cout)
                    }
                }
            case .pointwise where c.directWeights != nil:
                if par.lanes > 1 && total < par.lanes * 256 && c.cout >= 16 {
                    par.ranges(c.cout, grain: 8) { _, channels in
                        ConvKernels.pointwise(c, isa: isa, x: x, y: y, residual: residual, nb: nb, columns: 0..<total, channels: channels)
                    }
                } else {
                    par.ranges(total, grain: 48) { _, columns in
                        ConvKernels.pointwise(c, isa: isa, x: x, y: y, residual: residual, nb: nb, columns: columns, channels: 0..<c.cout)
                    }
                }
            case .pointwise where par.lanes > 1 && total < par.lanes * 256 && c.cout >= 2 * par.lanes:
                par.ranges(c.cout, grain: 8) { _, rows in
                    ConvKernels.pointwiseRows(c, x: x, y: y, residual: residual, nb: nb, rows: rows)
                }
            case .gemm, .pointwise:
                par.ranges(total, grain: 64) { lane, cols in
                    ConvKernels.gemmConv(c, x: x, y: y, residual: residual, nb: nb, scratch: ws.scratch(lane), columns: cols)
                }
            }
        case let .channels(sources, input, output):
            let run = program.slots[input].spatial * nb, x = ptr(input), y = ptr(output)
            for (k, source) in sources.enumerated() { (y + k * run).update(from: x + source * run, count: run) }
        case let .groupNorm(g):
            groupNorm(g)
        case let .resize(r):
            resize(r)
        case let .pool(p) where p.q8Link.output != nil:
            let work = Double(program.slots[p.input].channels * nb * p.window.oh * p.window.ow * p.window.kh * p.window.kw)
            Quantized.maxPool(p, nb: nb, bytes: ws.byteBuffer, par: work >= minSplitFlops ? self.par : IntraOp(lanes: 1))
        case let .pool(p):
            let s = program.slots[p.input]
            let x = nchwInput ?? UnsafePointer(ptr(p.input)), y = ptr(p.output)
            let nchw = nchwInput != nil && nb > 1 ? s.channels : 0
            let work = Double(s.channels * nb * p.window.oh * p.window.ow * p.window.kh * p.window.kw)
            let par = work >= minSplitFlops ? self.par : IntraOp(lanes: 1)
            par.ranges(s.channels * nb) { _, planes in
                ConvKernels.pool(p, isa: isa, x: x, y: y, nb: nb, planes: planes, nchwChannels: nchw)
            }
        case let .globalPool(isMax, input, output):
            let s = program.slots[input], x = ptr(input), y = ptr(output)
            let c = s.channels, sp = s.spatial, outCM = program.slots[output].channelMajor
            if outCM {
                ConvKernels.globalPool(isa: isa, x: x, planes: c * nb, spatial: sp, isMax: isMax, y: y)
            } else {
                // planes come out (channel, image); the value is stored [nb, C]
                let means = UnsafeMutablePointer<Float>.allocate(capacity: c * nb)
                defer { means.deallocate() }
                ConvKernels.globalPool(isa: isa, x: x, planes: c * nb, spatial: sp, isMax: isMax, y: means)
                for ch in 0..<c { for b in 0..<nb { y[b * c + ch] = means[ch * nb + b] } }
            }
        case let .activation(act, input, output):
            let n = program.slots[input].count * nb
            let y = ptr(output)
            if input != output { y.update(from: ptr(input), count: n) }
            Epilogue.apply(act, y, n)
        case let .channelAffine(scale, shift, lo, hi, input, output):
            let s = program.slots[input], x = ptr(input), y = ptr(output)
            let c = s.channels, sp = s.spatial
            if s.channelMajor {
                for ch in 0..<c {
                    let a = scale[ch], b = shift[ch], n = nb * sp, base = ch * n
                    for i in 0..<n { y[base + i] = min(max(x[base + i] * a + b, lo), hi) }
                }
            } else {
                for b in 0..<nb { for ch in 0..<c { y[b * c + ch] = min(max(x[b * c + ch] * scale[ch] + shift[ch], lo), hi) } }
            }
        case let .binary(op, lhs, kind, swapped, output):
            binary(op, lhs: lhs, kind: kind, swapped: swapped, output: output)
        case let .concat(inputs, output):
            var y = ptr(output)
            for v in inputs {
                let n = program.slots[v].count * nb
                y.update(from: ptr(v), count: n)
                y += n
            }
        case let .relayout(input, output):
            let si = program.slots[input], so = program.slots[output]
            let x = ptr(input), y = ptr(output)
            let same = (!si.channelMajor && !so.channelMajor) || (si.channelMajor && so.channelMajor && si.channels == so.channels) || nb == 1
            if same { y.update(from: x, count: si.count * nb); break }
            // Through NCHW order: element i of image b. Runs that stay inside one plane of both
            // layouts are contiguous in both: copied whole.
            let count = si.count
            func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
            let run = max(1, gcd(si.channelMajor ? si.spatial : count, so.channelMajor ? so.spatial : count))
            for b in 0..<nb { for i in stride(from: 0, to: count, by: run) {
                let src = si.channelMajor ? ((i / si.spatial) * nb + b) * si.spatial + i % si.spatial : b * count + i
                let dst = so.channelMajor ? ((i / so.spatial) * nb + b) * so.spatial + i % so.spatial : b * count + i
                (y + dst).update(from: x + src, count: run)
            } }
        case let .transpose(perm, input, output):
            transpose(perm, input: input, output: output)
        case let .pad(before, value, input, output):
            pad(before, value: value, input: input, output: output)
        case let .wholeBinary(op, lhs, ls, rhs, rs, shape, output):
            func with(_ o: Operand, _ body: (UnsafePointer<Float>) -> Void) {
                switch o {
                case let .value(v): body(ptr(v))
                case let .constant(t): t.data.withUnsafeBufferPointer { body($0.baseAddress!) }
                }
            }
            let y = ptr(output)
            with(lhs) { a in with(rhs) { b in Self.wholeBinary(op, a, ls, b, rs, shape, y) } }
        case let .wholeSlice(start, step, inShape, shape, input, output):
            let r = inShape.count
            var inStride = [Int](repeating: 1, count: r)
            for a in stride(from: r - 2, through: 0, by: -1) { inStride[a] = inStride[a + 1] * inShape[a + 1] }
            let base = (0..<r).reduce(0) { $0 + start[$1] * inStride[$1] }
            Self.stridedCopy(x: ptr(input) + base, strides: (0..<r).map { inStride[$0] * step[$0] }, shape: shape, y: ptr(output))
        case let .wholeConcat(outer, runs, inputs, output):
            var y = ptr(output)
            let xs = inputs.map { UnsafePointer(ptr($0)) }
            for o in 0..<outer {
                for (x, run) in zip(xs, runs) {
                    y.update(from: x + o * run, count: run)
                    y += run
                }
            }
        case let .wholeTranspose(perm, shape, input, output):
            wholeTranspose(perm, shape: shape, x: ptr(input), y: ptr(output))
        case let .rowSoftmax(n, input, output):
            let rows = program.slots[input].count * nb / n
            ActivationKernels.softmaxRows(UnsafePointer(ptr(input)), ptr(output), rows: rows, n: n)
        case let .batchedMatMul(count, m, k, n, lhs, rhs, output):
            let a = UnsafePointer(ptr(lhs)), b = UnsafePointer(ptr(rhs)), c = ptr(output)
            let split = Double(2 * count * nb * m * k * n) >= minSplitFlops ? par : IntraOp(lanes: 1)
            let onTile = program.options.directConvolution && isa >= Int32(CPUISA.avx512.rawValue)
            split.ranges(count * nb) { _, range in
                for i in range {
                    // The engine's tile at the AVX-512 level (OpenBLAS is at its Haswell kernels on the
                    // Zen 5 VM); OpenBLAS below it.
                    if onTile {
                        tessera_engine_matmul(isa, a + i * m * k, Int32(m), Int32(k), b + i * k * n, Int32(n), c + i * m * n)
                        continue
                    }
                    BLAS.sgemm(m: m, n: n, k: k, a: a + i * m * k, lda: max(k, 1), b: b + i * k * n, ldb: max(n, 1),
                               c: c + i * m * n, ldc: max(n, 1))
                }
            }
        case let .layerNorm(eps, scale, shift, input, output):
            let x = ptr(input), y = ptr(output), e = scale.count
            let rows = program.slots[input].count * nb / e, inv = 1 / Float(e)
            let split = Double(8 * rows * e) >= minSplitFlops ? par : IntraOp(lanes: 1)
            scale.withUnsafeBufferPointer { sp in shift.withUnsafeBufferPointer { hp in
                split.ranges(rows, grain: 8) { _, range in for r in range {
                    let xr = x + r * e, yr = y + r * e
                    var mean: Float = 0
                    for j in 0..<e { mean += xr[j] }
                    mean *= inv
                    var v: Float = 0
                    for j in 0..<e { let d = xr[j] - mean; v += d * d }
                    let k = 1 / (v * inv + eps).squareRoot()
                    for j in 0..<e { yr[j] = (xr[j] - mean) * k * sp[j] + hp[j] }
                } }
            } }
        case let .gemm(g) where g.bf16 != nil:
            let split = Double(2 * nb * g.n * g.k) >= minSplitFlops ? par : IntraOp(lanes: 1)
            BF16.gemm(g, g.bf16!, isa: isa, x: UnsafePointer(ptr(g.input)), y: ptr(g.output), nb: nb, bytes: ws.bytes, par: split)
        case let .gemm(g) where g.q8 != nil:
            let split = Double(2 * nb * g.n * g.k) >= minSplitFlops ? par : IntraOp(lanes: 1)
            Quantized.gemm(g, g.q8!, isa: isa, x: UnsafePointer(ptr(g.input)), y: ptr(g.output), nb: nb, bytes: ws.bytes, par: split)
        case let .gemm(g) where !g.panels.isEmpty:
            let x = UnsafePointer(ptr(g.input)), y = ptr(g.output)
            let m = nb * g.rows, n = g.n, k = g.k
            let split = Double(2 * m * n * k) >= minSplitFlops ? par : IntraOp(lanes: 1)
            g.panels.withUnsafeBufferPointer { pp in g.bias.withUnsafeBufferPointer { bp in
                let panels = pp.baseAddress!, bias = bp.baseAddress!
                if m >= 64 * split.lanes {
                    split.ranges(m, grain: 16) { _, rows in
                        tessera_engine_gemm_rows(isa, x + rows.lowerBound * k, Int32(rows.count), Int32(k), panels, Int32(n),
                                                 0, Int32(n), bias, y + rows.lowerBound * n)
                        Epilogue.apply(g.activation, y + rows.lowerBound * n, rows.count * n)
                    }
                } else {
                    split.ranges((n + 47) / 48) { _, blocks in
                        tessera_engine_gemm_rows(isa, x, Int32(m), Int32(k), panels, Int32(n), Int32(blocks.lowerBound * 48),
                                                 Int32(min(n, blocks.upperBound * 48)), bias, y)
                    }
                    Epilogue.apply(g.activation, y, m * n)
                }
            } }
        case let .gemm(g):
            let x = UnsafePointer(ptr(g.input)), y = ptr(g.output)
            let m = nb * g.rows
            g.weights.withUnsafeBufferPointer { w in g.bias.withUnsafeBufferPointer { bias in
                let wp = w.baseAddress!, bp = bias.baseAddress!
                func epilogue(_ rows: Range<Int>) {
                    for r in rows {
                        let row = y + r * g.n
                        for j in 0..<g.n { row[j] += bp[j] }
                        Epilogue.apply(g.activation, row, g.n)
                    }
                }
                let split = Double(2 * m * g.n * g.k) >= minSplitFlops ? par : IntraOp(lanes: 1)
                if m >= 64 * split.lanes {
                    // Many rows (tokens, NHWC pixels): split the rows, each lane one product and
                    // its rows' bias and activation.
                    split.ranges(m, grain: 16) { _, rows in
                        BLAS.sgemm(transB: true, m: rows.count, n: g.n, k: g.k, a: x + rows.lowerBound * g.k, lda: g.k,
                                   b: wp, ldb: g.k, c: y + rows.lowerBound * g.n, ldc: g.n)
                        epilogue(rows)
                    }
                } else {
                    split.ranges(g.n, grain: 16) { _, cols in
                        BLAS.sgemm(transB: true, m: m, n: cols.count, k: g.k, a: x, lda: g.k, b: wp + cols.lowerBound * g.k,
                                   ldb: g.k, c: y + cols.lowerBound, ldc: g.n)
                    }
                    epilogue(0..<m)
                }
            } }
        case let .fallback(node, inputs, outputs, opset):
            let ins: [Tensor?] = inputs.map { operand in
                switch operand {
                case nil: nil
                case let .constant(t)?: t
                case let .value(v)?: tensor(v)
                }
            }
            let outs = try Reference.evaluate(node, ins, opset: opset)
            for (v, t) in zip(outputs, outs) {
                guard t.shape == program.slots[v].fullShape(nb) else {
                    throw node.error("produced shape \(t.shape), planned \(program.slots[v].fullShape(nb))")
                }
                t.data.withUnsafeBufferPointer { load(v, from: $0.baseAddress!) }
            }
        }
    }

    /// Group (instance) normalisation: statistics in Double per (image, group), one pass to
    /// normalise with the per-channel affine and activation; pieces are (group, image) pairs.
    func groupNorm(_ g: GroupNormStep) {
        let s = program.slots[g.input], x = ptr(g.input), y = ptr(g.output)
        let c = s.channels, sp = s.spatial, per = c / g.groups, nbv = nb
        let work = Double(c * nb * sp * 6)
        let par = work >= minSplitFlops ? self.par : IntraOp(lanes: 1)
        par.ranges(g.groups * nb) { _, pairs in
            for pair in pairs {
                let group = pair / nbv, b = pair % nbv
                var sum = 0.0, squares = 0.0
                for ch in (group * per)..<((group + 1) * per) {
                    let p = x + (ch * nbv + b) * sp
                    var i = 0
                    // Float partial sums over short runs (vectorised), added up in Double.
                    while i < sp {
                        let end = min(sp, i + 1024)
                        var a0: Float = 0, a1: Float = 0
                        for j in i..<end { let v = p[j]; a0 += v; a1 += v * v }
                        sum += Double(a0); squares += Double(a1)
                        i = end
                    }
                }
                let n = Double(per * sp)
                let mean = sum / n
                let variance = max(0, squares / n - mean * mean)
                let rstd = Float(1 / (variance + Double(g.epsilon)).squareRoot())
                for ch in (group * per)..<((group + 1) * per) {
                    let a = rstd * g.scale[ch], bias = g.shift[ch] - Float(mean) * a
                    let p = x + (ch * nbv + b) * sp, q = y + (ch * nbv + b) * sp
                    for j in 0..<sp { q[j] = p[j] * a + bias }
                    Epilogue.apply(g.activation, q, sp)
                }
            }
        }
    }

    /// Separable resize: each output row blends two input rows, each of their columns two columns.
    func resize(_ r: ResizeStep) {
        let s = program.slots[r.input], x = ptr(r.input), y = ptr(r.output)
        let planes = s.channels * nb, oh = r.oh, ow = r.ow
        let work = Double(planes * oh * ow * 6)
        let par = work >= minSplitFlops ? self.par : IntraOp(lanes: 1)
        let isa = self.isa
        par.ranges(planes) { _, range in ConvKernels.resize(r, isa: isa, x: x, y: y, planes: range) }
    }

    /// `y` (row-major, `shape`) = element `sum(i[a] * strides[a])` of `x` for each index `i`;
    /// the last axis is copied as a run where its stride is 1.
    static func stridedCopy(x: UnsafePointer<Float>, strides s: [Int], shape: [Int], y: UnsafeMutablePointer<Float>) {
        let r = shape.count
        guard r > 0 else { y[0] = x[0]; return }
        let inner = shape[r - 1], innerStride = s[r - 1]
        let outer = Array(shape.dropLast()), rows = outer.reduce(1, *)
        var index = [Int](repeating: 0, count: outer.count)
        var src = 0, dst = 0
        for _ in 0..<rows {
            if innerStride == 1 { (y + dst).update(from: x + src, count: inner) }
            else { for j in 0..<inner { y[dst + j] = x[src + j * innerStride] } }
            dst += inner
            var a = outer.count - 1
            while a >= 0 {
                index[a] += 1
                src += s[a]
                if index[a] < outer[a] { break }
                src -= index[a] * s[a]
                index[a] = 0
                a -= 1
            }
        }
    }

    /// `y = a op b` over row-major tensors broadcast to `shape` (operand shapes of the same rank,
    /// 1 where they broadcast).
    static func wholeBinary(_ op: BinaryOp, _ a: UnsafePointer<Float>, _ ash: [Int], _ b: UnsafePointer<Float>, _ bsh: [Int],
                            _ shape: [Int], _ y: UnsafeMutablePointer<Float>) {
        let r = shape.count
        func strides(_ s: [Int]) -> [Int] {
            var st = [Int](repeating: 0, count: r), acc = 1
            for i in stride(from: r - 1, through: 0, by: -1) { st[i] = s[i] == 1 ? 0 : acc; acc *= s[i] }
            return st
        }
        let sa = strides(ash), sb = strides(bsh)
        let inner = r == 0 ? 1 : shape[r - 1], ia = r == 0 ? 0 : sa[r - 1], ib = r == 0 ? 0 : sb[r - 1]
        let outer = r == 0 ? [] : Array(shape.dropLast()), rows = outer.reduce(1, *)
        var index = [Int](repeating: 0, count: outer.count)
        var oa = 0, ob = 0, dst = 0
        @inline(__always) func f(_ p: Float, _ q: Float) -> Float {
            switch op { case .add: p + q; case .sub: p - q; case .mul: p * q; case .div: p / q }
        }
        for _ in 0..<rows {
            let pa = a + oa, pb = b + ob, py = y + dst
            if ia == 1 && ib == 1 {
                switch op {
                case .add: for j in 0..<inner { py[j] = pa[j] + pb[j] }
                case .mul: for j in 0..<inner { py[j] = pa[j] * pb[j] }
                default: for j in 0..<inner { py[j] = f(pa[j], pb[j]) }
                }
            } else if ib == 0 {
                let q = pb[0]
                for j in 0..<inner { py[j] = f(pa[j * ia], q) }
            } else {
                for j in 0..<inner { py[j] = f(pa[j * ia], pb[j * ib]) }
            }
            dst += inner
            var d = outer.count - 1
            while d >= 0 {
                index[d] += 1
                oa += sa[d]; ob += sb[d]
                if index[d] < outer[d] { break }
                oa -= index[d] * sa[d]; ob -= index[d] * sb[d]
                index[d] = 0
                d -= 1
            }
        }
    }

    /// Row-major transpose of a whole tensor of `shape` (output axis `j` is input axis `perm[j]`);
    /// runs of the last axis are copied whole when it stays last.
    func wholeTranspose(_ perm: [Int], shape: [Int], x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let r = shape.count
        var inStride = [Int](repeating: 1, count: r)
        for a in stride(from: r - 2, through: 0, by: -1) { inStride[a] = inStride[a + 1] * shape[a + 1] }
        Self.stridedCopy(x: x, strides: perm.map { inStride[$0] }, shape: perm.map { shape[$0] }, y: y)
    }

    /// Constant Pad of per-image axes between channel-major values: the output is `value`
    /// around the input, placed `before[a]` along axis `a`; the trailing axes that are not padded
    /// (or else the last axis) are copied as one run.
    func pad(_ before: [Int], value: Float, input: Int, output: Int) {
        let si = program.slots[input], so = program.slots[output]
        let x = ptr(input), y = ptr(output)
        let din = si.perImage, dout = so.perImage, r = din.count
        y.update(repeating: value, count: so.count * nb)
        var first = r
        while first > 1, din[first - 1] == dout[first - 1] { first -= 1 }
        let runStart = first == r ? r - 1 : first
        let run = din[runStart...].reduce(1, *)
        var outStride = [Int](repeating: 1, count: r)
        for a in stride(from: r - 2, through: 1, by: -1) { outStride[a] = outStride[a + 1] * dout[a + 1] }
        let middle = Array(din[1..<runStart])
        let rows = middle.reduce(1, *)
        let shift = (1..<r).reduce(0) { $0 + before[$1] * outStride[$1] }
        var index = [Int](repeating: 0, count: middle.count)
        for c in 0..<din[0] {
            for b in 0..<nb {
                let src0 = (c * nb + b) * si.spatial
                var dst = ((c + before[0]) * nb + b) * so.spatial + shift
                for row in 0..<rows {
                    (y + dst).update(from: x + src0 + row * run, count: run)
                    // next middle index (odometer, last axis fastest), moving dst with it
                    var m = middle.count - 1
                    while m >= 0 {
                        index[m] += 1
                        dst += outStride[m + 1]
                        if index[m] < middle[m] { break }
                        dst -= index[m] * outStride[m + 1]
                        index[m] = 0
                        m -= 1
                    }
                }
            }
        }
    }

    /// Output axis `j` is input axis `perm[j]` (per-image axes; both values channel-major, so
    /// axis 0 is outside the batch and the rest inside it).
    func transpose(_ perm: [Int], input: Int, output: Int) {
        let si = program.slots[input], so = program.slots[output]
        let x = ptr(input), y = ptr(output)
        let din = si.perImage, dout = so.perImage, r = din.count
        // Input strides of each per-image axis in the slot, and of the batch.
        var inStride = [Int](repeating: 1, count: r)
        for a in stride(from: r - 2, through: 1, by: -1) { inStride[a] = inStride[a + 1] * din[a + 1] }
        inStride[0] = nb * si.spatial
        let batchIn = si.spatial, batchOut = so.spatial
        let s = perm.map { inStride[$0] }
        let inner = dout[r - 1], innerStride = s[r - 1]
        let middle = Array(dout[1..<(r - 1)])
        let rowsPerPlane = middle.reduce(1, *)
        for o0 in 0..<dout[0] {
            for b in 0..<nb {
                var src = o0 * s[0] + b * batchIn
                var dst = (o0 * nb + b) * batchOut
                var index = [Int](repeating: 0, count: middle.count)
                for _ in 0..<rowsPerPlane {
                    if innerStride == 1 {
                        (y + dst).update(from: x + src, count: inner)
                    } else {
                        for j in 0..<inner { y[dst + j] = x[src + j * innerStride] }
                    }
                    dst += inner
                    // Next middle index (odometer, last middle axis fastest).
                    var a = middle.count - 1
                    while a >= 0 {
                        index[a] += 1
                        src += s[a + 1]
                        if index[a] < middle[a] { break }
                        src -= s[a + 1] * middle[a]
                        index[a] = 0
                        a -= 1
                    }
                }
            }
        }
    }

    func binary(_ op: BinaryOp, lhs: Int, kind: BinaryKind, swapped: Bool, output: Int) {
        let s = program.slots[lhs], a = ptr(lhs), y = ptr(output)
        let total = s.count * nb
        @inline(__always) func f(_ l: Float, _ r: Float) -> Float {
            let (p, q) = swapped ? (r, l) : (l, r)
            switch op { case .add: return p + q; case .sub: return p - q; case .mul: return p * q; case .div: return p / q }
        }
        switch kind {
        case let .same(rhs):
            let r = ptr(rhs)
            switch (op, swapped) {
            case (.add, _): for i in 0..<total { y[i] = a[i] + r[i] }
            case (.mul, _): for i in 0..<total { y[i] = a[i] * r[i] }
            default: for i in 0..<total { y[i] = f(a[i], r[i]) }
            }
        case let .planeScalar(rhs):
            let r = ptr(rhs), sp = s.spatial
            for plane in 0..<(s.channels * nb) {
                let v = r[plane], base = plane * sp
                if op == .mul { for i in 0..<sp { y[base + i] = a[base + i] * v } }
                else { for i in 0..<sp { y[base + i] = f(a[base + i], v) } }
            }
        case let .channelConstant(k):
            if k.count == 1 {
                let v = k[0]
                for i in 0..<total { y[i] = f(a[i], v) }
            } else if s.channelMajor {
                let run = nb * s.spatial
                for ch in 0..<s.channels {
                    let v = k[ch], base = ch * run
                    for i in 0..<run { y[base + i] = f(a[base + i], v) }
                }
            } else {
                let c = s.count
                for b in 0..<nb { for ch in 0..<c { y[b * c + ch] = f(a[b * c + ch], k[ch]) } }
            }
        case let .lastAxisConstant(k):
            let e = k.count
            k.withUnsafeBufferPointer { kp in
                for r in 0..<(total / e) {
                    let base = r * e
                    switch (op, swapped) {
                    case (.add, _): for j in 0..<e { y[base + j] = a[base + j] + kp[j] }
                    case (.mul, _): for j in 0..<e { y[base + j] = a[base + j] * kp[j] }
                    default: for j in 0..<e { y[base + j] = f(a[base + j], kp[j]) }
                    }
                }
            }
        }
    }
}
