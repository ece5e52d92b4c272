import CEngineKernels
import Dispatch
import LinearAlgebra
import Synchronization

/// Executes a ``Model`` on batches, with preallocated per-worker workspaces.
///
/// Threading is decided here and only here: a batch is split into micro-batches that
/// `threads` Dispatch workers process in parallel with OpenBLAS single-threaded; when a
/// batch has only one micro-batch, the one worker splits each step (output channels,
/// columns, Winograd tiles or GEMMs, depthwise planes) across `threads` Dispatch lanes,
/// still with OpenBLAS single-threaded.
///
/// `@unchecked Sendable`: the mutable state (the workspaces, raw arena memory) is touched
/// only inside `queue.sync` / `queue.async` blocks on the session's private serial queue, so
/// at most one batch runs at a time; during a batch each worker owns exactly one workspace.
public final class Session: @unchecked Sendable {
    public let model: Model
    /// Cores this session may use.
    public let threads: Int
    /// Largest number of images a worker pushes through the graph at once (default:
    /// ``defaultMicroBatch(for:)``).
    public let microBatch: Int
    private let queue: DispatchQueue
    private var workspaces: [Workspace] = []
    /// Helper threads for batches of a single micro-batch (`threads > 1`).
    private let team: LaneTeam?

    public init(model: Model, threads: Int = 1, microBatch: Int? = nil) throws {
        guard threads >= 1, threads <= 256 else { throw ModelError.invalidArgument("threads must be 1...256, got \(threads)") }
        // A fixed-batch graph runs exactly its batch size per pass.
        let microBatch = model.program.fixedBatch ?? microBatch ?? Self.defaultMicroBatch(for: model)
        guard microBatch >= 1 else { throw ModelError.invalidArgument("microBatch must be >= 1, got \(microBatch)") }
        self.model = model
        self.threads = threads
        self.microBatch = microBatch
        self.queue = DispatchQueue(label: "tessera.engine.session", qos: .userInitiated)
        self.team = threads > 1 ? LaneTeam(lanes: threads) : nil
    }

    deinit { team?.shutdown() }

    /// The smallest of 4, 8 and 16 images at which every Winograd layer still has enough tiles
    /// to run as Winograd (``Winograd/enoughWork(_:nb:)``): smaller micro-batches keep the
    /// activations in cache (batch 64 on 2 threads: tessera-crc-compact 2446 -> 2643 img/s at 4
    /// instead of 16, compact_cnn_224 357 -> 373), but a model with Winograd layers on small
    /// maps needs 16 images for them (compact_cnn_96: 1923 at 16, 1490 at 4).
    /// A model with a dense layer of more weights than the caches hold (AlexNet's 9216 x 4096,
    /// 151 MB) streams them once per micro-batch, so it takes 16 images (AlexNet-LRN at batch
    /// 16 on 2 threads, AVX2: 66 -> 75 img/s against 4).
    public static func defaultMicroBatch(for model: Model) -> Int {
        if model.program.steps.contains(where: { step in
            if case let .gemm(g) = step { return g.rows == 1 && g.n * g.k >= 1 << 22 }
            return false
        }) { return 16 }
        let layers = model.program.steps.compactMap { step -> ConvStep? in
            if case let .conv(c) = step, c.kind == .winograd || c.kind == .winograd43 { return c }
            return nil
        }
        let o = model.program.options
        for candidate in [4, 8] where layers.allSatisfy({ Winograd.enoughWork($0, nb: candidate, o) == Winograd.enoughWork($0, nb: 16, o) }) {
            return candidate
        }
        return 16
    }

    /// Runs one batch synchronously on the session queue (blocks the caller).
    public func run(_ input: Tensor, embedding: Bool = false) throws -> InferenceResult {
        try queue.sync { try self.execute(input, wantEmbedding: embedding) }
    }

