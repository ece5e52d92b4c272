import Foundation

/// The durable job queue on SQLite: WAL, `synchronous=FULL`, busy timeout, `BEGIN IMMEDIATE`
/// for writes, foreign keys, `quick_check` at open, migrations by `user_version`. One connection
/// per store, used under a lock; several processes may open the same file.
public final class JobStore: @unchecked Sendable {
    // @unchecked: `connection` is only touched while `lock` is held.
    private let connection: SQLiteConnection
    private let lock = NSLock()
    /// A second connection for reads, so status queries do not wait behind a writer's fsync (WAL).
    private let reader: SQLiteConnection
    private let readLock = NSLock()
    private let clock: @Sendable () -> Double
    /// The database file.
    public let path: String
    /// Lease length in seconds; a worker heartbeats well within it.
    public let leaseSeconds: Double
    /// First retry delay in seconds; doubles each attempt.
    public let backoffSeconds: Double

    /// Opens (creating and migrating) the store at `path`.
    public init(path: String, leaseSeconds: Double = 30, backoffSeconds: Double = 2,
                clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) throws(JobStoreError) {
        self.path = path
        self.leaseSeconds = leaseSeconds
        self.backoffSeconds = backoffSeconds
        self.clock = clock
        do {
            connection = try SQLiteConnection(path: path)
            try connection.execute("PRAGMA journal_mode=WAL")
            try connection.execute("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON")
            let check = try connection.query("PRAGMA quick_check").compactMap { $0.string("quick_check") }
            guard check == ["ok"] else { throw JobStoreError.corrupt(check.joined(separator: "; ")) }
            try Migrator.migrate(connection)
            reader = try SQLiteConnection(path: path)
            try reader.execute("PRAGMA foreign_keys=ON; PRAGMA query_only=ON")
        } catch let error as JobStoreError {
            throw error
        } catch {
            throw .database("\(path): \(error)")
        }
    }

    /// Runs `body` on the connection under the lock, mapping SQLite errors.
    private func withConnection<T>(_ body: (SQLiteConnection) throws -> T) throws(JobStoreError) -> T {
        try connection.locked(by: lock, body)
    }

    /// Runs a read-only `body` on the reader connection.
    private func withReader<T>(_ body: (SQLiteConnection) throws -> T) throws(JobStoreError) -> T {
        try reader.locked(by: readLock, body)
    }

    /// Current time in seconds since 1970 (from the store's clock).
    public var now: Double { clock() }

    // MARK: Enqueue

    /// Adds a job for `slide` and `model` unless the same slide content, model and parameters
    /// (or the same idempotency key) already has one; returns the job and whether it is new.
    public func enqueue(slide: StoredSlide, model: String, parameters: String = "{}", maxAttempts: Int = 3,
                        idempotencyKey: String? = nil) throws(JobStoreError) -> (job: Job, created: Bool) {
        let now = clock()
        return try withConnection { db in
            try db.immediateTransaction {
                if let idempotencyKey,
                   let existing = try db.query("SELECT id FROM jobs WHERE idempotency_key = ?", [.text(idempotencyKey)])
                    .first?.int("id") {
                    return (try QueueWrites.fetch(db, JobID(existing)), false)
                }
                try db.query("""
                    INSERT INTO slides(sha256, path, original_name, size, created_at) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(sha256) DO NOTHING
                    """, [.text(slide.sha256), .text(slide.path), .text(slide.originalName), .integer(Int64(slide.size)),
                          .real(now)])
                let inserted = try db.query("""
                    INSERT INTO jobs(slide_sha256, slide_name, model, parameters, state, max_attempts, run_after,
                                     idempotency_key, created_at, updated_at)
                    VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)
                    ON CONFLICT(slide_sha256, model, parameters) DO NOTHING
                    RETURNING id
                    """, [.text(slide.sha256), .text(slide.originalName), .text(model), .text(parameters),
                          .integer(Int64(maxAttempts)), .real(now), SQLValue(idempotencyKey), .real(now), .real(now)])
                if let id = inserted.first?.int("id") {
                    try QueueWrites.recordEvent(db, JobID(id), attempt: 0, message: "queued", at: now)
                    return (try QueueWrites.fetch(db, JobID(id)), true)
                }
                let existing = try db.query(
                    "SELECT id FROM jobs WHERE slide_sha256 = ? AND model = ? AND parameters = ?",
                    [.text(slide.sha256), .text(model), .text(parameters)])
                guard let id = existing.first?.int("id") else { throw JobStoreError.database("enqueue lost its row") }
                return (try QueueWrites.fetch(db, JobID(id)), false)
            }
        }
    }

    // MARK: Claim and lease

