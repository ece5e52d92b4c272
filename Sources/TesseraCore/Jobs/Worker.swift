import Engine
import Foundation
import JobStore
import Logging
import SlideIO

/// Settings of an inference worker.
public struct WorkerConfiguration: Sendable {
    /// Lease owner name: host, process and a random suffix.
    public var owner: String
    /// Cores for inference (the engine) and decoding (the patch reader), decided once here.
    public var threads: Int
    /// Patches per engine batch.
    public var batchSize: Int
    /// Tiles per checkpoint (rounded to whole batches).
    public var checkpointTiles: Int
    /// The output folder of a job.
    public var outputDirectory: @Sendable (Job) -> String

    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount, batchSize: Int = 64, checkpointTiles: Int = 512,
                outputDirectory: @escaping @Sendable (Job) -> String) {
        self.owner = WorkerConfiguration.makeOwner()
        self.threads = max(1, threads)
        self.batchSize = max(1, batchSize)
        self.checkpointTiles = max(1, checkpointTiles / max(1, batchSize)) * max(1, batchSize)
        self.outputDirectory = outputDirectory
    }

    /// `host:pid:random`, so a restarted process can tell its dead predecessors' leases.
    public static func makeOwner() -> String {
        "\(ProcessInfo.processInfo.hostName):\(getpid()):\(UUID().uuidString.prefix(6))"
    }
}

/// How a job attempt ended.
public enum JobOutcome: Sendable, Equatable {
    case done(outputDirectory: String)
    case failed(reason: String)
    case leaseLost
    /// The worker was asked to stop; the job went back to the queue with its checkpoints.
    case stopped
}

/// A stop request shared between a signal handler and the worker.
public final class StopFlag: @unchecked Sendable {
    // @unchecked: `value` is guarded by `lock`.
    private let lock = NSLock()
    private var value = false
    public init() {}
    public var isSet: Bool { lock.withLock { value } }
    public func set() { lock.withLock { value = true } }
}

struct WorkerStopped: Error {}

/// Claims jobs and runs them: slide -> tissue -> grid -> patches -> engine -> checkpoints -> outputs.
/// Reading and inference overlap: a reader thread fills batches into a two-slot queue while the
/// engine runs the previous batch (back-pressure when the engine is slower).
public final class Worker: Sendable {
    public let store: any JobQueue
    public let models: ModelProvider
    public let configuration: WorkerConfiguration
    private let logger: Logger
    /// Set to stop at the next batch boundary (e.g. on SIGTERM).
    public let stop: StopFlag

    public init(store: any JobQueue, models: ModelProvider, configuration: WorkerConfiguration, logger: Logger,
                stop: StopFlag = StopFlag()) {
        self.store = store
        self.models = models
        self.configuration = configuration
        self.logger = logger
        self.stop = stop
    }

    /// Returns leases of dead processes on this host to the queue, and expired leases anywhere.
    public func recoverLeases() throws {
        let host = ProcessInfo.processInfo.hostName + ":"
        let dead = try store.leaseOwners().filter { owner in
            guard owner.hasPrefix(host), owner != configuration.owner else { return false }
            let parts = owner.split(separator: ":")
            guard parts.count >= 3, let pid = Int32(parts[parts.count - 2]) else { return false }
            return kill(pid, 0) != 0 && errno == ESRCH
        }
        let released = try store.releaseLeases(ownedBy: dead, reason: "worker process ended")
        let expired = try store.rescueExpiredLeases()
        if !(released + expired).isEmpty {
            logger.info("returned jobs to the queue", metadata: ["jobs": "\((released + expired).map(\.rawValue))"])
        }
    }

    /// Claims and runs one job; nil when nothing is runnable.
    @discardableResult
    public func runNext(progress: (@Sendable (Job, Int, Int) -> Void)? = nil) throws -> (Job, JobOutcome)? {
        guard !stop.isSet, let (job, lease) = try store.claim(owner: configuration.owner) else { return nil }
        let outcome = run(job: job, lease: lease, progress: progress)
        return (job, outcome)
    }

