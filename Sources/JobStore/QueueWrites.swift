import Foundation

/// What the queue statements need of a connection; SQLite's and PostgreSQL's both have it.
protocol QueueConnection: AnyObject {
    @discardableResult func query(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow]
    /// Runs statements without arguments (and without results).
    func execute(_ sql: String) throws
    /// Rows changed by the last statement.
    var changes: Int { get }
}

extension QueueConnection {
    /// Runs `body` on this connection while holding `lock`, mapping errors to `JobStoreError`.
    func locked<T>(by lock: NSLock, _ body: (Self) throws -> T) throws(JobStoreError) -> T {
        lock.lock()
        defer { lock.unlock() }
        do {
            return try body(self)
        } catch let error as JobStoreError {
            throw error
        } catch {
            throw .database("\(error)")
        }
    }

    /// Runs `body` between `begin` (e.g. `BEGIN IMMEDIATE`) and `COMMIT`, rolling back on any error.
    func transaction<T>(begin: String, _ body: () throws -> T) throws -> T {
        try execute(begin)
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }
}

extension SQLiteConnection: QueueConnection {}
extension PostgresConnection: QueueConnection {}

/// The row-level statements both job-queue backends share, written once and run inside the
/// caller's transaction. Placeholders are `$1`, `$2`, ... in order of first use (see `QueueReads`).
/// What differs per backend stays in the stores: transactions, claims, row locks, enqueue.
enum QueueWrites {
    /// One job. - Throws: `.notFound`.
    static func fetch(_ db: some QueueConnection, _ id: JobID) throws -> Job {
        guard let row = try db.query("\(JobStore.jobColumns) WHERE j.id = $1", [.integer(Int64(id.rawValue))]).first else {
            throw JobStoreError.notFound(id)
        }
        return JobStore.decodeJob(row)
    }

    static func recordEvent(_ db: some QueueConnection, _ id: JobID, attempt: Int?, message: String, at time: Double) throws {
        try db.query("INSERT INTO job_events(job_id, attempt, message, at) VALUES ($1, $2, $3, $4)",
                     [.integer(Int64(id.rawValue)), SQLValue(attempt), .text(message), .real(time)])
    }

    /// Seconds before a job that failed `attempts` times may run again: `base` doubling, at most an hour.
    static func backoff(base: Double, attempts: Int) -> Double {
        min(3600, base * pow(2, Double(max(0, attempts - 1))))
    }

    /// Leases lost in a row without progress after which a job fails (it keeps taking its worker down).
    static let maxInterruptions = 10

    /// Returns a running job to the queue. The claim's attempt is given back: the worker was lost,
    /// the slide did not fail. With `interrupted` (the owner died or its lease ran out) a loss
    /// without progress since the claim counts an interruption and waits a backoff (at most 10 s); progress
    /// resets the count; `maxInterruptions` in a row fail the job.
    static func releaseLease(_ db: some QueueConnection, _ id: JobID, reason: String, now: Double, backoffBase: Double,
                             interrupted: Bool = true) throws {
        let job = try fetch(db, id)
        let progressed = try db.query("SELECT tiles_done > claim_progress AS p FROM jobs WHERE id = $1",
                                      [.integer(Int64(id.rawValue))]).first?.int("p") == 1
        let attempts = max(0, job.attempts - 1)
        let interruptions = !interrupted ? job.interruptions : progressed ? 0 : job.interruptions + 1
        let message = "\(reason) (owner \(job.leaseOwner ?? "?"))"
        try recordEvent(db, id, attempt: job.attempts, message: message, at: now)
        if interruptions >= maxInterruptions {
            let error = "[worker_lost] the worker was lost \(interruptions) times in a row without finishing a checkpoint "
                + "on this slide (last: \(message)); retry it once the cause is found"
            try db.query("""
                UPDATE jobs SET state = 'failed', attempts = $1, interruptions = $2, lease_owner = NULL, lease_expires = NULL,
                    error = $3, finished_at = $4, updated_at = $4 WHERE id = $5
                """, [.integer(Int64(attempts)), .integer(Int64(interruptions)), .text(error), .real(now),
                      .integer(Int64(id.rawValue))])
        } else {
            let runAfter = interrupted && !progressed ? now + min(10, backoff(base: backoffBase, attempts: interruptions)) : now
            try db.query("""
                UPDATE jobs SET state = 'queued', attempts = $1, interruptions = $2, lease_owner = NULL, lease_expires = NULL,
                    run_after = $3, updated_at = $4 WHERE id = $5
                """, [.integer(Int64(attempts)), .integer(Int64(interruptions)), .real(runAfter), .real(now),
                      .integer(Int64(id.rawValue))])
        }
    }

    /// Runs an UPDATE that ends in `WHERE id = $n AND lease_token = $n+1 AND state = 'running'`
    /// (the two fencing arguments appended here). - Throws: `.leaseLost` when no row matched.
    static func fenced(_ db: some QueueConnection, _ lease: Lease, _ sql: String, _ arguments: [SQLValue]) throws {
        let n = arguments.count
        try db.query(sql + " WHERE id = $\(n + 1) AND lease_token = $\(n + 2) AND state = 'running'",
                     arguments + [.integer(Int64(lease.job.rawValue)), .integer(Int64(lease.token))])
        if db.changes == 0 { throw JobStoreError.leaseLost(lease.job) }
    }

