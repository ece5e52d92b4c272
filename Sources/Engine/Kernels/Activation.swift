import Foundation

/// Epilogues: bias, residual and activation applied to a run of outputs in place.
enum Epilogue {
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
        case .sigmoid: for j in 0..<n { p[j] = 1 / (1 + exp(-p[j])) }
        case let .hardSigmoid(a, b): for j in 0..<n { p[j] = max(0, min(1, a * p[j] + b)) }
        case .hardSwish: for j in 0..<n { let v = p[j]; p[j] = v * max(0, min(1, v * (1 / 6) + 0.5)) }
        case .silu: for j in 0..<n { let v = p[j]; p[j] = v / (1 + exp(-v)) }
        case .mish: for j in 0..<n { p[j] = mish(p[j]) }
        }
    }

    /// `x * tanh(softplus(x))` with one exp: tanh(log(1 + e)) = n / (n + 2), n = e (e + 2).
    @inline(__always)
    static func mish(_ x: Float) -> Float {
        if x > 20 { return x }
        let e = exp(x), n = e * (e + 2)
        return x * n / (n + 2)
    }
}
