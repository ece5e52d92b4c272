/// Window geometry of a 2-D convolution or pooling over an NCHW input, shared by the
/// reference ops, shape inference and the optimised kernels.
struct Window2D: Sendable, Equatable {
    var kh: Int, kw: Int
    var sh: Int, sw: Int
    var dh: Int, dw: Int
    var pt: Int, pl: Int, pb: Int, pr: Int
    var h: Int, w: Int
    var oh: Int, ow: Int

    /// Reads kernel_shape/strides/dilations/pads/auto_pad (and ceil_mode for pools) from `node`.
    init(node: Node, h: Int, w: Int, kernel: (Int, Int)?, ceilMode: Bool = false) throws {
        let ks = node.ints("kernel_shape") ?? kernel.map { [$0.0, $0.1] } ?? []
        guard ks.count == 2 else { throw node.error("only 2-D windows are supported (kernel_shape \(ks))") }
        if let kernel, kernel.0 != ks[0] || kernel.1 != ks[1] {
            throw node.error("kernel_shape \(ks) disagrees with the weight shape")
        }
        let strides = node.ints("strides") ?? [1, 1]
        let dilations = node.ints("dilations") ?? [1, 1]
        var pads = node.ints("pads") ?? [0, 0, 0, 0]
        guard strides.count == 2, dilations.count == 2, pads.count == 4,
              strides.allSatisfy({ $0 > 0 }), dilations.allSatisfy({ $0 > 0 }), pads.allSatisfy({ $0 >= 0 }),
              ks.allSatisfy({ $0 > 0 }) else {
            throw node.error("bad strides \(strides) / dilations \(dilations) / pads \(pads) / kernel \(ks)")
        }
        kh = ks[0]; kw = ks[1]; sh = strides[0]; sw = strides[1]; dh = dilations[0]; dw = dilations[1]
        self.h = h; self.w = w
        let autoPad = node.string("auto_pad", "NOTSET")
        switch autoPad {
        case "NOTSET": break
        case "VALID": pads = [0, 0, 0, 0]
        case "SAME_UPPER", "SAME_LOWER":
            let outs = [(h + sh - 1) / sh, (w + sw - 1) / sw]
            let ext = [(kh - 1) * dh + 1, (kw - 1) * dw + 1]
            let ins = [h, w], st = [sh, sw]
            for i in 0..<2 {
                let total = max(0, (outs[i] - 1) * st[i] + ext[i] - ins[i])
                let small = total / 2, big = total - small
                pads[i] = autoPad == "SAME_UPPER" ? small : big
                pads[i + 2] = autoPad == "SAME_UPPER" ? big : small
            }
        default: throw node.error("unknown auto_pad \(autoPad)")
        }
        pt = pads[0]; pl = pads[1]; pb = pads[2]; pr = pads[3]
        let eh = (kh - 1) * dh + 1, ew = (kw - 1) * dw + 1
        func outSize(_ size: Int, _ p0: Int, _ p1: Int, _ e: Int, _ s: Int) -> Int {
            let span = size + p0 + p1 - e
            if span < 0 { return 0 }
            if !ceilMode { return span / s + 1 }
            var o = (span + s - 1) / s + 1
            if (o - 1) * s >= size + p0 { o -= 1 }
            return o
        }
        oh = outSize(h, pt, pb, eh, sh)
        ow = outSize(w, pl, pr, ew, sw)
        guard oh > 0, ow > 0 else { throw node.error("window \(ks) does not fit input \(h)x\(w) with pads \(pads)") }
    }

    /// The output columns `[lo, hi)` whose input column `ox*sw - pl + kx*dw` lies inside `0..<w`.
    @inline(__always)
    func validColumns(kx: Int) -> (Int, Int) {
        let off = kx * dw - pl
        var lo = off >= 0 ? 0 : (-off + sw - 1) / sw
        var hi = w - 1 - off < 0 ? 0 : (w - 1 - off) / sw + 1
        lo = min(lo, ow); hi = min(hi, ow)
        return (lo, max(lo, hi))
    }
}
