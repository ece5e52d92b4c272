import Foundation

/// The durable job queue, whatever holds it: `JobStore` (embedded SQLite, one machine) or
/// `PostgresJobStore` (a PostgreSQL server shared by several worker replicas). Both keep the
/// same rules: a claim leases a job (owner, fencing token, expiry) and counts an attempt; an
/// expired lease returns the job to the queue without using that attempt, counting an
/// interruption when the lost lease made no progress (too many in a row fail the job); every write of a worker is fenced by its token;
/// jobs are deduplicated by (slide SHA-256, model, parameters) and by idempotency key;
/// checkpoints replace tiles already committed.
public protocol JobQueue: AnyObject, Sendable {
    /// Lease length in seconds; a worker heartbeats well within it.
    var leaseSeconds: Double { get }
    /// Current time in seconds since 1970 (from the store's clock).
    var now: Double { get }

    /// Adds a job unless the same slide content, model and parameters (or the same idempotency
    /// key) already has one; returns the job and whether it is new.
    func enqueue(slide: StoredSlide, model: String, parameters: String, maxAttempts: Int,
                 idempotencyKey: String?) throws(JobStoreError) -> (job: Job, created: Bool)
    /// Claims the next runnable job (lease, new token, attempt counted); nil when nothing is runnable.
    func claim(owner: String) throws(JobStoreError) -> (job: Job, lease: Lease)?
    /// Extends the lease. - Throws: `.leaseLost` when the lease was taken over or the job cancelled.
    func heartbeat(_ lease: Lease) throws(JobStoreError)
    /// Returns expired leases to the queue (an interruption: see `releaseLeases`).
    @discardableResult func rescueExpiredLeases() throws(JobStoreError) -> [JobID]
    /// Releases the leases of `owners` right away. A lost lease never uses one of the slide's
    /// attempts (the worker died, the slide did not fail); with `interrupted` (the owner died
    /// rather than gave the job back) a loss without progress counts as an interruption, and a
    /// job interrupted `QueueWrites.maxInterruptions` times in a row without progress fails.
    @discardableResult func releaseLeases(ownedBy owners: [String], reason: String, interrupted: Bool) throws(JobStoreError) -> [JobID]
    /// Owners holding running leases.
    func leaseOwners() throws(JobStoreError) -> [String]
    /// Records the tile total of a running job (fenced).
    func setTotal(_ lease: Lease, tiles: Int) throws(JobStoreError)
    /// Commits tile results and progress atomically (fenced; re-committed tiles replace the old ones).
    func checkpoint(_ lease: Lease, results: [TileResult], tilesDone: Int) throws(JobStoreError)
    /// Tile results of a job, by tile index.
    func results(of id: JobID) throws(JobStoreError) -> [TileResult]
    /// Marks the job done (fenced).
    func complete(_ lease: Lease, outputDirectory: String?) throws(JobStoreError)
    /// Records a failed attempt: retry after backoff, or `failed` (fenced).
    func fail(_ lease: Lease, reason: String, permanent: Bool) throws(JobStoreError)
    /// Cancels a queued or running job; returns the job.
    @discardableResult func cancel(_ id: JobID) throws(JobStoreError) -> Job
    /// Queues a failed or cancelled job again with a fresh attempt budget, keeping its checkpoints;
    /// returns the job (unchanged when it was not failed or cancelled).
    @discardableResult func retry(_ id: JobID) throws(JobStoreError) -> Job
    /// One job. - Throws: `.notFound`.
    func job(_ id: JobID) throws(JobStoreError) -> Job
    /// Jobs, newest first, optionally in one state.
    func jobs(state: JobState?, limit: Int, offset: Int) throws(JobStoreError) -> [Job]
    /// Number of jobs in each state.
    func counts() throws(JobStoreError) -> [JobState: Int]
    /// The job's history: (attempt, message, time), oldest first.
    func events(of id: JobID) throws(JobStoreError) -> [(attempt: Int?, message: String, at: Double)]
    /// "ok" when the store is sound, else what is wrong.
    func integrityCheck() throws(JobStoreError) -> String

    /// The record of a watched path, if any.
    func watchedFile(path: String) throws(JobStoreError) -> WatchedFile?
    /// Records (or replaces) what was done with a watched path.
    func recordWatchedFile(_ file: WatchedFile) throws(JobStoreError)
    /// Watched files whose job has finished but that have not been filed away yet.
    func watchedFilesWithFinishedJobs() throws(JobStoreError) -> [(WatchedFile, Job)]
}

extension JobQueue {
    /// `enqueue` with the usual defaults: no parameters, 3 attempts, no idempotency key.
    public func enqueue(slide: StoredSlide, model: String, parameters: String = "{}", maxAttempts: Int = 3,
                        idempotencyKey: String? = nil) throws(JobStoreError) -> (job: Job, created: Bool) {
        try enqueue(slide: slide, model: model, parameters: parameters, maxAttempts: maxAttempts, idempotencyKey: idempotencyKey)
    }

    /// `releaseLeases` of owners that died (an interruption).
    @discardableResult
    public func releaseLeases(ownedBy owners: [String], reason: String) throws(JobStoreError) -> [JobID] {
        try releaseLeases(ownedBy: owners, reason: reason, interrupted: true)
    }

    /// `fail`, retrying unless `permanent`.
    public func fail(_ lease: Lease, reason: String, permanent: Bool = false) throws(JobStoreError) {
        try fail(lease, reason: reason, permanent: permanent)
    }

    /// `jobs`, newest first.
    public func jobs(state: JobState? = nil, limit: Int = 100, offset: Int = 0) throws(JobStoreError) -> [Job] {
        try jobs(state: state, limit: limit, offset: offset)
    }
}

/// Which store a queue location names.
public enum JobQueueLocation: Sendable, Equatable {
    /// An SQLite database file.
    case sqlite(path: String)
    /// A PostgreSQL connection URL (`postgres://user@host:port/db` or `postgresql://...`).
    case postgres(url: String)

    /// Parses `postgres://...` / `postgresql://...` as PostgreSQL and anything else (a path or
    /// `sqlite:PATH`) as an SQLite file.
    public init(_ text: String) {
        let lower = text.lowercased()
        if lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://") {
            self = .postgres(url: text)
        } else if lower.hasPrefix("sqlite:") {
            self = .sqlite(path: String(text.dropFirst("sqlite:".count)))
        } else {
            self = .sqlite(path: text)
        }
    }

    /// Opens the store.
    public func open(leaseSeconds: Double = 30, backoffSeconds: Double = 2) throws(JobStoreError) -> any JobQueue {
        switch self {
        case .sqlite(let path): return try JobStore(path: path, leaseSeconds: leaseSeconds, backoffSeconds: backoffSeconds)
        case .postgres(let url): return try PostgresJobStore(url: url, leaseSeconds: leaseSeconds, backoffSeconds: backoffSeconds)
        }
    }
}
