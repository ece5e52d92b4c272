import Foundation

/// The job queue on a PostgreSQL server, shared by several worker replicas. Same tables, states
/// and rules as the SQLite `JobStore`; claims pick the next runnable row with
/// `SELECT ... FOR UPDATE SKIP LOCKED` inside a transaction, so concurrent claimers never wait
/// on each other nor take the same job. Every time written is the store's clock value, passed
/// as a parameter (never the server's `now()`), so lease expiry and backoff behave exactly as
/// on SQLite. Two connections per store (writes, reads), each used under its own lock.
public final class PostgresJobStore: JobQueue, @unchecked Sendable {
    // @unchecked: `connection` is only touched while `lock` is held, `reader` under `readLock`.
    private let connection: PostgresConnection
    private let lock = NSLock()
    private let reader: PostgresConnection
    private let readLock = NSLock()
    private let clock: @Sendable () -> Double
    /// The connection URL with any password hidden.
    public let location: String
    /// Lease length in seconds; a worker heartbeats well within it.
    public let leaseSeconds: Double
    /// First retry delay in seconds; doubles each attempt.
    public let backoffSeconds: Double

    /// Connects to `url` (`postgres://user@host:port/db`, or any libpq connection string) and
    /// creates or migrates the schema.
    public init(url: String, leaseSeconds: Double = 30, backoffSeconds: Double = 2,
                clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) throws(JobStoreError) {
        location = PostgresConnection.redacted(url)
        self.leaseSeconds = leaseSeconds
        self.backoffSeconds = backoffSeconds
        self.clock = clock
        do {
            connection = try PostgresConnection(url: url)
            try PostgresMigrator.migrate(connection)
            reader = try PostgresConnection(url: url)
        } catch let error as JobStoreError {
            throw error
        } catch {
            throw .database("\(error)")
        }
    }

    /// Runs `body` on the write connection under the lock, mapping errors.
    private func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws(JobStoreError) -> T {
        try connection.locked(by: lock, body)
    }

    /// Runs `body` in a transaction, again when PostgreSQL reports a serialization failure or deadlock.
    private func inTransaction<T>(_ body: (PostgresConnection) throws -> T) throws(JobStoreError) -> T {
        try withConnection { db in
            var attempt = 0
            while true {
                do {
                    return try db.transaction { try body(db) }
                } catch let error as PostgresError where error.isRetryable && attempt < 5 {
                    attempt += 1
                    Thread.sleep(forTimeInterval: 0.01 * Double(attempt))
                }
            }
        }
    }

    /// Runs a read-only `body` on the reader connection.
    private func withReader<T>(_ body: (PostgresConnection) throws -> T) throws(JobStoreError) -> T {
        try reader.locked(by: readLock, body)
    }

    /// Current time in seconds since 1970 (from the store's clock).
    public var now: Double { clock() }

    // MARK: Enqueue

    public func enqueue(slide: StoredSlide, model: String, parameters: String = "{}", maxAttempts: Int = 3,
                        idempotencyKey: String? = nil) throws(JobStoreError) -> (job: Job, created: Bool) {
        let now = clock()
        return try inTransaction { db in
            func existing() throws -> JobID? {
                if let idempotencyKey,
                   let id = try db.query("SELECT id FROM jobs WHERE idempotency_key = $1", [.text(idempotencyKey)]).first?.int("id") {
                    return JobID(id)
                }
                return try db.query("SELECT id FROM jobs WHERE slide_sha256 = $1 AND model = $2 AND parameters = $3",
                                    [.text(slide.sha256), .text(model), .text(parameters)]).first?.int("id").map(JobID.init)
            }
            if idempotencyKey != nil, let id = try existing() { return (try QueueWrites.fetch(db, id), false) }
            try db.query("""
                INSERT INTO slides(sha256, path, original_name, size, created_at) VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (sha256) DO NOTHING
                """, [.text(slide.sha256), .text(slide.path), .text(slide.originalName), .integer(Int64(slide.size)), .real(now)])
            // No conflict target: a concurrent insert with the same idempotency key or the same
            // (slide, model, parameters) waits for the other transaction, then yields to it.
            let inserted = try db.query("""
                INSERT INTO jobs(slide_sha256, slide_name, model, parameters, state, max_attempts, run_after,
                                 idempotency_key, created_at, updated_at)
                VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $6, $6)
                ON CONFLICT DO NOTHING
                RETURNING id
                """, [.text(slide.sha256), .text(slide.originalName), .text(model), .text(parameters),
                      .integer(Int64(maxAttempts)), .real(now), SQLValue(idempotencyKey)])
            if let id = inserted.first?.int("id") {
                try QueueWrites.recordEvent(db, JobID(id), attempt: 0, message: "queued", at: now)
                return (try QueueWrites.fetch(db, JobID(id)), true)
            }
            guard let id = try existing() else { throw JobStoreError.database("enqueue lost its row") }
            return (try QueueWrites.fetch(db, id), false)
        }
    }

