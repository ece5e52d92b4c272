import Foundation
import JobStore
import Logging

/// Options of `tessera run`.
public struct RunOptions: Sendable {
    public var model = ModelCatalog.defaultModel
    public var outputDirectory = "out"
    public var dataDirectory = DataDirectory.defaultPath
    /// Job queue URL (`postgres://...`); nil keeps the SQLite queue in the data folder.
    public var queue: String?
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public var batchSize = 64
    public var parameters = AnalysisParameters()
    public var modelsDirectory = ModelCatalog.directory
    public init() {}
}

/// One slide's line of `tessera run --json`.
public struct RunReport: Codable, Sendable {
    public var slide: String
    public var job: Int?
    public var state: String
    public var tilesTissue: Int?
    public var tilesPerSecond: Double?
    public var outputDir: String?
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case slide, job, state, error
        case tilesTissue = "tiles_tissue", tilesPerSecond = "tiles_per_second", outputDir = "output_dir"
    }
}

/// Where Tessera keeps its job database (and, for the server, stored slides).
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

    /// Opens the job queue: the PostgreSQL (or SQLite) store `queue` names, else the SQLite
    /// store in `path` (created when missing).
    public static func openStore(_ path: String, queue: String? = nil) throws -> any JobQueue {
        if let queue, !queue.isEmpty { return try JobQueueLocation(queue).open(leaseSeconds: leaseSeconds) }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return try JobStore(path: path + "/jobs.sqlite", leaseSeconds: leaseSeconds)
    }
}

/// `tessera run`: enqueues slides in the embedded job store and works the queue in this process
/// until they are all finished. A killed run resumes from its checkpoints when run again.
public enum SlideRun {
    public static func run(paths: [String], options: RunOptions, logger: Logger,
                           progress: (@Sendable (Job, Int, Int) -> Void)? = nil) throws -> [RunReport] {
        let store = try DataDirectory.openStore(options.dataDirectory, queue: options.queue)
        let models = ModelProvider(directory: options.modelsDirectory)
        let reference = try ModelCatalog.resolve(options.model, in: options.modelsDirectory)
        let output = (options.outputDirectory as NSString).standardizingPath
        var configuration = WorkerConfiguration(threads: options.threads, batchSize: options.batchSize) { job in
            output + "/" + SlideRun.folderName(for: job)
        }
        configuration.checkpointTiles = 8 * configuration.batchSize
        let worker = Worker(store: store, models: models, configuration: configuration, logger: logger)

        var reports: [RunReport?] = Array(repeating: nil, count: paths.count)
        var jobs: [(Int, JobID)] = []
        for (index, path) in paths.enumerated() {
            let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: absolute, isDirectory: &isDirectory), !isDirectory.boolValue else {
                reports[index] = RunReport(slide: path, state: "failed", error: "\(path): no such file")
                continue
            }
            let attributes = try? FileManager.default.attributesOfItem(atPath: absolute)
            let size = (attributes?[.size] as? NSNumber)?.intValue ?? 0
            let digest = try SHA256.hexDigest(ofFile: absolute)
            let slide = StoredSlide(sha256: digest, path: absolute, originalName: (absolute as NSString).lastPathComponent,
                                    size: size)
            let (job, _) = try store.enqueue(slide: slide, model: reference.identifier, parameters: options.parameters.canonicalJSON)
            jobs.append((index, job.id))
        }
        // Work the queue until every job of this run is finished (other jobs may be done on the way).
        while true {
            try worker.recoverLeases()
            while try worker.runNext(progress: progress) != nil {}
            let states = try jobs.map { try store.job($0.1) }
            if states.allSatisfy({ $0.state.isFinal }) { break }
            Thread.sleep(forTimeInterval: 0.25)
        }
        for (index, id) in jobs {
            let job = try store.job(id)
            var report = RunReport(slide: paths[index], job: id.rawValue, state: job.state.rawValue,
                                   tilesTissue: job.tilesTotal, outputDir: job.outputDirectory, error: job.error)
            if let directory = job.outputDirectory,
               let data = FileManager.default.contents(atPath: directory + "/summary.json"),
               let summary = try? JSONDecoder().decode(JobSummary.self, from: data) {
                report.tilesPerSecond = summary.tilesPerSecond
                report.tilesTissue = summary.tilesTissue
            }
            reports[index] = report
        }
        return reports.compactMap { $0 }
    }

    /// The output folder name of a job: the slide's given name, made safe for a file system.
    public static func folderName(for job: Job) -> String {
        folderName(forFileNamed: job.slide.originalName, job: job)
    }

    /// The output folder name for a slide file name: safe characters only, never hidden.
    public static func folderName(forFileNamed fileName: String, job: Job) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        var name = String(fileName.map { allowed.contains($0) ? $0 : "_" })
        while name.hasPrefix(".") { name.removeFirst() }
        return name.isEmpty ? "job-\(job.id)" : name
    }
}
