import COpenBLAS

/// The single owner of OpenBLAS's process-global thread count and the sgemm entry point.
///
/// Nothing else in Tessera calls OpenBLAS. The engine decides *once per run* whether
/// parallelism comes from OpenBLAS threads or from its own Dispatch workers (then
/// OpenBLAS runs single-threaded), and calls ``setThreads(_:)`` accordingly.
public enum BLAS {
    /// Sets the number of OpenBLAS threads (`openblas_set_num_threads`). Process-global.
    public static func setThreads(_ count: Int) {
        let wanted = Int32(max(1, count))
        if openblas_get_num_threads() != wanted { openblas_set_num_threads(wanted) }
    }

    /// The current OpenBLAS thread count (`openblas_get_num_threads`).
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// Row-major single-precision GEMM: `C = alpha * op(A) * op(B) + beta * C`, with
    /// `op(A)` of shape `m x k`, `op(B)` of shape `k x n` and `C` of shape `m x n`.
    ///
    /// Leading dimensions are in elements (row strides). Pointers must cover the
    /// addressed matrices; this is checked only in debug builds.
    @inlinable
    public static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        assert(m >= 0 && n >= 0 && k >= 0)
        assert(lda >= max(1, transA ? m : k) && ldb >= max(1, transB ? k : n) && ldc >= max(1, n))
        if m == 0 || n == 0 { return }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }
}