    /// Runs one batch on the session's Dispatch queue without blocking the cooperative pool.
    public func run(_ input: Tensor, embedding: Bool = false) async throws -> InferenceResult {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try self.execute(input, wantEmbedding: embedding) })
            }
        }
    }

    /// Times each compiled step on one micro-batch of `input` (one worker, OpenBLAS 1 thread).
    public func profile(_ input: Tensor) throws -> [(step: String, seconds: Double)] {
        try queue.sync {
            let batch = try model.validate(input)
            let nb = min(batch, microBatch)
            BLAS.setThreads(1)
            let ws = Workspace(program: model.program, capacity: nb)
            return try input.data.withUnsafeBufferPointer {
                try Executor(program: model.program, ws: ws, nb: nb).profile(input: $0.baseAddress!).map { (step: $0.0, seconds: $0.1) }
            }
        }
    }

    /// Per-worker micro-batch size used for a batch of `batch` images.
    public func microBatchSize(for batch: Int) -> Int {
        if let fixed = model.program.fixedBatch { return fixed }
        return min(microBatch, max(1, (batch + threads - 1) / threads))
    }

    private func execute(_ input: Tensor, wantEmbedding: Bool) throws -> InferenceResult {
        let program = model.program
        let batch = try model.validate(input)
        if let fixed = program.fixedBatch, batch % fixed != 0 {
            // Pad to whole passes of the graph's batch, then drop the padding images.
            let padded = (batch + fixed - 1) / fixed * fixed
            let data = input.data + [Float](repeating: 0, count: (padded - batch) * model.inputShape.reduce(1, *))
            let full = try execute(Tensor(shape: [padded] + model.inputShape, data: data), wantEmbedding: wantEmbedding)
            func trim(_ t: Tensor) -> Tensor {
                Tensor(shape: [batch] + t.shape.dropFirst(), data: Array(t.data.prefix(batch * t.shape.dropFirst().reduce(1, *))))
            }
            return InferenceResult(outputs: full.outputs.map(trim), embedding: full.embedding.map(trim))
        }
        let mb = microBatchSize(for: batch)
        let chunks = (batch + mb - 1) / mb
        let workers = min(threads, chunks)
        // A single micro-batch: its steps are split across the cores (OpenBLAS stays at 1 thread).
        let lanes = workers == 1 ? threads : 1
        BLAS.setThreads(1)
        if workspaces.count < workers || (workspaces.first?.capacity ?? 0) < mb || (workspaces.first?.lanes ?? 0) < lanes {
            let capacity = max(mb, workspaces.first?.capacity ?? 0)
            let firstLanes = max(lanes, workspaces.first?.lanes ?? 1)
            workspaces = (0..<max(workers, workspaces.count)).map { i in
                Workspace(program: program, capacity: capacity, lanes: i == 0 ? firstLanes : 1)
            }
        }
        let outShapes = program.outputValues.map { program.slots[$0].perImage }
        let embValue = wantEmbedding ? program.embeddingValue : nil
        // The workers write the results straight into the arrays returned (no second copy: a
        // segmentation map of 16 x 21 x 256 x 256 floats is 88 MB).
        var counts = outShapes.map { batch * $0.reduce(1, *) }
        if let embValue { counts.append(batch * program.slots[embValue].count) }
        let errors = ErrorBox()
        let arrays = try Self.withArrays(counts) { buffers in
            try input.data.withUnsafeBufferPointer { inBuf in
                let job = BatchJob(program: program, workspaces: workspaces, input: inBuf.baseAddress!,
                                   outputs: Array(buffers.prefix(outShapes.count)),
                                   embedding: embValue == nil ? nil : buffers.last,
                                   embeddingValue: embValue, batch: batch, microBatch: mb, workers: workers,
                                   lanes: lanes, team: lanes > 1 ? team : nil, errors: errors, next: MicroBatchCounter())
                if workers == 1 { job.work(0) } else { DispatchQueue.concurrentPerform(iterations: workers) { job.work($0) } }
                if let error = errors.error { throw error }
            }
        }
        return InferenceResult(
            outputs: zip(outShapes, arrays).map { Tensor(shape: [batch] + $0, data: $1) },
            embedding: embValue.map { v in Tensor(shape: [batch] + program.slots[v].perImage, data: arrays.last!) })
    }

    /// Arrays of `counts` floats, uninitialised until `body` fills them through their pointers
    /// (every element is written by `body`, or it throws and none is returned).
    static func withArrays(_ counts: [Int], _ body: ([UnsafeMutablePointer<Float>]) throws -> Void) throws -> [[Float]] {
        func make(_ i: Int, _ pointers: [UnsafeMutablePointer<Float>]) throws -> [[Float]] {
            if i == counts.count { try body(pointers); return [] }
            var rest: [[Float]] = []
            let array = try [Float](unsafeUninitializedCapacity: max(counts[i], 1)) { buffer, initialized in
                if counts[i] >= 1 << 20 { tessera_advise_huge_pages(buffer.baseAddress!, counts[i] * MemoryLayout<Float>.size) }
                rest = try make(i + 1, pointers + [buffer.baseAddress!])
                initialized = counts[i]
            }
            return [array] + rest
        }
        return try make(0, [])
    }
}

