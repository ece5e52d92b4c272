import Foundation
import JobStore

/// Where Tessera keeps its job database, its content-addressed slide store and every job's
/// stored results (`DATA/outputs/<job id>/`).
public enum DataDirectory {
    /// `$TESSERA_DATA`, else `$XDG_DATA_HOME/tessera`, else `~/.local/share/tessera`.
    public static var defaultPath: String {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["TESSERA_DATA"], !explicit.isEmpty { return explicit }
        if let xdg = environment["XDG_DATA_HOME"], !xdg.isEmpty { return xdg + "/tessera" }
        return NSHomeDirectory() + "/.local/share/tessera"
    }

    /// `$TESSERA_QUEUE`, when set: the job queue URL for processes not given `--queue`.
    public static var defaultQueue: String? {
        ProcessInfo.processInfo.environment["TESSERA_QUEUE"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// `$TESSERA_LEASE_SECONDS`, when set: how long a claimed job stays leased without a heartbeat
    /// (default 30). Shorter leases hand a dead replica's jobs to others sooner.
    public static var leaseSeconds: Double {
        ProcessInfo.processInfo.environment["TESSERA_LEASE_SECONDS"].flatMap(Double.init).map { max(1, $0) } ?? 30
    }

    /// The folder holding every job's stored results.
    public static func outputs(_ path: String) -> String { path + "/outputs" }

    /// The content-addressed slide store.
    public static func slides(_ path: String) -> String { path + "/slides" }

    /// Opens the job queue: the PostgreSQL (or SQLite) store `queue` names, else the SQLite
    /// store in `path` (created when missing).
    /// - Throws: `UsageError` naming the flag when `path` is not a usable folder.
    public static func openStore(_ path: String, queue: String? = nil) throws -> any JobQueue {
        if let queue, !queue.isEmpty { return try JobQueueLocation(queue).open(leaseSeconds: leaseSeconds) }
        try prepare(path)
        return try JobStore(path: path + "/jobs.sqlite", leaseSeconds: leaseSeconds)
    }

    /// Creates the data folder when missing; a file in its place, or a folder that cannot be
    /// created, is a one-line error instead of a Foundation error.
    public static func prepare(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw UsageError("\(path): the data folder (--data, $TESSERA_DATA) is a file; give a folder")
            }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw UsageError("\(path): cannot create the data folder (--data, $TESSERA_DATA): "
                             + (FileManager.default.isWritableFile(atPath: (path as NSString).deletingLastPathComponent)
                                ? "a part of the path is not a folder" : "permission denied"))
        }
    }
}

/// A mistake in what the user asked for (a flag, a path, a parameter): one line that says what to do.
public struct UsageError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