    /// Runs one claimed job to the end of this attempt.
    public func run(job: Job, lease: Lease, progress: (@Sendable (Job, Int, Int) -> Void)? = nil) -> JobOutcome {
        var log = logger
        log[metadataKey: "job.id"] = "\(job.id)"
        let heartbeat = Heartbeat(store: store, lease: lease, interval: max(0.5, store.leaseSeconds / 3))
        defer { heartbeat.stop() }
        do {
            let directory = try analyse(job: job, lease: lease, heartbeat: heartbeat, progress: progress)
            try store.complete(lease, outputDirectory: directory)
            log.info("job done", metadata: ["output": "\(directory)"])
            return .done(outputDirectory: directory)
        } catch JobStoreError.leaseLost {
            log.warning("lease lost; leaving the job to its new owner")
            return .leaseLost
        } catch is WorkerStopped {
            _ = try? store.releaseLeases(ownedBy: [configuration.owner], reason: "worker stopping")
            log.info("stopped; job returned to the queue at its last checkpoint")
            return .stopped
        } catch {
            // Name the slide as the user did: a stored path can carry identifying folder names.
            let (rawReason, permanent) = Self.classify(error)
            let reason = rawReason.replacingOccurrences(of: job.slide.path, with: job.slide.originalName)
            log.warning("job attempt failed", metadata: ["reason": "\(reason)"])
            do {
                try store.fail(lease, reason: reason, permanent: permanent)
            } catch {
                return .leaseLost
            }
            return .failed(reason: reason)
        }
    }

    /// A one-line reason and whether retrying could help.
    static func classify(_ error: any Error) -> (String, Bool) {
        switch error {
        case let slide as SlideError:
            switch slide {
            case .readFailed, .unreadable, .writeFailed, .runtimeUnavailable: return (slide.description, false)
            default: return (slide.description, true)
            }
        case let model as ModelError: return ("model: \(model)", true)
        case let catalog as ModelCatalogError: return (catalog.description, true)
        default: return ("\(error)", false)
        }
    }

    private func analyse(job: Job, lease: Lease, heartbeat: Heartbeat,
                         progress: (@Sendable (Job, Int, Int) -> Void)?) throws -> String {
        let total = Stopwatch()
        let parameters = AnalysisParameters.parse(job.parameters)
        let threads = configuration.threads
        let (reference, session) = try models.session(for: job.model, threads: threads)
        let card = reference.card
        let slide = try Slide.open(path: job.slide.path, mppOverride: parameters.slideMPP)
        let plan = try slide.plan(targetMPP: parameters.mpp ?? card.input.mpp ?? 0.5)
        let maskClock = Stopwatch()
        let mask = try slide.detectTissue()
        let maskSeconds = maskClock.seconds
        let grid = try TileGrid(plan: plan, tileSize: card.input.size, overlap: parameters.overlap, mask: mask,
                                minimumTissue: parameters.minTissue)
        try store.setTotal(lease, tiles: grid.tiles.count)
        let batchSize = configuration.batchSize
        // Resume from the last checkpoint, which always ends on a batch boundary.
        let start = min(grid.tiles.count, (job.tilesDone / batchSize) * batchSize)
        let tileClock = Stopwatch()
        if start < grid.tiles.count {
            try infer(grid: grid, slide: slide, session: session, card: card, from: start, lease: lease,
                      heartbeat: heartbeat, embeddings: parameters.embeddings) { done in progress?(job, done, grid.tiles.count) }
        }
        let tileSeconds = tileClock.seconds
        let results = try store.results(of: job.id)
        guard results.count == grid.tiles.count, results.enumerated().allSatisfy({ $0.offset == $0.element.index }) else {
            throw SlideError.readFailed(path: job.slide.originalName,
                                        reason: "results incomplete (\(results.count) of \(grid.tiles.count) tiles)")
        }
        try heartbeat.check()
        let inputs = OutputInputs(
            jobID: job.id.rawValue, slideName: job.slide.originalName, modelName: reference.name, classes: card.classes,
            grid: grid, mask: mask, scores: results.map(\.scores),
            embeddings: parameters.embeddings ? results.map { $0.embedding ?? [] } : nil,
            timings: ["mask_seconds": maskSeconds, "tiles_seconds": tileSeconds, "total_seconds": total.seconds],
            slideWidth: slide.properties.width, slideHeight: slide.properties.height,
            slideSHA256: job.slide.sha256, slideMPP: slide.properties.mppX, cardJSON: reference.cardJSON,
            modelPath: reference.path, parameters: parameters, validated: card.validationStatement)
        let directory = configuration.outputDirectory(job)
        _ = try JobOutputs.write(inputs, to: directory)
        return directory
    }