    static func heartbeat(_ db: some QueueConnection, _ lease: Lease, now: Double, leaseSeconds: Double) throws {
        try fenced(db, lease, "UPDATE jobs SET lease_expires = $1, heartbeat_at = $2, updated_at = $2",
                   [.real(now + leaseSeconds), .real(now)])
    }

    static func setTotal(_ db: some QueueConnection, _ lease: Lease, tiles: Int, now: Double) throws {
        try fenced(db, lease, "UPDATE jobs SET tiles_total = $1, updated_at = $2", [.integer(Int64(tiles)), .real(now)])
    }

    /// The progress half of a checkpoint (the caller writes the tile results in the same transaction).
    static func progress(_ db: some QueueConnection, _ lease: Lease, tilesDone: Int, now: Double, leaseSeconds: Double) throws {
        try fenced(db, lease, "UPDATE jobs SET tiles_done = $1, lease_expires = $2, heartbeat_at = $3, updated_at = $3",
                   [.integer(Int64(tilesDone)), .real(now + leaseSeconds), .real(now)])
    }

    static func complete(_ db: some QueueConnection, _ lease: Lease, outputDirectory: String?, now: Double) throws {
        try fenced(db, lease, """
            UPDATE jobs SET state = 'done', output_dir = $1, error = NULL, lease_owner = NULL, lease_expires = NULL,
                finished_at = $2, updated_at = $2
            """, [SQLValue(outputDirectory), .real(now)])
        try recordEvent(db, lease.job, attempt: nil, message: "done", at: now)
    }

    /// A failed attempt: back to the queue after the backoff, or `failed` once attempts are used up
    /// (`permanent` at once). The caller holds the row (a transaction, and a row lock where there are any).
    static func fail(_ db: some QueueConnection, _ lease: Lease, reason: String, permanent: Bool, now: Double,
                     backoffBase: Double) throws {
        let job = try fetch(db, lease.job)
        guard job.state == .running, job.leaseToken == lease.token else { throw JobStoreError.leaseLost(lease.job) }
        try recordEvent(db, lease.job, attempt: job.attempts, message: reason, at: now)
        if permanent || job.attempts >= job.maxAttempts {
            try db.query("""
                UPDATE jobs SET state = 'failed', error = $1, lease_owner = NULL, lease_expires = NULL,
                    finished_at = $2, updated_at = $2 WHERE id = $3
                """, [.text(reason), .real(now), .integer(Int64(lease.job.rawValue))])
        } else {
            try db.query("""
                UPDATE jobs SET state = 'queued', error = $1, lease_owner = NULL, lease_expires = NULL,
                    run_after = $2, updated_at = $3 WHERE id = $4
                """, [.text(reason), .real(now + backoff(base: backoffBase, attempts: job.attempts)), .real(now),
                      .integer(Int64(lease.job.rawValue))])
        }
    }

    /// Queues a failed or cancelled job again with a fresh attempt budget, keeping its checkpoints;
    /// returns it (unchanged when it was in another state).
    static func retry(_ db: some QueueConnection, _ id: JobID, now: Double) throws -> Job {
        try db.query("""
            UPDATE jobs SET state = 'queued', attempts = 0, interruptions = 0, error = NULL, lease_owner = NULL, lease_expires = NULL,
                run_after = $1, finished_at = NULL, updated_at = $1 WHERE id = $2 AND state IN ('failed', 'cancelled')
            """, [.real(now), .integer(Int64(id.rawValue))])
        if db.changes > 0 { try recordEvent(db, id, attempt: 0, message: "queued again (retry)", at: now) }
        return try fetch(db, id)
    }

    /// Cancels a queued or running job; returns it.
    static func cancel(_ db: some QueueConnection, _ id: JobID, now: Double) throws -> Job {
        try db.query("""
            UPDATE jobs SET state = 'cancelled', lease_owner = NULL, lease_expires = NULL, finished_at = $1,
                updated_at = $1 WHERE id = $2 AND state IN ('queued', 'running')
            """, [.real(now), .integer(Int64(id.rawValue))])
        if db.changes > 0 { try recordEvent(db, id, attempt: nil, message: "cancelled", at: now) }
        return try fetch(db, id)
    }

    /// Tile results of a job, by tile index.
    static func results(_ db: some QueueConnection, of id: JobID) throws -> [TileResult] {
        func floats(_ data: Data) -> [Float] {
            var values = [Float](repeating: 0, count: data.count / MemoryLayout<Float>.size)
            _ = values.withUnsafeMutableBytes { data.copyBytes(to: $0) }
            return values
        }
        return try db.query("SELECT tile_index, scores, embedding FROM tile_results WHERE job_id = $1 ORDER BY tile_index",
                            [.integer(Int64(id.rawValue))]).map { row in
            TileResult(index: row.int("tile_index") ?? 0, scores: floats(row.data("scores") ?? Data()),
                       embedding: row.data("embedding").map(floats))
        }
    }
}
