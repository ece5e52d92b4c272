import CEngineKernels
import Foundation
import Testing

/// The vectorised exp-based activations and erf against Double-precision formulas, at every ISA level
/// this CPU has, over the whole float range they see (saturating ends included).
@Suite struct ActivationTests {
    static let levels = (0..<Int32(TESSERA_ISA_COUNT)).filter { tessera_cpu_supports_isa($0) != 0 }

    static func reference(_ kind: Int32, _ x: Double) -> Double {
        switch kind {
        case Int32(TESSERA_ACT_SIGMOID): 1 / (1 + exp(-x))
        case Int32(TESSERA_ACT_SILU): x / (1 + exp(-x))
        case Int32(TESSERA_ACT_ERF): erf(x)
        case Int32(TESSERA_ACT_GELU): 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
        default: x * tanh(log1p(exp(x)))
        }
    }

    @Test(arguments: [Int32(TESSERA_ACT_SIGMOID), Int32(TESSERA_ACT_SILU), Int32(TESSERA_ACT_MISH), Int32(TESSERA_ACT_ERF),
                     Int32(TESSERA_ACT_GELU)])
    func matchesTheFormula(kind: Int32) {
        // A dense sweep of -100...100 plus an odd count, so vector tails are exercised too.
        let inputs = (0...20_001).map { Float(-100 + 0.01 * Double($0)) } + [-1e30, -88, -87.5, 0, 1e-30, 88, 89, 1e30]
        for level in Self.levels {
            var values = inputs
            values.withUnsafeMutableBufferPointer { tessera_engine_activation($0.baseAddress!, $0.count, kind, level) }
            var failures: [String] = []
            for (x, y) in zip(inputs, values) {
                let expected = Self.reference(kind, Double(x))
                // Relative where the value is representable; absolute (1e-35) where it underflows
                // (erf near 0: 1e-7 of x, its float rounding next to x itself; GELU for x < -3:
                // 1e-6 of x, as `1 + erf` cancels there in float, in the graph's own formula too).
                let floor = kind == Int32(TESSERA_ACT_ERF) ? 1e-7 * abs(Double(x)) + 1e-35
                    : kind == Int32(TESSERA_ACT_GELU) ? 1e-6 * abs(Double(x)) + 1e-35 : 1e-35
                if !(abs(Double(y) - expected) <= 2e-6 * abs(expected) + floor) { failures.append("f(\(x)) = \(y), not \(expected)") }
            }
            #expect(failures.isEmpty, "kind \(kind) at ISA level \(level): \(failures.prefix(5))")
        }
    }

    /// `x ** e` for the exponents graphs use (LocalResponseNorm's 2 and -0.75, square roots, odd and
    /// even integer powers of negative values) against Double `pow`, at every ISA level.
    @Test(arguments: [Float(2), -0.75, 0.75, 0.5, -0.5, 3, -1, 1.5, -2, 4, 0, 1])
    func powMatchesTheFormula(exponent: Float) {
        let inputs = (0...20_001).map { Float(-50 + 0.005 * Double($0)) } + [0, 1e-30, 1e30, 1e-3, 7.5e3, -3, -0.25, .nan]
        for level in Self.levels {
            var values = inputs
            values.withUnsafeMutableBufferPointer { tessera_engine_pow($0.baseAddress!, $0.count, exponent, level) }
            var failures: [String] = []
            for (x, y) in zip(inputs, values) {
                let expected = Double(Float(pow(Double(x), Double(exponent))))
                if expected.isNaN { if !y.isNaN { failures.append("\(x) ** \(exponent) = \(y), not NaN") }; continue }
                if expected.isInfinite || Float(expected) == 0 || abs(expected) < 1e-37 {
                    // beyond float's range: infinity or 0 (or the nearest a clamped exp reaches)
                    if !(Double(y) == expected || abs(Double(y)) > 1e37 && expected.isInfinite || abs(Double(y)) < 1e-37) {
                        failures.append("\(x) ** \(exponent) = \(y), not \(expected)")
                    }
                    continue
                }
                if !(abs(Double(y) - expected) <= 2e-6 * abs(expected)) { failures.append("\(x) ** \(exponent) = \(y), not \(expected)") }
            }
            #expect(failures.isEmpty, "exponent \(exponent) at ISA level \(level): \(failures.prefix(5))")
        }
    }
}