    /// The read/infer loop with a two-slot queue between the reader thread and the engine.
    private func infer(grid: TileGrid, slide: Slide, session: Session, card: ModelCard, from start: Int, lease: Lease,
                       heartbeat: Heartbeat, embeddings: Bool, progress: (Int) -> Void) throws {
        let batchSize = configuration.batchSize
        let readerThreads = max(1, configuration.threads / 2)
        let reader = try PatchReader(slide: slide, grid: grid, threads: readerThreads)
        reader.seek(toTile: start)
        let format = PatchFormat.floatNCHW(card.normalisation)
        let pipe = BatchPipe(batches: (0..<2).map { _ in PatchBatch(capacity: batchSize, tileSize: grid.tileSize, format: format) })
        let owned = ReaderBox(reader)
        let producer = Thread {
            let reader = owned.reader
            while let batch = pipe.takeFree() {
                do {
                    if try reader.next(into: batch) {
                        pipe.putFilled(batch)
                    } else {
                        pipe.finish(error: nil)
                        return
                    }
                } catch {
                    pipe.finish(error: error)
                    return
                }
            }
        }
        producer.stackSize = 1 << 20
        producer.start()
        defer { pipe.abort() }
        var done = start
        var pending: [TileResult] = []
        while let batch = try pipe.takeFilled() {
            try heartbeat.check()
            if stop.isSet { throw WorkerStopped() }
            let count = batch.count
            let per = batch.elementsPerPatch
            let input = count == batch.capacity ? batch.floats : Array(batch.floats.prefix(count * per))
            let result = try session.run(Tensor(shape: [count, 3, grid.tileSize, grid.tileSize], data: input),
                                         embedding: embeddings)
            pipe.putFree(batch)
            let output = result.outputs[0]
            let classes = output.count / max(1, count)
            let features = result.embedding
            let dims = features.map { $0.count / max(1, count) } ?? 0
            for n in 0..<count {
                let scores = card.probabilities(fromOutput: Array(output.data[(n * classes)..<((n + 1) * classes)]))
                let embedding = features.map { Array($0.data[(n * dims)..<((n + 1) * dims)]) }
                pending.append(TileResult(index: done + n, scores: scores, embedding: embedding))
            }
            done += count
            if pending.count >= configuration.checkpointTiles || done == grid.tiles.count {
                try store.checkpoint(lease, results: pending, tilesDone: done)
                pending.removeAll(keepingCapacity: true)
            }
            progress(done)
        }
        if !pending.isEmpty { try store.checkpoint(lease, results: pending, tilesDone: done) }
    }
}

/// Hands the patch reader to the producer thread, its only user from then on.
private final class ReaderBox: @unchecked Sendable {
    let reader: PatchReader
    init(_ reader: PatchReader) { self.reader = reader }
}

/// The two-slot queue between the reader thread and the engine. `@unchecked Sendable`: all
/// state is guarded by `condition`; a batch is owned by whichever side took it last.
final class BatchPipe: @unchecked Sendable {
    private let condition = NSCondition()
    private var free: [PatchBatch]
    private var filled: [PatchBatch] = []
    private var finished = false
    private var aborted = false
    private var failure: (any Error)?

    init(batches: [PatchBatch]) { free = batches }

    /// A batch to fill; nil once the consumer has gone.
    func takeFree() -> PatchBatch? {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty && !aborted { condition.wait() }
        return aborted ? nil : free.removeFirst()
    }

    func putFilled(_ batch: PatchBatch) {
        condition.lock()
        filled.append(batch)
        condition.broadcast()
        condition.unlock()
    }

    func putFree(_ batch: PatchBatch) {
        condition.lock()
        free.append(batch)
        condition.broadcast()
        condition.unlock()
    }

    /// The next filled batch in order; nil at the end; rethrows the reader's error.
    func takeFilled() throws -> PatchBatch? {
        condition.lock()
        defer { condition.unlock() }
        while filled.isEmpty && !finished { condition.wait() }
        if !filled.isEmpty { return filled.removeFirst() }
        if let failure { throw failure }
        return nil
    }

    func finish(error: (any Error)?) {
        condition.lock()
        finished = true
        failure = error
        condition.broadcast()
        condition.unlock()
    }

    /// Stops the reader (consumer leaving early or done).
    func abort() {
        condition.lock()
        aborted = true
        condition.broadcast()
        condition.unlock()
    }
}

/// Extends a lease every `interval` seconds on a background queue; remembers if the lease was lost.
final class Heartbeat: @unchecked Sendable {
    // @unchecked: `lost` is guarded by `lock`; the timer is only touched in init/stop.
    private let timer: any DispatchSourceTimer
    private let lock = NSLock()
    private var lost = false
    private let job: JobID

    init(store: any JobQueue, lease: Lease, interval: Double) {
        job = lease.job
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [weak self] in
            do {
                try store.heartbeat(lease)
            } catch {
                self?.lock.withLock { self?.lost = true }
            }
        }
        timer.resume()
    }

    /// Throws `.leaseLost` once a heartbeat was refused.
    func check() throws {
        if lock.withLock({ lost }) { throw JobStoreError.leaseLost(job) }
    }

    func stop() { timer.cancel() }
}
