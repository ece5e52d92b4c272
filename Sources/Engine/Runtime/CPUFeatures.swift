import CTesseraShims
import LinearAlgebra

/// The instruction sets of this CPU that matter to the engine, probed once.
public struct CPUFeatures: Sendable, Equatable {
    public var avx2: Bool
    public var fma: Bool
    public var avx512f: Bool
    public var avx512bw: Bool
    public var avx512vl: Bool
    public var avx512dq: Bool
    public var avx512vnni: Bool
    public var avx512bf16: Bool

    /// This machine's features.
    public static let current = CPUFeatures(
        avx2: tessera_cpu_has_avx2() != 0, fma: tessera_cpu_has_fma() != 0,
        avx512f: tessera_cpu_has_avx512f() != 0, avx512bw: tessera_cpu_has_avx512bw() != 0,
        avx512vl: tessera_cpu_has_avx512vl() != 0, avx512dq: tessera_cpu_has_avx512dq() != 0,
        avx512vnni: tessera_cpu_has_avx512vnni() != 0, avx512bf16: tessera_cpu_has_avx512bf16() != 0)

    /// Whether the engine's AVX-512 kernels run (direct, pointwise and depthwise convolutions,
    /// the Winograd transforms and GEMM, pooling): they need F, BW, VL and DQ together, the
    /// test `engine_direct.c` makes at run time; otherwise the portable C builds run.
    public var engineUsesAVX512: Bool { avx512f && avx512bw && avx512vl && avx512dq }
}

/// The BLAS the engine's GEMM-based kernels call, as loaded.
public enum EngineBLAS {
    /// OpenBLAS's build description, e.g. `OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64`.
    public static var configuration: String { BLAS.configuration }
    /// The kernel family OpenBLAS picked for this CPU, e.g. `Zen` or `SkylakeX`.
    public static var coreName: String { BLAS.coreName }
}