    /// Claims the next runnable job in one atomic statement: sets the lease (owner, new token,
    /// expiry) and counts the attempt. Returns nil when nothing is runnable.
    public func claim(owner: String) throws(JobStoreError) -> (job: Job, lease: Lease)? {
        let now = clock()
        return try withConnection { db in
            try db.immediateTransaction {
                let rows = try db.query("""
                    UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?,
                        lease_token = lease_token + 1, lease_expires = ?, heartbeat_at = ?, claim_progress = tiles_done,
                        started_at = COALESCE(started_at, ?), updated_at = ?
                    WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= ?
                                ORDER BY run_after, id LIMIT 1)
                    RETURNING id, lease_token
                    """, [.text(owner), .real(now + self.leaseSeconds), .real(now), .real(now), .real(now), .real(now)])
                guard let row = rows.first, let id = row.int("id"), let token = row.int("lease_token") else { return nil }
                let job = try QueueWrites.fetch(db, JobID(id))
                try QueueWrites.recordEvent(db, job.id, attempt: job.attempts, message: "claimed by \(owner)", at: now)
                return (job, Lease(job: JobID(id), token: token, owner: owner))
            }
        }
    }

    /// Extends the lease. - Throws: `.leaseLost` when the lease was taken over or the job cancelled.
    public func heartbeat(_ lease: Lease) throws(JobStoreError) {
        let now = clock()
        try withConnection { db in try QueueWrites.heartbeat(db, lease, now: now, leaseSeconds: self.leaseSeconds) }
    }

    /// Returns expired leases to the queue: an interruption, never one of the slide's attempts.
    @discardableResult
    public func rescueExpiredLeases() throws(JobStoreError) -> [JobID] {
        let now = clock()
        return try withConnection { db in
            try db.immediateTransaction {
                let expired = try db.query(
                    "SELECT id FROM jobs WHERE state = 'running' AND lease_expires < ?", [.real(now)]).compactMap { $0.int("id") }
                for id in expired {
                    try QueueWrites.releaseLease(db, JobID(id), reason: "lease expired", now: now, backoffBase: self.backoffSeconds)
                }
                return expired.map(JobID.init)
            }
        }
    }

    /// Releases the leases of `owners` right away (e.g. workers on this host whose process is gone).
    @discardableResult
    public func releaseLeases(ownedBy owners: [String], reason: String, interrupted: Bool) throws(JobStoreError) -> [JobID] {
        guard !owners.isEmpty else { return [] }
        let now = clock()
        return try withConnection { db in
            try db.immediateTransaction {
                let marks = Array(repeating: "?", count: owners.count).joined(separator: ",")
                let ids = try db.query("SELECT id FROM jobs WHERE state = 'running' AND lease_owner IN (\(marks))",
                                       owners.map { .text($0) }).compactMap { $0.int("id") }
                for id in ids {
                    try QueueWrites.releaseLease(db, JobID(id), reason: reason, now: now, backoffBase: self.backoffSeconds,
                                                 interrupted: interrupted)
                }
                return ids.map(JobID.init)
            }
        }
    }

    /// Owners holding running leases.
    public func leaseOwners() throws(JobStoreError) -> [String] {
        try QueueReads.leaseOwners(rows)
    }

    // MARK: Progress, results, completion

    /// Records the tile total of a running job (known once the tile grid is built).
    public func setTotal(_ lease: Lease, tiles: Int) throws(JobStoreError) {
        let now = clock()
        try withConnection { db in try QueueWrites.setTotal(db, lease, tiles: tiles, now: now) }
    }

    /// Commits a chunk of tile results and the new progress in one transaction, fenced by the
    /// lease. Re-committing the same tiles replaces them (idempotent).
    public func checkpoint(_ lease: Lease, results: [TileResult], tilesDone: Int) throws(JobStoreError) {
        let now = clock()
        try withConnection { db in
            try db.immediateTransaction {
                try QueueWrites.progress(db, lease, tilesDone: tilesDone, now: now, leaseSeconds: self.leaseSeconds)
                for result in results {
                    let blob = result.scores.withUnsafeBufferPointer { Data(buffer: $0) }
                    let embedding = result.embedding.map { values in values.withUnsafeBufferPointer { SQLValue.blob(Data(buffer: $0)) } }
                    try db.query("""
                        INSERT INTO tile_results(job_id, tile_index, scores, embedding) VALUES (?, ?, ?, ?)
                        ON CONFLICT(job_id, tile_index) DO UPDATE SET scores = excluded.scores, embedding = excluded.embedding
                        """, [.integer(Int64(lease.job.rawValue)), .integer(Int64(result.index)), .blob(blob), embedding ?? .null])
                }
            }
        }
    }

