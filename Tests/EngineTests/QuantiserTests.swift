import CEngineKernels
import Foundation
import Testing

/// The activation quantiser of the INT8 path (`tessera_engine_q8_quantize`): fp32 planes into the
/// padded pixel-major uint8 copy, q = clamp(round-half-even(x / scale) + zero point, 0, 127).
@Suite struct QuantiserTests {
    /// The rule, one value at a time, as the card and the calibration define it.
    static func rule(_ v: Float, _ inv: Float, _ zp: Int) -> UInt8 {
        let t = Double(v) * Double(inv)
        guard t.isFinite else { return t > 0 ? 127 : 0 }
        let q = Int(max(-1e9, min(1e9, Double(Float(t)).rounded(.toNearestOrEven)))) + zp
        return UInt8(max(0, min(127, q)))
    }

    /// Every shape class the 4-channel x 4-pixel body and the channel and pixel tails take, both
    /// plane orders, padding; values on rounding ties, out of range and huge (a huge positive
    /// activation is the largest code, never wraps to 0).
    @Test(arguments: [(1, 1, 1), (4, 4, 2), (7, 9, 1), (13, 6, 3), (8, 17, 2), (3, 5, 2)])
    func matchesTheRuleOnEveryShape(cin: Int, w: Int, nb: Int) {
        var rng = SystemRandomNumberGenerator()
        for channelMajor in [Int32(0), 1] {
            let h = 3, pt = 1, pl = 2, hp = h + 2, wp = w + 3, zp = 37, c4 = (cin + 3) / 4 * 4
            let inv: Float = 4
            let specials: [Float] = [0.125, -0.125, 0.375, 2.5 / 4, -9.25, 1e30, -1e30, 31.9, 1e6, -0.0]
            let x: [Float] = (0..<(nb * cin * h * w)).map { i in
                i % 3 == 0 ? specials[i / 3 % specials.count] : Float.random(in: -40...40, using: &rng)
            }
            var out = [UInt8](repeating: 255, count: nb * hp * wp * c4)
            tessera_engine_q8_quantize(x, channelMajor, Int32(nb), Int32(cin), Int32(h), Int32(w), Int32(pt),
                                       Int32(pl), Int32(hp), Int32(wp), inv, Int32(zp),
                                       0, nb, &out)
            var mismatches = 0
            for img in 0..<nb {
                for py in 0..<hp {
                    for px in 0..<wp {
                        for c in 0..<c4 {
                            let got = out[((img * hp + py) * wp + px) * c4 + c]
                            let y = py - pt, xx = px - pl
                            let want: UInt8
                            if c >= cin {
                                want = 0
                            } else if y < 0 || y >= h || xx < 0 || xx >= w {
                                want = UInt8(zp)
                            } else {
                                let plane = channelMajor == 1 ? (c * nb + img) : (img * cin + c)
                                want = Self.rule(x[plane * h * w + y * w + xx], inv, zp)
                            }
                            if got != want { mismatches += 1 }
                        }
                    }
                }
            }
            #expect(mismatches == 0, "cin \(cin) w \(w) nb \(nb) channel-major \(channelMajor)")
        }
    }
}