    // MARK: Claim and lease

    public func claim(owner: String) throws(JobStoreError) -> (job: Job, lease: Lease)? {
        let now = clock()
        return try inTransaction { db in
            let rows = try db.query("""
                UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
                    lease_token = lease_token + 1, lease_expires = $2, heartbeat_at = $3, claim_progress = tiles_done,
                    started_at = COALESCE(started_at, $3), updated_at = $3
                WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= $3
                            ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING id, lease_token
                """, [.text(owner), .real(now + self.leaseSeconds), .real(now)])
            guard let row = rows.first, let id = row.int("id"), let token = row.int("lease_token") else { return nil }
            let job = try QueueWrites.fetch(db, JobID(id))
            try QueueWrites.recordEvent(db, job.id, attempt: job.attempts, message: "claimed by \(owner)", at: now)
            return (job, Lease(job: JobID(id), token: token, owner: owner))
        }
    }

    public func heartbeat(_ lease: Lease) throws(JobStoreError) {
        let now = clock()
        try withConnection { db in try QueueWrites.heartbeat(db, lease, now: now, leaseSeconds: self.leaseSeconds) }
    }

    @discardableResult
    public func rescueExpiredLeases() throws(JobStoreError) -> [JobID] {
        let now = clock()
        return try inTransaction { db in
            // SKIP LOCKED: a row another replica is rescuing (or a worker is writing) is left to it.
            let expired = try db.query("""
                SELECT id FROM jobs WHERE state = 'running' AND lease_expires < $1 ORDER BY id FOR UPDATE SKIP LOCKED
                """, [.real(now)]).compactMap { $0.int("id") }
            for id in expired {
                try QueueWrites.releaseLease(db, JobID(id), reason: "lease expired", now: now, backoffBase: self.backoffSeconds)
            }
            return expired.map(JobID.init)
        }
    }

    @discardableResult
    public func releaseLeases(ownedBy owners: [String], reason: String, interrupted: Bool) throws(JobStoreError) -> [JobID] {
        guard !owners.isEmpty else { return [] }
        let now = clock()
        return try inTransaction { db in
            let marks = (1...owners.count).map { "$\($0)" }.joined(separator: ",")
            let ids = try db.query("SELECT id FROM jobs WHERE state = 'running' AND lease_owner IN (\(marks)) ORDER BY id FOR UPDATE",
                                   owners.map { .text($0) }).compactMap { $0.int("id") }
            for id in ids {
                try QueueWrites.releaseLease(db, JobID(id), reason: reason, now: now, backoffBase: self.backoffSeconds,
                                             interrupted: interrupted)
            }
            return ids.map(JobID.init)
        }
    }

    public func leaseOwners() throws(JobStoreError) -> [String] {
        try QueueReads.leaseOwners(rows)
    }

    // MARK: Progress, results, completion

    public func setTotal(_ lease: Lease, tiles: Int) throws(JobStoreError) {
        let now = clock()
        try withConnection { db in try QueueWrites.setTotal(db, lease, tiles: tiles, now: now) }
    }

    public func checkpoint(_ lease: Lease, results: [TileResult], tilesDone: Int) throws(JobStoreError) {
        let now = clock()
        // One row per tile index (the last wins, as with row-by-row upserts); sent in multi-row batches.
        var latest: [Int: TileResult] = [:]
        for result in results { latest[result.index] = result }
        let rows = latest.values.sorted { $0.index < $1.index }
        try inTransaction { db in
            try QueueWrites.progress(db, lease, tilesDone: tilesDone, now: now, leaseSeconds: self.leaseSeconds)
            for start in stride(from: 0, to: rows.count, by: 500) {
                let batch = rows[start..<min(rows.count, start + 500)]
                var arguments: [SQLValue] = [.integer(Int64(lease.job.rawValue))]
                var tuples: [String] = []
                for result in batch {
                    let n = arguments.count
                    tuples.append("($1, $\(n + 1), $\(n + 2), $\(n + 3))")
                    arguments.append(.integer(Int64(result.index)))
                    arguments.append(.blob(result.scores.withUnsafeBufferPointer { Data(buffer: $0) }))
                    arguments.append(result.embedding.map { values in values.withUnsafeBufferPointer { SQLValue.blob(Data(buffer: $0)) } } ?? .null)
                }
                try db.query("""
                    INSERT INTO tile_results(job_id, tile_index, scores, embedding) VALUES \(tuples.joined(separator: ", "))
                    ON CONFLICT (job_id, tile_index) DO UPDATE SET scores = excluded.scores, embedding = excluded.embedding
                    """, arguments)
            }
        }
    }

