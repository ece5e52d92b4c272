import Foundation
import JobStore
import Logging

/// The worker's side of a job run in its own process: starts `tessera job-process`, follows its
/// stage and progress lines, and ends it when it goes over its budget, the job is cancelled or
/// the worker stops. The worker keeps the lease, so a dead process is a failed attempt of the
/// slide, while a dead worker (the process then ends itself) is an interruption.
struct JobSupervisor {
    let store: any JobQueue
    let configuration: WorkerConfiguration
    let isolation: JobIsolation
    let stop: StopFlag
    let logger: Logger
    /// The worker's reason to abandon the job (its watched file changed), asked while it runs and
    /// once more before the job is marked done.
    let abandon: (@Sendable (Job) -> String?)?

    /// Seconds between looks at the process's memory, and at the job's row.
    static let memoryInterval = 0.05
    static let rowInterval = 0.5
    /// Seconds a stopping process gets after SIGTERM before SIGKILL.
    static let termGrace = 1.5

    private enum Verdict {
        case memory(Int)
        case time
        case stopped
        case leaseLost
        case abandoned(String)
    }

    func run(job: Job, lease: Lease, progress: (@Sendable (Job, Int, Int) -> Void)?) -> JobOutcome {
        var log = logger
        log[metadataKey: "job.id"] = "\(job.id)"
        let arguments = JobProcess.Arguments(
            dataDirectory: isolation.dataDirectory, queue: isolation.queue, modelsDirectory: isolation.modelsDirectory,
            resultsDirectory: configuration.resultsDirectory, job: job.id.rawValue, token: lease.token, owner: lease.owner,
            parent: getpid(), threads: configuration.threads, batchSize: configuration.batchSize,
            checkpointTiles: configuration.checkpointTiles, checkpointSeconds: configuration.checkpointSeconds,
            budget: isolation.budget, maxSlidePixels: configuration.slideLimits.maxPixels)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: isolation.executable)
        process.arguments = arguments.commandLine + ["--log-level", isolation.logLevel]
        process.standardInput = FileHandle.nullDevice
        // libvips decodes images it cannot read at random into memory, never into temporary files
        // (which could fill the disk the queue lives on): the memory budget then covers them.
        var environment = ProcessInfo.processInfo.environment
        environment["VIPS_DISC_THRESHOLD"] = "100000g"
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        let state = ProcessReport()
        let readLines: @Sendable () -> Void = {
            let handle = output.fileHandleForReading
            var buffer = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                buffer.append(chunk)
                while let end = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: buffer[buffer.startIndex..<end], as: UTF8.self)
                    buffer.removeSubrange(buffer.startIndex...end)
                    if let (done, total) = state.take(line) { progress?(job, done, total) }
                }
            }
            state.closed()
        }
        do {
            try process.run()
        } catch {
            let failure = JobFailure(.internalError, "could not start the analysis process \(isolation.executable): \(error)",
                                     transient: true)
            try? store.fail(lease, reason: failure.stored, permanent: false)
            return .failed(failure)
        }
        // A blocking reader of its own (one per running job), not a thread of the worker pool.
        DispatchQueue(label: "tessera.job-process.output").async(execute: readLines)
        let pid = process.processIdentifier
        let started = Date()
        var rowChecked = Date()
        var verdict: Verdict?
        while process.isRunning {
            Thread.sleep(forTimeInterval: Self.memoryInterval)
            if stop.isSet {
                verdict = .stopped
            } else if let resident = Self.residentBytes(of: pid), resident > isolation.budget.memoryBytes {
                verdict = .memory(resident)
            } else if Date().timeIntervalSince(started) > isolation.budget.wallSeconds {
                verdict = .time
            } else if Date().timeIntervalSince(rowChecked) >= Self.rowInterval {
                rowChecked = Date()
                if let row = try? store.job(job.id), row.state != .running || row.leaseToken != lease.token {
                    verdict = .leaseLost
                } else if let reason = abandon?(job) {
                    verdict = .abandoned(reason)
                }
            }
            guard let verdict else { continue }
            if case .stopped = verdict {
                kill(pid, SIGTERM)
                let deadline = Date().addingTimeInterval(Self.termGrace)
                while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
            }
            if process.isRunning { kill(pid, SIGKILL) }
            break
        }
        process.waitUntilExit()
        state.waitClosed()
        // A stop signal that reached the analysis process itself (Ctrl-C reaches the whole process
        // group, `systemctl stop` the whole unit) is a stop, not a crash of the slide's analysis.
        if verdict == nil, process.terminationReason == .uncaughtSignal,
           [SIGINT, SIGTERM, SIGHUP].contains(process.terminationStatus) {
            verdict = .stopped
        }
        let stage = state.stage ?? "starting"
        let tiles = state.tiles.map { " (\($0.done) of \($0.total) tiles)" } ?? ""

        switch verdict {
        case .stopped?:
            _ = try? store.releaseLeases(ownedBy: [lease.owner], reason: "worker stopping", interrupted: false)
            log.info("stopped; job returned to the queue at its last checkpoint")
            return .stopped
        case .leaseLost?:
            log.warning("job cancelled or taken over; its analysis process was ended")
            return .leaseLost
        case .abandoned(let reason)?:
            return store.abandon(job, reason: reason, log: log)
        case .memory(let resident)?:
            return store.record(JobFailure(.overBudget, "exceeded the \(JobBudget.describe(bytes: isolation.budget.memoryBytes)) "
                + "memory budget while \(stage)\(tiles): the analysis process reached \(JobBudget.describe(bytes: resident)) and was "
                + "stopped (--job-memory raises the budget)"), lease: lease, log: log)
        case .time?:
            return store.record(JobFailure(.overBudget, "exceeded the \(JobBudget.describe(seconds: isolation.budget.wallSeconds)) "
                + "time budget while \(stage)\(tiles) (--job-timeout raises it; a retry resumes from the last checkpoint)"),
                                 lease: lease, log: log)
        case nil:
            break
        }

        if process.terminationReason == .exit, let status = JobProcess.Status(rawValue: process.terminationStatus) {
            switch status {
            case .analysed:
                if let reason = abandon?(job) { return store.abandon(job, reason: reason, log: log) }
                let directory = configuration.resultsDirectory + "/\(job.id)"
                guard let summary = SlideRun.storedSummary(directory) else {
                    return store.record(JobFailure(.internalError, "the analysis process wrote no summary.json", transient: true),
                                         lease: lease, log: log)
                }
                do {
                    try store.complete(lease, outputDirectory: directory)
                } catch {
                    return .leaseLost
                }
                log.info("job done", metadata: ["output": "\(directory)"])
                return .done(outputDirectory: directory, summary: summary)
            case .failed:
                let row = try? store.job(job.id)
                return .failed(JobFailure(stored: row?.error ?? "[internal] the analysis failed"))
            case .leaseLost, .orphaned:
                return .leaseLost
            case .unusable:
                return store.record(JobFailure(.internalError, "the analysis process could not open the job (see the log)",
                                                transient: true), lease: lease, log: log)
            }
        }
        let how = process.terminationReason == .uncaughtSignal
            ? Self.signalName(process.terminationStatus) : "exit status \(process.terminationStatus)"
        let message: String
        if process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGXCPU {
            message = "exceeded the CPU-time budget while \(stage)\(tiles) (--job-timeout raises it)"
            return store.record(JobFailure(.overBudget, message), lease: lease, log: log)
        } else if process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL {
            message = "the analysis process was killed (\(how)) while \(stage)\(tiles); the system may have run out of memory"
        } else {
            message = "the analysis process crashed (\(how)) while \(stage)\(tiles)"
        }
        return store.record(JobFailure(.workerLost, message, transient: true), lease: lease, log: log)
    }

    /// Resident set size of a process, from `/proc/PID/statm` (pages).
    static func residentBytes(of pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func signalName(_ number: Int32) -> String {
        let names: [Int32: String] = [SIGSEGV: "SIGSEGV", SIGBUS: "SIGBUS", SIGILL: "SIGILL", SIGTRAP: "SIGTRAP", SIGABRT: "SIGABRT",
                                      SIGKILL: "SIGKILL", SIGTERM: "SIGTERM", SIGFPE: "SIGFPE", SIGXCPU: "SIGXCPU", SIGINT: "SIGINT"]
        return names[number] ?? "signal \(number)"
    }
}

/// What the analysis process last reported, read by the supervising thread.
private final class ProcessReport: @unchecked Sendable {
    // @unchecked: every field is guarded by `lock`.
    private let lock = NSLock()
    private var lastStage: String?
    private var lastTiles: (done: Int, total: Int)?
    private let finished = DispatchSemaphore(value: 0)

    var stage: String? { lock.withLock { lastStage } }
    var tiles: (done: Int, total: Int)? { lock.withLock { lastTiles } }

    /// Reads one line; returns progress when it was a progress line.
    func take(_ line: String) -> (Int, Int)? {
        if line.hasPrefix("stage ") {
            lock.withLock { lastStage = String(line.dropFirst(6)) }
        } else if line.hasPrefix("progress ") {
            let numbers = line.dropFirst(9).split(separator: " ").compactMap { Int($0) }
            if numbers.count == 2 {
                lock.withLock { lastTiles = (numbers[0], numbers[1]) }
                return (numbers[0], numbers[1])
            }
        }
        return nil
    }

    func closed() { finished.signal() }
    /// Waits (briefly) for the reader to see the end of the output.
    func waitClosed() { _ = finished.wait(timeout: .now() + 2) }
}
