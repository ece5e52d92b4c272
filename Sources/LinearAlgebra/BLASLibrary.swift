import COpenBLAS

extension BLAS {
    /// OpenBLAS's build description, e.g. `OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64`.
    public static var configuration: String { String(cString: openblas_get_config()) }

    /// The kernel family OpenBLAS picked for this CPU at load time, e.g. `Zen` or `SkylakeX`.
    public static var coreName: String { String(cString: openblas_get_corename()) }
}
