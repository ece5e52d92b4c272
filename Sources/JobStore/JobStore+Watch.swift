import Foundation

/// A file the watch-folder daemon has dealt with.
public struct WatchedFile: Sendable, Equatable {
    public var path: String
    public var size: Int
    public var modified: Double
    public var sha256: String?
    public var job: JobID?
    /// `queued` (a job exists), `rejected` (not a readable slide), `moved` (filed into done/ or failed/).
    public var state: String
    public var reason: String?

    public init(path: String, size: Int, modified: Double, sha256: String?, job: JobID?, state: String, reason: String?) {
        self.path = path
        self.size = size
        self.modified = modified
        self.sha256 = sha256
        self.job = job
        self.state = state
        self.reason = reason
    }
}

extension JobStore: JobQueue {
    /// The record of a watched path, if any.
    public func watchedFile(path: String) throws(JobStoreError) -> WatchedFile? {
        try QueueReads.watchedFile(rows, path: path)
    }

    /// Records (or replaces) what was done with a watched path.
    public func recordWatchedFile(_ file: WatchedFile) throws(JobStoreError) {
        let now = self.now
        try execute("""
            INSERT INTO watched_files(path, size, mtime, sha256, job_id, state, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime = excluded.mtime, sha256 = excluded.sha256,
                job_id = excluded.job_id, state = excluded.state, reason = excluded.reason, updated_at = excluded.updated_at
            """, [.text(file.path), .integer(Int64(file.size)), .real(file.modified), SQLValue(file.sha256),
                  SQLValue(file.job?.rawValue), .text(file.state), SQLValue(file.reason), .real(now)])
    }

    /// Watched files whose job has finished but that have not been filed away yet.
    public func watchedFilesWithFinishedJobs() throws(JobStoreError) -> [(WatchedFile, Job)] {
        try QueueReads.watchedFilesWithFinishedJobs(rows, job: job)
    }
}

extension WatchedFile {
    /// A `watched_files` row.
    init(row: SQLRow) {
        self.init(path: row.string("path") ?? "", size: row.int("size") ?? 0, modified: row.double("mtime") ?? 0,
                  sha256: row.string("sha256"), job: row.int("job_id").map(JobID.init), state: row.string("state") ?? "",
                  reason: row.string("reason"))
    }
}
