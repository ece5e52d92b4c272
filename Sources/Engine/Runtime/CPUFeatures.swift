import LinearAlgebra

/// What this CPU gives the engine: the kernel ISA levels it runs and the one the engine picks.
public struct CPUFeatures: Sendable, Equatable {
    /// The levels this CPU (and OS) runs, lowest first.
    public var supported: [CPUISA]
    /// The level the engine's kernels run at by default (the best supported one).
    public var engineLevel: CPUISA

    /// This machine's features.
    public static let current = CPUFeatures(supported: CPUISA.allCases.filter(\.isSupported), engineLevel: .detected)

    public func supports(_ level: CPUISA) -> Bool { supported.contains(level) }
}

/// The BLAS the engine's GEMM-based kernels call, as loaded.
public enum EngineBLAS {
    /// OpenBLAS's build description, e.g. `OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64`.
    public static var configuration: String { BLAS.configuration }
    /// The kernel family OpenBLAS picked for this CPU, e.g. `Zen` or `SkylakeX`.
    public static var coreName: String { BLAS.coreName }
}
