import ArgumentParser
import Foundation
import Logging
import TesseraCore

/// `tessera job-process`: one job's analysis, started by a worker of run, serve or watch (not by hand).
struct JobProcessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job-process", abstract: "Analyse one leased job (started by a worker; not for direct use).",
        shouldDisplay: false)

    @Option var data: String
    @Option var queue: String?
    @Option var models: String
    @Option var results: String
    @Option var job: Int
    @Option var token: Int
    @Option var owner: String
    @Option var parent: Int32
    @Option var threads: Int
    @Option(name: .customLong("batch-size")) var batchSize: Int
    @Option(name: .customLong("checkpoint-tiles")) var checkpointTiles: Int
    @Option(name: .customLong("checkpoint-seconds")) var checkpointSeconds: Double
    @Option var memory: Int
    @Option var seconds: Double
    @Option(name: .customLong("open-files")) var openFiles: Int
    @Option(name: .customLong("max-slide-pixels")) var maxSlidePixels: Int64
    @Option(name: .customLong("log-level")) var logLevel = "warning"

    func run() throws {
        bootstrapLogging(level: logLevel)
        let arguments = JobProcess.Arguments(
            dataDirectory: data, queue: queue, modelsDirectory: models, resultsDirectory: results, job: job, token: token,
            owner: owner, parent: parent, threads: threads, batchSize: batchSize, checkpointTiles: checkpointTiles,
            checkpointSeconds: checkpointSeconds, budget: JobBudget(memoryBytes: memory, wallSeconds: seconds, openFiles: openFiles),
            maxSlidePixels: maxSlidePixels)
        let status = JobProcess.run(arguments, logger: Logger(label: "tessera.job"))
        throw ExitCode(status.rawValue)
    }
}

/// The budget flags of run, serve and watch.
struct JobBudgetOptions: ParsableArguments {
    @Option(name: .customLong("job-memory"),
            help: "Memory budget of one slide's analysis process, e.g. 4G or 512M (default: 4G, or a quarter of RAM when smaller).")
    var jobMemory: String?

    @Option(name: .customLong("job-timeout"), help: "Time budget of one slide's analysis attempt, e.g. 90m or 6h (default: 6h).")
    var jobTimeout: String?

    @Flag(name: .customLong("in-process"),
          help: "Analyse slides in this process instead of one contained process per slide (no budgets; for debugging).")
    var inProcess = false

    func validate() throws {
        if let jobMemory, (JobBudget.bytes(jobMemory) ?? 0) < 64 << 20 {
            throw ValidationError("--job-memory \(jobMemory): give a size of at least 64M, e.g. 4G or 512M")
        }
        if let jobTimeout, JobBudget.seconds(jobTimeout) == nil {
            throw ValidationError("--job-timeout \(jobTimeout): give a duration, e.g. 90m, 6h or 3600")
        }
    }

    /// The isolation to run jobs under (nil with --in-process or when the binary cannot be found).
    func isolation(logLevel: String) -> JobIsolation? {
        var budget = JobBudget()
        if let bytes = jobMemory.flatMap(JobBudget.bytes) { budget.memoryBytes = bytes }
        if let seconds = jobTimeout.flatMap(JobBudget.seconds) { budget.wallSeconds = seconds }
        guard !inProcess, let executable = JobIsolation.currentExecutable else { return nil }
        return JobIsolation(executable: executable, budget: budget, logLevel: logLevel)
    }
}
