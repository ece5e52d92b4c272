import CEngineKernels
import Foundation
import Testing

/// The vectorised exp-based activations against Double-precision formulas, at every ISA level
/// this CPU has, over the whole float range they see (saturating ends included).
@Suite struct ActivationTests {
    static let levels = (0..<Int32(TESSERA_ISA_COUNT)).filter { tessera_cpu_supports_isa($0) != 0 }

    static func reference(_ kind: Int32, _ x: Double) -> Double {
        switch kind {
        case Int32(TESSERA_ACT_SIGMOID): 1 / (1 + exp(-x))
        case Int32(TESSERA_ACT_SILU): x / (1 + exp(-x))
        default: x * tanh(log1p(exp(x)))
        }
    }

    @Test(arguments: [Int32(TESSERA_ACT_SIGMOID), Int32(TESSERA_ACT_SILU), Int32(TESSERA_ACT_MISH)])
    func matchesTheFormula(kind: Int32) {
        // A dense sweep of -100...100 plus an odd count, so vector tails are exercised too.
        let inputs = (0...20_001).map { Float(-100 + 0.01 * Double($0)) } + [-1e30, -88, -87.5, 0, 1e-30, 88, 89, 1e30]
        for level in Self.levels {
            var values = inputs
            values.withUnsafeMutableBufferPointer { tessera_engine_activation($0.baseAddress!, $0.count, kind, level) }
            var failures: [String] = []
            for (x, y) in zip(inputs, values) {
                let expected = Self.reference(kind, Double(x))
                // Relative where the value is representable; absolute (1e-35) where it underflows.
                if !(abs(Double(y) - expected) <= 2e-6 * abs(expected) + 1e-35) { failures.append("f(\(x)) = \(y), not \(expected)") }
            }
            #expect(failures.isEmpty, "kind \(kind) at ISA level \(level): \(failures.prefix(5))")
        }
    }
}
