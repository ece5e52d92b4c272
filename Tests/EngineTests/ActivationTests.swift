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
}
