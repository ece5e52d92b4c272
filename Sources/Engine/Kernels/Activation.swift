import CEngineKernels
import Foundation

/// Epilogues: bias, residual and activation applied to a run of outputs in place.
enum Epilogue {
    /// The level the exp-based activations run at: the best this CPU has (their results differ
    /// between levels only by the rounding of fused multiply-adds).
    static let isa = Int32(tessera_cpu_isa_resolve(Int32(TESSERA_ISA_COUNT - 1)))

    /// `p[j] = act(p[j] + bias (+ res[j]))` for `j in 0..<n`.
    @inline(__always)
    static func row(_ p: UnsafeMutablePointer<Float>, _ n: Int, bias: Float, residual: UnsafePointer<Float>?,
                    _ act: Activation) {
        if let residual {
            for j in 0..<n { p[j] = p[j] + bias + residual[j] }
        } else if bias != 0 {
            for j in 0..<n { p[j] += bias }
        }
        apply(act, p, n)
    }

    /// Applies `act` to `n` values in place.
    @inline(__always)
    static func apply(_ act: Activation, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
        switch act {
        case .none: break
        case .relu: for j in 0..<n { p[j] = max(p[j], 0) }
        case let .clip(lo, hi): for j in 0..<n { p[j] = min(max(p[j], lo), hi) }
        case let .leaky(a): for j in 0..<n { let v = p[j]; p[j] = v >= 0 ? v : a * v }
        case .sigmoid: tessera_engine_activation(p, n, Int32(TESSERA_ACT_SIGMOID), isa)
        case let .hardSigmoid(a, b): tessera_engine_hard_activation(p, n, 0, a, b, isa)
        case .hardSwish: tessera_engine_hard_activation(p, n, 1, 1 / 6, 0.5, isa)
        case .silu: tessera_engine_activation(p, n, Int32(TESSERA_ACT_SILU), isa)
        case .mish: tessera_engine_activation(p, n, Int32(TESSERA_ACT_MISH), isa)
        case .erf: tessera_engine_activation(p, n, Int32(TESSERA_ACT_ERF), isa)
        case .gelu: tessera_engine_activation(p, n, Int32(TESSERA_ACT_GELU), isa)
        case let .pow(e): tessera_engine_pow(p, n, e, isa)
        }
    }
}

/// Softmax over rows (the C kernel, exp vectorised as the activations are).
enum ActivationKernels {
    static func softmaxRows(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
        tessera_engine_softmax_rows(x, y, rows, Int32(n), Epilogue.isa)
    }
}
