import Foundation

/// The read queries both job-queue backends share, written once. Placeholders are `$1`, `$2`, ...
/// in order of first use: PostgreSQL's syntax, which SQLite reads as parameters bound by position.
/// `rows` runs one query on the backend's reader connection.
enum QueueReads {
    typealias Rows = (String, [SQLValue]) throws(JobStoreError) -> [SQLRow]

    /// Jobs, newest first, optionally in one state.
    static func jobs(_ rows: Rows, state: JobState?, limit: Int, offset: Int) throws(JobStoreError) -> [Job] {
        var sql = "\(JobStore.jobColumns) WHERE true"
        var arguments: [SQLValue] = []
        if let state {
            sql += " AND j.state = $1"
            arguments.append(.text(state.rawValue))
        }
        sql += " ORDER BY j.id DESC LIMIT $\(arguments.count + 1) OFFSET $\(arguments.count + 2)"
        arguments += [.integer(Int64(limit)), .integer(Int64(offset))]
        return try rows(sql, arguments).map(JobStore.decodeJob)
    }

    /// Owners holding running leases.
    static func leaseOwners(_ rows: Rows) throws(JobStoreError) -> [String] {
        try rows("SELECT DISTINCT lease_owner FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL", [])
            .compactMap { $0.string("lease_owner") }
    }

    /// Number of jobs in each state.
    static func counts(_ rows: Rows) throws(JobStoreError) -> [JobState: Int] {
        var counts = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0, 0) })
        for row in try rows("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state", []) {
            if let state = row.string("state").flatMap(JobState.init(rawValue:)) { counts[state] = row.int("n") ?? 0 }
        }
        return counts
    }

    /// A job's history: (attempt, message, time), oldest first.
    static func events(_ rows: Rows, of id: JobID) throws(JobStoreError) -> [(attempt: Int?, message: String, at: Double)] {
        try rows("SELECT attempt, message, at FROM job_events WHERE job_id = $1 ORDER BY id", [.integer(Int64(id.rawValue))])
            .map { ($0.int("attempt"), $0.string("message") ?? "", $0.double("at") ?? 0) }
    }

    /// The record of one watched path.
    static func watchedFile(_ rows: Rows, path: String) throws(JobStoreError) -> WatchedFile? {
        try rows("SELECT * FROM watched_files WHERE path = $1", [.text(path)]).first.map(WatchedFile.init(row:))
    }

    /// Watched files still marked queued whose jobs have finished, with those jobs.
    static func watchedFilesWithFinishedJobs(_ rows: Rows, job: (JobID) throws(JobStoreError) -> Job)
        throws(JobStoreError) -> [(WatchedFile, Job)] {
        let files = try rows("""
            SELECT * FROM watched_files WHERE state = 'queued'
                AND job_id IN (SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled')) ORDER BY path
            """, []).map(WatchedFile.init(row:))
        var result: [(WatchedFile, Job)] = []
        for file in files {
            if let id = file.job { result.append((file, try job(id))) }
        }
        return result
    }
}