    public func results(of id: JobID) throws(JobStoreError) -> [TileResult] {
        try withReader { db in try QueueWrites.results(db, of: id) }
    }

    public func complete(_ lease: Lease, outputDirectory: String?) throws(JobStoreError) {
        let now = clock()
        try inTransaction { db in try QueueWrites.complete(db, lease, outputDirectory: outputDirectory, now: now) }
    }

    public func fail(_ lease: Lease, reason: String, permanent: Bool = false) throws(JobStoreError) {
        let now = clock()
        try inTransaction { db in
            try self.lockRow(db, lease.job)
            try QueueWrites.fail(db, lease, reason: reason, permanent: permanent, now: now, backoffBase: self.backoffSeconds)
        }
    }

    @discardableResult
    public func cancel(_ id: JobID) throws(JobStoreError) -> Job {
        let now = clock()
        return try inTransaction { db in try QueueWrites.cancel(db, id, now: now) }
    }

    /// Queues a failed or cancelled job again (fresh attempts, checkpoints kept); returns the job.
    public func retry(_ id: JobID) throws(JobStoreError) -> Job {
        let now = clock()
        return try inTransaction { db in try QueueWrites.retry(db, id, now: now) }
    }

    // MARK: Reading

    public func job(_ id: JobID) throws(JobStoreError) -> Job {
        try withReader { db in try QueueWrites.fetch(db, id) }
    }

    public func jobs(state: JobState? = nil, limit: Int = 100, offset: Int = 0) throws(JobStoreError) -> [Job] {
        try QueueReads.jobs(rows, state: state, limit: limit, offset: offset)
    }

    public func counts() throws(JobStoreError) -> [JobState: Int] {
        try QueueReads.counts(rows)
    }

    public func events(of id: JobID) throws(JobStoreError) -> [(attempt: Int?, message: String, at: Double)] {
        try QueueReads.events(rows, of: id)
    }

    /// Runs one query on the reader connection and returns its rows.
    func rows(_ sql: String, _ arguments: [SQLValue]) throws(JobStoreError) -> [SQLRow] {
        try withReader { db in try db.query(sql, arguments) }
    }

    /// "ok" when the schema is current and the queue's invariants hold (PostgreSQL looks after
    /// its own pages): running jobs hold a lease, finished ones none, every result belongs to a job.
    public func integrityCheck() throws(JobStoreError) -> String {
        try withReader { db in
            var problems: [String] = []
            let version = try db.query("SELECT version FROM tessera_schema").first?.int("version") ?? 0
            if version != PostgresMigrator.latestVersion {
                problems.append("schema version \(version), expected \(PostgresMigrator.latestVersion)")
            }
            let checks = [
                ("running jobs without a lease", "state = 'running' AND (lease_owner IS NULL OR lease_expires IS NULL)"),
                ("finished or queued jobs holding a lease", "state <> 'running' AND lease_owner IS NOT NULL"),
                ("jobs with more progress than tiles", "tiles_total IS NOT NULL AND tiles_done > tiles_total"),
            ]
            for (name, condition) in checks {
                let n = try db.query("SELECT COUNT(*) AS n FROM jobs WHERE \(condition)").first?.int("n") ?? 0
                if n > 0 { problems.append("\(n) \(name)") }
            }
            let orphans = try db.query("""
                SELECT COUNT(*) AS n FROM tile_results r WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.job_id)
                """).first?.int("n") ?? 0
            if orphans > 0 { problems.append("\(orphans) tile results without a job") }
            return problems.isEmpty ? "ok" : problems.joined(separator: "; ")
        }
    }

    // MARK: Watched files

    public func watchedFile(path: String) throws(JobStoreError) -> WatchedFile? {
        try QueueReads.watchedFile(rows, path: path)
    }

