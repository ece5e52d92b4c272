import Foundation
import JobStore
import Logging
import SlideIO

/// Settings of a job runner.
public struct WorkerConfiguration: Sendable {
    /// Lease owner name: host, process and a random suffix.
    public var owner: String
    /// Cores for inference (the engine) and decoding (the patch reader), decided once here.
    public var threads: Int
    /// Patches per engine batch.
    public var batchSize: Int
    /// Tiles per checkpoint (rounded to whole batches).
    public var checkpointTiles: Int
    /// Seconds after which a batch boundary checkpoints even with fewer tiles.
    public var checkpointSeconds: Double = 5
    /// Where every job's results are stored: `DATA/outputs`, one `<job id>/` folder each.
    public var resultsDirectory: String
    /// Run each job in its own process under a budget (nil: in this process).
    public var isolation: JobIsolation?
    /// The memory budget this process runs under (set in a job's analysis process): an
    /// allocation refused there is the budget's doing, not the slide's.
    public var memoryBudget: Int?
    /// Whether the runner marks a finished job done itself (false in a job's analysis process:
    /// the worker that started it does, after its last look at the job).
    public var completes = true
    /// What a slide must keep to be analysed (checked again right before every analysis).
    public var slideLimits = SlideLimits()

    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount, batchSize: Int = 64, checkpointTiles: Int = 512,
                resultsDirectory: String) {
        self.owner = WorkerConfiguration.makeOwner()
        self.threads = max(1, threads)
        self.batchSize = max(1, batchSize)
        self.checkpointTiles = max(1, checkpointTiles / max(1, batchSize)) * max(1, batchSize)
        self.resultsDirectory = (resultsDirectory as NSString).standardizingPath
    }

    /// `host:pid:random`, so a restarted process can tell its dead predecessors' leases.
    public static func makeOwner() -> String {
        "\(ProcessInfo.processInfo.hostName):\(getpid()):\(UUID().uuidString.prefix(6))"
    }
}

/// How a job attempt ended.
public enum JobOutcome: Sendable {
    /// Done: the stored results and the summary written there.
    case done(outputDirectory: String, summary: JobSummary)
    case failed(JobFailure)
    case leaseLost
    /// The worker was asked to stop; the job went back to the queue with its checkpoints.
    case stopped
    /// The job was abandoned mid-run (its slide file changed) and cancelled.
    case cancelled(reason: String)
}

struct WorkerStopped: Error {}

/// The last stage an analysis reported.
final class StageBox: @unchecked Sendable {
    // @unchecked: `value` is guarded by `lock`.
    private let lock = NSLock()
    private var value = "starting"
    var stage: String {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}

extension JobQueue {
    /// Records a failed attempt (permanent unless the failure is transient) and names the outcome.
    func record(_ failure: JobFailure, lease: Lease, log: Logger) -> JobOutcome {
        log.warning("job attempt failed", metadata: ["code": "\(failure.code.rawValue)", "reason": "\(failure.message)"])
        do {
            try fail(lease, reason: failure.stored, permanent: !failure.transient)
        } catch {
            return .leaseLost
        }
        return .failed(failure)
    }

    /// Cancels a job whose slide file changed under it; its results never reach a results folder.
    func abandon(_ job: Job, reason: String, log: Logger) -> JobOutcome {
        _ = try? cancel(job.id)
        log.notice("job abandoned and cancelled", metadata: ["reason": "\(reason)"])
        return .cancelled(reason: reason)
    }
}

/// Ends an attempt whose job must not finish (see `JobRunner.abandon`).
struct JobAbandoned: Error {
    var reason: String
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
