import Engine
@_exported import SlideIO

/// Tessera's version.
public enum Tessera {
    /// The version string printed by `tessera --version`.
    public static let version = "0.1.0"

    /// Process-wide: freed large blocks stay in the heap for the next batch (see
    /// ``EngineMemory/keepFreedBlocks()``). The `tessera` command calls it once at start.
    public static func keepFreedBlocks() { EngineMemory.keepFreedBlocks() }
}

@_exported import JobStore

/// A queued slide analysis (`JobStore.Job`; named so it does not clash with Swift's own `Job`).
public typealias SlideJob = Job
