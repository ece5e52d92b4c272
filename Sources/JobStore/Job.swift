import Foundation

/// A job's identifier.
public struct JobID: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let rawValue: Int
    public init(_ rawValue: Int) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }
    public static func < (lhs: JobID, rhs: JobID) -> Bool { lhs.rawValue < rhs.rawValue }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(Int.self) }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// Where a job is in its life.
public enum JobState: String, Sendable, Codable, CaseIterable {
    case queued, running, done, failed, cancelled

    /// Whether the job will not change any more.
    public var isFinal: Bool { self == .done || self == .failed || self == .cancelled }
}

/// A slide stored by content.
public struct StoredSlide: Sendable, Equatable {
    /// Hex SHA-256 of the file's bytes.
    public var sha256: String
    /// Where the stored copy (or the original file) lives.
    public var path: String
    /// The name the user gave it.
    public var originalName: String
    /// Size in bytes.
    public var size: Int

    public init(sha256: String, path: String, originalName: String, size: Int) {
        self.sha256 = sha256
        self.path = path
        self.originalName = originalName
        self.size = size
    }
}

/// A job as stored.
public struct Job: Sendable, Equatable {
    public var id: JobID
    public var slide: StoredSlide
    public var model: String
    /// Parameters as canonical JSON text.
    public var parameters: String
    public var state: JobState
    public var attempts: Int
    public var maxAttempts: Int
    public var runAfter: Double
    public var leaseOwner: String?
    public var leaseToken: Int
    public var leaseExpires: Double?
    public var heartbeatAt: Double?
    public var tilesDone: Int
    public var tilesTotal: Int?
    /// The last error, one line.
    public var error: String?
    public var outputDirectory: String?
    public var createdAt: Double
    public var startedAt: Double?
    public var finishedAt: Double?
    public var updatedAt: Double
    /// Leases lost in a row without progress (the worker or server died); not attempts.
    public var interruptions: Int = 0
}

/// Proof that a worker holds a job: every write it makes is checked against the token, so a
/// worker whose lease expired and was taken over cannot write any more (fencing).
public struct Lease: Sendable, Equatable {
    public let job: JobID
    public let token: Int
    public let owner: String

    /// A lease handed on, e.g. from a worker to the process it runs the job in.
    public init(job: JobID, token: Int, owner: String) {
        self.job = job
        self.token = token
        self.owner = owner
    }
}

/// Why a queue operation was refused.
public enum JobStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The lease is no longer valid (expired and taken over, or the job was cancelled).
    case leaseLost(JobID)
    /// No such job.
    case notFound(JobID)
    /// The database failed its integrity check.
    case corrupt(String)
    /// SQLite reported an error.
    case database(String)

    public var description: String {
        switch self {
        case .leaseLost(let id): return "job \(id): lease lost (taken over or cancelled)"
        case .notFound(let id): return "job \(id): not found"
        case .corrupt(let message): return "job database is corrupt: \(message)"
        case .database(let message): return message
        }
    }
}

/// One tile's result, committed with a checkpoint.
public struct TileResult: Sendable, Equatable {
    /// Position of the tile in the job's tile list.
    public var index: Int
    /// Class scores (probabilities).
    public var scores: [Float]
    /// Penultimate-layer features, when the job asked for them.
    public var embedding: [Float]?

    public init(index: Int, scores: [Float], embedding: [Float]? = nil) {
        self.index = index
        self.scores = scores
        self.embedding = embedding
    }
}