    public func recordWatchedFile(_ file: WatchedFile) throws(JobStoreError) {
        let now = clock()
        try withConnection { db in
            _ = try db.query("""
                INSERT INTO watched_files(path, size, mtime, sha256, job_id, state, reason, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime = excluded.mtime, sha256 = excluded.sha256,
                    job_id = excluded.job_id, state = excluded.state, reason = excluded.reason, updated_at = excluded.updated_at
                """, [.text(file.path), .integer(Int64(file.size)), .real(file.modified), SQLValue(file.sha256),
                      SQLValue(file.job?.rawValue), .text(file.state), SQLValue(file.reason), .real(now)])
        }
    }

    public func watchedFilesWithFinishedJobs() throws(JobStoreError) -> [(WatchedFile, Job)] {
        try QueueReads.watchedFilesWithFinishedJobs(rows, job: job)
    }

    // MARK: Rows

    private func lockRow(_ db: PostgresConnection, _ id: JobID) throws {
        try db.query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", [.integer(Int64(id.rawValue))])
    }

}

/// The PostgreSQL schema: the SQLite tables with PostgreSQL types, versioned in `tessera_schema`.
/// Replicas starting together take an advisory lock, so exactly one of them migrates.
enum PostgresMigrator {
    static let migrations: [String] = [
        // 1: slides, jobs, their history and per-tile results.
        """
        CREATE TABLE slides(
            sha256 text PRIMARY KEY,
            path text NOT NULL,
            original_name text NOT NULL,
            size bigint NOT NULL,
            created_at double precision NOT NULL
        );
        CREATE TABLE jobs(
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            slide_sha256 text NOT NULL REFERENCES slides(sha256),
            slide_name text NOT NULL,
            model text NOT NULL,
            parameters text NOT NULL DEFAULT '{}',
            state text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            attempts bigint NOT NULL DEFAULT 0,
            max_attempts bigint NOT NULL DEFAULT 3,
            run_after double precision NOT NULL,
            lease_owner text,
            lease_token bigint NOT NULL DEFAULT 0,
            lease_expires double precision,
            heartbeat_at double precision,
            claim_progress bigint NOT NULL DEFAULT 0,
            tiles_done bigint NOT NULL DEFAULT 0,
            tiles_total bigint,
            error text,
            output_dir text,
            idempotency_key text UNIQUE,
            created_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            updated_at double precision NOT NULL,
            UNIQUE (slide_sha256, model, parameters)
        );
        CREATE INDEX jobs_runnable ON jobs(run_after, id) WHERE state = 'queued';
        CREATE INDEX jobs_running ON jobs(lease_expires) WHERE state = 'running';
        CREATE TABLE job_events(
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            job_id bigint NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            attempt bigint,
            message text NOT NULL,
            at double precision NOT NULL
        );
        CREATE INDEX job_events_job ON job_events(job_id, id);
        CREATE TABLE tile_results(
            job_id bigint NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            tile_index bigint NOT NULL,
            scores bytea NOT NULL,
            embedding bytea,
            PRIMARY KEY (job_id, tile_index)
        );
        """,
        // 2: files seen by the watch-folder daemon.
        """
        CREATE TABLE watched_files(
            path text PRIMARY KEY,
            size bigint NOT NULL,
            mtime double precision NOT NULL,
            sha256 text,
            job_id bigint REFERENCES jobs(id),
            state text NOT NULL,
            reason text,
            updated_at double precision NOT NULL
        );
        CREATE INDEX watched_files_job ON watched_files(job_id);
        """,
        // 3: leases lost without progress (a worker or server that died), counted apart from attempts.
        """
        ALTER TABLE jobs ADD COLUMN interruptions integer NOT NULL DEFAULT 0;
        """,
    ]

    /// Brings the schema to the latest version in one transaction.
    static func migrate(_ db: PostgresConnection) throws {
        try db.transaction {
            try db.query("SELECT pg_advisory_xact_lock(\(advisoryLock))")
            try db.execute("CREATE TABLE IF NOT EXISTS tessera_schema(version integer NOT NULL)")
            let version = try db.query("SELECT version FROM tessera_schema").first?.int("version")
            if version == nil { try db.execute("INSERT INTO tessera_schema(version) VALUES (0)") }
            let current = version ?? 0
            guard current < migrations.count else { return }
            for index in current..<migrations.count { try db.execute(migrations[index]) }
            try db.query("UPDATE tessera_schema SET version = $1", [.integer(Int64(migrations.count))])
        }
    }

    /// The advisory lock key that serialises migrations ("tessera" in ASCII, truncated).
    static let advisoryLock: Int64 = 0x7465_7373_6572_61

    /// The schema version this build writes.
    static var latestVersion: Int { migrations.count }
}