    /// Tile results of a job, by tile index.
    public func results(of id: JobID) throws(JobStoreError) -> [TileResult] {
        try withReader { db in try QueueWrites.results(db, of: id) }
    }

    /// Marks the job done (fenced by the lease).
    public func complete(_ lease: Lease, outputDirectory: String?) throws(JobStoreError) {
        let now = clock()
        try withConnection { db in
            try db.immediateTransaction { try QueueWrites.complete(db, lease, outputDirectory: outputDirectory, now: now) }
        }
    }

    /// Records a failed attempt: back to the queue after an exponential backoff, or `failed`
    /// with `reason` once attempts are used up (`permanent` fails at once, e.g. an unreadable slide
    /// format). Fenced by the lease.
    public func fail(_ lease: Lease, reason: String, permanent: Bool = false) throws(JobStoreError) {
        let now = clock()
        try withConnection { db in
            try db.immediateTransaction {
                try QueueWrites.fail(db, lease, reason: reason, permanent: permanent, now: now, backoffBase: self.backoffSeconds)
            }
        }
    }

    /// Cancels a queued or running job (a running worker finds out at its next write). Returns the job.
    @discardableResult
    public func cancel(_ id: JobID) throws(JobStoreError) -> Job {
        let now = clock()
        return try withConnection { db in try db.immediateTransaction { try QueueWrites.cancel(db, id, now: now) } }
    }

    /// Queues a failed or cancelled job again (fresh attempts, checkpoints kept); returns the job.
    public func retry(_ id: JobID) throws(JobStoreError) -> Job {
        let now = clock()
        return try withConnection { db in try db.immediateTransaction { try QueueWrites.retry(db, id, now: now) } }
    }

    // MARK: Reading

    /// Runs one statement under the lock.
    func execute(_ sql: String, _ arguments: [SQLValue]) throws(JobStoreError) {
        try withConnection { db in _ = try db.query(sql, arguments) }
    }

    /// Runs one query under the lock and returns its rows.
    func rows(_ sql: String, _ arguments: [SQLValue]) throws(JobStoreError) -> [SQLRow] {
        try withReader { db in try db.query(sql, arguments) }
    }

    /// One job. - Throws: `.notFound`.
    public func job(_ id: JobID) throws(JobStoreError) -> Job {
        try withReader { db in try QueueWrites.fetch(db, id) }
    }

    /// Jobs, newest first, optionally in one state.
    public func jobs(state: JobState? = nil, limit: Int = 100, offset: Int = 0) throws(JobStoreError) -> [Job] {
        try QueueReads.jobs(rows, state: state, limit: limit, offset: offset)
    }

    /// Number of jobs in each state.
    public func counts() throws(JobStoreError) -> [JobState: Int] {
        try QueueReads.counts(rows)
    }

    /// The job's history: (attempt, message, time), oldest first.
    public func events(of id: JobID) throws(JobStoreError) -> [(attempt: Int?, message: String, at: Double)] {
        try QueueReads.events(rows, of: id)
    }

    /// `PRAGMA integrity_check` result ("ok" when sound).
    public func integrityCheck() throws(JobStoreError) -> String {
        try withConnection { db in
            try db.query("PRAGMA integrity_check").compactMap { $0.string("integrity_check") }.joined(separator: "; ")
        }
    }

    static let jobColumns = """
        SELECT j.*, s.path AS slide_path, s.original_name AS slide_original_name, s.size AS slide_size
        FROM jobs j JOIN slides s ON s.sha256 = j.slide_sha256
        """

    static func decodeJob(_ row: SQLRow) -> Job {
        Job(id: JobID(row.int("id") ?? 0),
            slide: StoredSlide(sha256: row.string("slide_sha256") ?? "", path: row.string("slide_path") ?? "",
                               originalName: row.string("slide_name") ?? "", size: row.int("slide_size") ?? 0),
            model: row.string("model") ?? "", parameters: row.string("parameters") ?? "{}",
            state: row.string("state").flatMap(JobState.init(rawValue:)) ?? .failed,
            attempts: row.int("attempts") ?? 0, maxAttempts: row.int("max_attempts") ?? 0,
            runAfter: row.double("run_after") ?? 0, leaseOwner: row.string("lease_owner"),
            leaseToken: row.int("lease_token") ?? 0, leaseExpires: row.double("lease_expires"),
            heartbeatAt: row.double("heartbeat_at"), tilesDone: row.int("tiles_done") ?? 0,
            tilesTotal: row.int("tiles_total"), error: row.string("error"), outputDirectory: row.string("output_dir"),
            createdAt: row.double("created_at") ?? 0, startedAt: row.double("started_at"),
            finishedAt: row.double("finished_at"), updatedAt: row.double("updated_at") ?? 0,
            interruptions: row.int("interruptions") ?? 0)
    }

}
