import CEngineKernels
import Foundation

/// An instruction-set level of the engine's kernels (`TESSERA_ISA_*` of `tessera_cpu.h`).
/// Each level includes the ones below it except that AVX-512 does not imply AVX-VNNI (the VEX
/// form): a level the CPU lacks resolves to the highest one below it that it has.
public enum CPUISA: Int, Sendable, CaseIterable, Comparable, CustomStringConvertible {
    case portable = 0, avx2, avx2VNNI, avx512, avx512VNNI, avx512BF16

    /// The best level this CPU (and OS) supports.
    public static let detected = CPUISA(rawValue: Int(tessera_cpu_isa_resolve(Int32(TESSERA_ISA_COUNT - 1)))) ?? .portable

    /// Whether this CPU runs every instruction of the level.
    public var isSupported: Bool { tessera_cpu_supports_isa(Int32(rawValue)) != 0 }

    /// The highest supported level at or below this one.
    public var resolved: CPUISA { CPUISA(rawValue: Int(tessera_cpu_isa_resolve(Int32(rawValue)))) ?? .portable }

    public var description: String { String(cString: tessera_cpu_isa_name(Int32(rawValue))) }

    /// Parses a level's name (`avx512-vnni`, ...).
    public init?(name: String) {
        guard let isa = CPUISA.allCases.first(where: { $0.description == name.lowercased() }) else { return nil }
        self = isa
    }

    public static func < (a: CPUISA, b: CPUISA) -> Bool { a.rawValue < b.rawValue }
}

/// Numeric precision a model is compiled for.
public enum Precision: String, Sendable, CaseIterable {
    case fp32, int8, bf16, auto
}

/// Every engine setting in one value, given to ``Model`` when it is compiled (the session reads
/// the model's). Defaults are the measured best; the knobs exist for comparisons and tests.
/// Only the command line builds one from `TESSERA_ENGINE_*` variables (``fromEnvironment(_:)``).
public struct EngineOptions: Sendable, Equatable {
    /// Which Winograd variants dense 3x3 convolutions may use.
    public enum WinogradVariants: Sendable, Equatable { case none, f23Only, all }
    /// The dense conv's data path: chosen per call by its cost estimate, or forced (tests).
    public enum DenseConvPath: Int32, Sendable { case auto = 0, phasePlanes = 1, gatheredPanels = 2 }

    /// Highest instruction-set level the kernels may use (nil: the best this CPU has). A level
    /// the CPU lacks falls back to the highest one below it (``CPUISA/resolved``).
    public var isa: CPUISA? = nil
    /// Precision of the convolutions and dense layers.
    public var precision: Precision = .fp32
    /// Dense convolutions on Tessera's direct kernel (false: im2col + OpenBLAS). `TESSERA_ENGINE_DIRECT=0`.
    public var directConvolution = true
    /// 1x1 convolutions on OpenBLAS instead of the packed AVX-512 tile. `TESSERA_ENGINE_POINTWISE=blas`.
    public var pointwiseOnBLAS = false
    /// `TESSERA_ENGINE_WINOGRAD=0` (none) or `=2` (F(2x2,3x3) only).
    public var winograd: WinogradVariants = .all
    /// Floats of one Winograd chunk's transformed input and GEMM output, sized for L2. `TESSERA_ENGINE_WINO_CHUNK`.
    public var winogradChunkFloats = 1 << 16
    /// Fewest input / output channels of a Winograd layer. `TESSERA_ENGINE_WINO_MINCH`.
    public var winogradMinChannels = 32
    /// Fewest tiles per micro-batch for Winograd (else the direct kernel). `TESSERA_ENGINE_WINO_TILES`.
    public var winogradMinTiles = 64
    /// Tests: every Winograd layer runs as Winograd whatever its tile count.
    public var forceWinograd = false
    /// Steps with fewer FLOPs are not split across threads. `TESSERA_ENGINE_SPLIT_MIN_FLOPS`.
    public var splitMinFlops = 1.2e7
    /// Relative cost of gathering one k-row of a dense conv panel (<= 0: never). `TESSERA_ENGINE_GATHER_COST`.
    public var gatherCost = 4.0
    /// Tests: force the dense conv's data path.
    public var denseConvPath: DenseConvPath = .auto
    /// INT8: an int8 layer whose only reader is the next int8 layer (directly or through a max
    /// pool) writes that layer's quantised input itself, instead of fp32 the next layer quantises
    /// again (same bits either way). `TESSERA_ENGINE_INT8_CHAIN=0` turns it off.
    public var int8Chaining = true

    public init() {}

    /// The level the kernels run at: ``isa`` (or the best detected) resolved on this CPU.
    public var effectiveISA: CPUISA { (isa ?? .detected).resolved }

    /// The defaults overridden by the `TESSERA_ENGINE_*` variables of `environment`.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> EngineOptions {
        var o = EngineOptions()
        func number(_ key: String) -> Double? { environment[key].flatMap(Double.init) }
        if environment["TESSERA_ENGINE_DIRECT"] == "0" { o.directConvolution = false }
        if environment["TESSERA_ENGINE_POINTWISE"] == "blas" { o.pointwiseOnBLAS = true }
        if environment["TESSERA_ENGINE_INT8_CHAIN"] == "0" { o.int8Chaining = false }
        switch environment["TESSERA_ENGINE_WINOGRAD"] {
        case "0": o.winograd = .none
        case "2": o.winograd = .f23Only
        default: break
        }
        if let v = number("TESSERA_ENGINE_WINO_CHUNK") { o.winogradChunkFloats = Int(v) }
        if let v = number("TESSERA_ENGINE_WINO_MINCH") { o.winogradMinChannels = Int(v) }
        if let v = number("TESSERA_ENGINE_WINO_TILES") { o.winogradMinTiles = Int(v) }
        if let v = number("TESSERA_ENGINE_SPLIT_MIN_FLOPS") { o.splitMinFlops = v }
        if let v = number("TESSERA_ENGINE_GATHER_COST") { o.gatherCost = v }
        if let name = environment["TESSERA_ENGINE_ISA"], let isa = CPUISA(name: name) { o.isa = isa }
        return o
    }
}
