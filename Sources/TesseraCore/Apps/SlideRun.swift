import Foundation
import JobStore
import Logging
import SlideIO

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
    /// Queue failed or cancelled jobs of these slides again instead of reporting the old failure.
    public var retryFailed = false
    /// Take the slides in sub-folders of a folder given as input too.
    public var recursive = false
    /// The pixel limit of a slide (`--max-slide-pixels`).
    public var slideLimits = SlideLimits()
    /// Set (e.g. on Ctrl-C) to stop at the next batch; the run then throws `SlideRun.Interrupted`.
    public var stop = StopFlag()
    /// Analyse each slide in its own process under a budget (nil: in this process).
    public var isolation: JobIsolation?
    public init() {}
}

/// One slide's line of `tessera run --json`.
public struct RunReport: Codable, Sendable {
    public var slide: String
    public var job: Int?
    public var state: String
    public var tilesTissue: Int?
    public var tilesPerSecond: Double?
    public var seconds: Double?
    /// Absolute path of the slide's result folder.
    public var outputDir: String?
    public var error: String?
    /// Machine-readable reason of a failure (`JobFailure.Code`, or an intake refusal's code).
    public var errorCode: String?
    /// Class fractions of the tissue tiles.
    public var classFractions: [String: Double]?

    enum CodingKeys: String, CodingKey {
        case slide, job, state, error, seconds
        case tilesTissue = "tiles_tissue", tilesPerSecond = "tiles_per_second", outputDir = "output_dir", errorCode = "error_code"
        case classFractions = "class_fractions"
    }

    public init(slide: String, job: Int? = nil, state: String, error: String? = nil, errorCode: String? = nil) {
        self.slide = slide
        self.job = job
        self.state = state
        self.error = error
        self.errorCode = errorCode
    }
}

/// `tessera run`: takes slides (or folders of slides) in through the `SlideIntake`, works the
/// queue in this process until they are all finished, and leaves every slide's results in
/// `OUT/<name>/`, also when the job was done before. A killed run resumes from its checkpoints.
public enum SlideRun {
    /// The run was stopped (Ctrl-C, SIGTERM) before its jobs finished; they resume when run again.
    public struct Interrupted: Error, CustomStringConvertible {
        public var description: String { "interrupted; run the same command again to resume from the last checkpoint" }
    }

    public static func run(paths: [String], options: RunOptions, logger: Logger,
                           progress: (@Sendable (Job, Int, Int) -> Void)? = nil) throws -> [RunReport] {
        let store = try DataDirectory.openStore(options.dataDirectory, queue: options.queue)
        let output = URL(fileURLWithPath: options.outputDirectory).standardizedFileURL.path
        let intake = SlideIntake(store: store, dataDirectory: options.dataDirectory, modelsDirectory: options.modelsDirectory,
                                 interface: .commandLine, limits: options.slideLimits)
        _ = try intake.model(options.model)
        var configuration = WorkerConfiguration(threads: options.threads, batchSize: options.batchSize,
                                                resultsDirectory: DataDirectory.outputs(options.dataDirectory))
        configuration.slideLimits = options.slideLimits
        configuration.checkpointTiles = 8 * configuration.batchSize
        configuration.isolation = options.isolation?.bound(dataDirectory: options.dataDirectory, queue: options.queue,
                                                           modelsDirectory: options.modelsDirectory)
        let runner = JobRunner(store: store, models: ModelProvider(directory: options.modelsDirectory), configuration: configuration,
                               logger: logger, stop: options.stop)

        let inputs = try SlideFolder.expand(paths, recursive: options.recursive)
        let folders = ResultFolders.distinctNames(inputs.map {
            ResultFolders.folderName(forFileNamed: ($0 as NSString).lastPathComponent, job: JobID(0))
        })
        var reports = inputs.map { RunReport(slide: $0, state: "queued") }
        var jobs: [Int: JobID] = [:]
        for (index, path) in inputs.enumerated() {
            do {
                var receipt = try intake.submit(.init(path: path, model: options.model, parameters: options.parameters))
                if [.failed, .cancelled].contains(receipt.job.state), options.retryFailed {
                    receipt.job = try store.retry(receipt.job.id)
                    logger.info("queued again", metadata: ["job.id": "\(receipt.job.id)"])
                }
                jobs[index] = receipt.job.id
            } catch let refusal as SlideIntake.Refusal {
                reports[index] = RunReport(slide: path, state: "failed", error: refusal.description, errorCode: refusal.code.rawValue)
            }
        }
        // Work the queue until every job of this run is finished (other jobs may be done on the way).
        let summaries = SummaryBox()
        var loop = WorkLoop(runner: runner, idleSeconds: 0.25)
        loop.progress = progress
        loop.finished = { job, outcome in
            if case .done(_, let summary) = outcome { summaries.set(job.id, summary) } else { summaries.set(job.id, nil) }
        }
        let finished = { try jobs.values.allSatisfy { try store.job($0).state.isFinal } }
        try loop.run(until: finished)
        if options.stop.isSet, try !finished() { throw Interrupted() }
        for (index, id) in jobs.sorted(by: { $0.key < $1.key }) {
            let job = try store.job(id)
            var report = RunReport(slide: inputs[index], job: id.rawValue, state: job.state.rawValue)
            if let error = job.error {
                let failure = JobFailure(stored: error)
                report.error = failure.message + (job.state == .failed && !summaries.ran(id)
                    ? " (an earlier run's result; --retry-failed runs it again)" : "")
                report.errorCode = failure.code.rawValue
            }
            if job.state == .done, let stored = job.outputDirectory {
                let target = output + "/" + folders[index]
                do {
                    try ResultFolders.deliver(from: stored, to: target)
                    let summary = summaries.get(id) ?? storedSummary(target)
                    report.outputDir = target
                    report.tilesTissue = summary?.tilesTissue
                    report.tilesPerSecond = summary?.tilesPerSecond
                    report.seconds = summary?.timings["total_seconds"]
                    report.classFractions = summary?.classFractions
                } catch {
                    report.state = "failed"
                    report.error = "\(error)"
                    report.errorCode = "results_missing"
                }
            }
            reports[index] = report
        }
        // A table for a cohort (several slides, or a folder); a one-slide run (a Slurm array task) writes none.
        let folderGiven = paths.contains { path in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
        }
        if inputs.count > 1 || folderGiven { try CohortTable.write(reports, to: output + "/cohort.csv") }
        return reports
    }

    static func storedSummary(_ folder: String) -> JobSummary? {
        FileManager.default.contents(atPath: folder + "/summary.json").flatMap { try? JSONDecoder().decode(JobSummary.self, from: $0) }
    }
}

/// Summaries of the jobs this process ran, handed from the work loop's callback.
private final class SummaryBox: @unchecked Sendable {
    // @unchecked: `values` is guarded by `lock`.
    private let lock = NSLock()
    private var values: [JobID: JobSummary?] = [:]
    func set(_ id: JobID, _ summary: JobSummary?) { lock.withLock { values[id] = summary } }
    func get(_ id: JobID) -> JobSummary? { lock.withLock { values[id] ?? nil } }
    func ran(_ id: JobID) -> Bool { lock.withLock { values[id] != nil } }
}
