import Engine
import Foundation
import JobStore
import Logging
import SlideIO

/// Runs queued jobs: claim, heartbeat, `SlideAnalysis` resumed from the job's checkpoints,
/// checkpoint, outputs into `DATA/outputs/<job id>/`, complete, or fail with a `JobFailure`
/// (transient failures go back to the queue after a backoff until attempts run out).
public final class JobRunner: Sendable {
    public let store: any JobQueue
    public let models: ModelProvider
    public let configuration: WorkerConfiguration
    private let logger: Logger
    /// Set to stop at the next batch boundary (e.g. on SIGTERM).
    public let stop: StopFlag
    /// Asked before every batch (and before the job is completed): a reason abandons the job, which
    /// is then cancelled and its results never completed (watch: the slide file changed under it).
    public let abandon: (@Sendable (Job) -> String?)?

    public init(store: any JobQueue, models: ModelProvider, configuration: WorkerConfiguration, logger: Logger,
                stop: StopFlag = StopFlag(), abandon: (@Sendable (Job) -> String?)? = nil) {
        self.store = store
        self.models = models
        self.configuration = configuration
        self.logger = logger
        self.stop = stop
        self.abandon = abandon
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

    /// Runs one claimed job to the end of this attempt: in its own process when the configuration
    /// says so, else here. `stage` hears what the analysis is doing.
    public func run(job: Job, lease: Lease, progress: (@Sendable (Job, Int, Int) -> Void)? = nil,
                    stage: (@Sendable (String) -> Void)? = nil) -> JobOutcome {
        if let isolation = configuration.isolation {
            return JobSupervisor(store: store, configuration: configuration, isolation: isolation, stop: stop, logger: logger,
                                 abandon: abandon)
                .run(job: job, lease: lease, progress: progress)
        }
        var log = logger
        log[metadataKey: "job.id"] = "\(job.id)"
        let current = StageBox()
        let stage: @Sendable (String) -> Void = { text in
            current.stage = text
            stage?(text)
        }
        let heartbeat = Heartbeat(store: store, lease: lease, interval: max(0.5, store.leaseSeconds / 3))
        defer { heartbeat.stop() }
        do {
            let (directory, summary) = try analyse(job: job, lease: lease, heartbeat: heartbeat, progress: progress, stage: stage)
            if let reason = abandon?(job) { throw JobAbandoned(reason: reason) }
            guard configuration.completes else {
                try heartbeat.check()
                return .done(outputDirectory: directory, summary: summary)
            }
            try store.complete(lease, outputDirectory: directory)
            log.info("job done", metadata: ["output": "\(directory)"])
            return .done(outputDirectory: directory, summary: summary)
        } catch JobStoreError.leaseLost {
            log.warning("lease lost; leaving the job to its new owner")
            return .leaseLost
        } catch let abandoned as JobAbandoned {
            return store.abandon(job, reason: abandoned.reason, log: log)
        } catch is WorkerStopped {
            _ = try? store.releaseLeases(ownedBy: [configuration.owner], reason: "worker stopping", interrupted: false)
            log.info("stopped; job returned to the queue at its last checkpoint")
            return .stopped
        } catch {
            var failure = JobFailure.from(error, slidePath: job.slide.path, slideName: job.slide.originalName)
            if let budget = configuration.memoryBudget, failure.message.contains("out of memory") {
                failure = JobFailure(.overBudget, "exceeded the \(JobBudget.describe(bytes: budget)) memory budget while "
                                     + "\(current.stage) (--job-memory raises it): \(failure.message)")
            }
            return store.record(failure, lease: lease, log: log)
        }
    }

    private func analyse(job: Job, lease: Lease, heartbeat: Heartbeat, progress: (@Sendable (Job, Int, Int) -> Void)?,
                         stage: (@Sendable (String) -> Void)?) throws -> (String, JobSummary) {
        let parameters = try AnalysisParameters.parse(job.parameters)
        stage?("loading the model \(job.model)")
        let (reference, session) = try models.session(for: job.model, threads: configuration.threads,
                                                      precision: parameters.enginePrecision)
        if let expected = parameters.modelSHA256, try ModelIdentity.of(reference).onnxSHA256 != expected {
            throw JobFailure(.modelChanged, "model \(reference.name) changed after job \(job.id) was queued; "
                             + "submit the slide again to analyse it with the model as it is now")
        }
        if let expected = parameters.calibrationSHA256,
           (try? SHA256.hexDigest(ofFile: ModelQuantize.calibrationPath(forModelFile: reference.path))) != expected {
            throw JobFailure(.modelChanged, "the INT8 calibration of \(reference.name) changed after job \(job.id) was queued; "
                             + "submit the slide again to analyse it with the calibration as it is now")
        }
        var analysis = SlideAnalysis(slidePath: job.slide.path, parameters: parameters, card: reference.card, session: session,
                                     threads: configuration.threads, batchSize: configuration.batchSize,
                                     checkpointTiles: configuration.checkpointTiles,
                                     checkpointSeconds: configuration.checkpointSeconds)
        analysis.limits = configuration.slideLimits
        var events = SlideAnalysis.Events()
        events.planned = { [store] tiles in try store.setTotal(lease, tiles: tiles) }
        events.checkpoint = { [store] results, done in try store.checkpoint(lease, results: results, tilesDone: done) }
        events.progress = { done, total in progress?(job, done, total) }
        events.stage = { stage?($0) }
        events.check = { [stop, abandon] in
            try heartbeat.check()
            if stop.isSet { throw WorkerStopped() }
            if let reason = abandon?(job) { throw JobAbandoned(reason: reason) }
        }
        // Resume from the last checkpoint: tiles already committed are not scored again.
        let resume = job.tilesDone > 0 ? try store.results(of: job.id) : []
        let result = try analysis.run(resume: resume, resumeTiles: job.tilesTotal, events: events)
        try heartbeat.check()
        let inputs = OutputInputs(
            jobID: job.id.rawValue, slideName: job.slide.originalName, modelName: reference.name, classes: reference.card.classes,
            grid: result.grid, mask: result.mask, scores: result.scores, embeddings: result.embeddings,
            timings: result.timings, slideWidth: result.slideWidth, slideHeight: result.slideHeight,
            slideSHA256: job.slide.sha256, slideMPP: result.slideMPP, cardJSON: reference.cardJSON,
            modelPath: reference.path, parameters: parameters, validated: reference.card.validationStatement,
            mppSource: result.mppSource, segmentation: result.segmentation,
            colourTransform: result.colourTransform, decodeRoute: result.decodeRoute?.rawValue)
        let directory = configuration.resultsDirectory + "/\(job.id)"
        stage?("writing the results")
        defer { if let map = result.segmentation { try? FileManager.default.removeItem(atPath: map.rawPath) } }
        let summary = try JobOutputs.write(inputs, to: directory)
        return (directory, summary)
    }
}