/// One batch split into micro-batches; `work(w)` runs micro-batches (taken from `next`) on workspace `w`.
///
/// `@unchecked Sendable`: it carries raw pointers into the caller's input and output arrays, which
/// outlive the (synchronous) `concurrentPerform`; workers write disjoint image ranges of the outputs
/// and each uses only its own workspace, so there is no shared mutable memory.
private struct BatchJob: @unchecked Sendable {
    let program: Program
    let workspaces: [Workspace]
    let input: UnsafePointer<Float>
    let outputs: [UnsafeMutablePointer<Float>]
    let embedding: UnsafeMutablePointer<Float>?
    let embeddingValue: Int?
    let batch: Int, microBatch: Int, workers: Int
    /// Threads inside each step (> 1 only with a single worker).
    let lanes: Int
    let team: LaneTeam?
    let errors: ErrorBox
    /// Next micro-batch to take.
    let next: MicroBatchCounter

    func work(_ w: Int) {
        let chunks = (batch + microBatch - 1) / microBatch
        let inPerImage = program.slots[program.inputValue].count
        while true {
            // Micro-batches are taken dynamically: a worker slowed by other load takes fewer.
            let chunk = next.take()
            if chunk >= chunks { return }
            let start = chunk * microBatch, nb = min(microBatch, batch - start)
            let ex = Executor(program: program, ws: workspaces[w], nb: nb, par: IntraOp(lanes: lanes, team: team))
            do {
                try ex.run(input: input + start * inPerImage)
                for (i, v) in program.outputValues.enumerated() {
                    ex.store(v, to: outputs[i] + start * program.slots[v].count)
                }
                if let embeddingValue, let embedding {
                    ex.store(embeddingValue, to: embedding + start * program.slots[embeddingValue].count)
                }
            } catch {
                errors.set(error)
                return
            }
        }
    }
}

/// Shared counter of the next micro-batch (an `Atomic` in a class, so the job can be copied).
private final class MicroBatchCounter: Sendable {
    private let value = Atomic<Int>(0)
    /// Returns the current value and increments it.
    func take() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}

/// First error raised by any worker. `@unchecked Sendable`: guarded by its lock.
private final class ErrorBox: @unchecked Sendable {
    private let lock = NSLockLike()
    private var stored: (any Error)?
    func set(_ e: any Error) { lock.withLock { if stored == nil { stored = e } } }
    var error: (any Error)? { lock.withLock { stored } }
}

/// Minimal mutex on a Dispatch semaphore (keeps Engine free of Foundation locking APIs).
private final class NSLockLike: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 1)
    func withLock<T>(_ body: () -> T) -> T {
        semaphore.wait()
        defer { semaphore.signal() }
        return body()
    }
}

/// Process-wide memory settings for programs that run batch after batch.
public enum EngineMemory {
    /// Large blocks a batch frees (its output arrays) stay in the heap for the next batch instead
    /// of going back to the system and being faulted in again (glibc `mallopt`; elsewhere a
    /// no-op). Call once, early; it changes the C allocator for the whole process.
    public static func keepFreedBlocks() { tessera_keep_freed_blocks() }
}
