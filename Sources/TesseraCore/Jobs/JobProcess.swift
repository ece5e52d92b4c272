import Foundation
import JobStore
import Logging
import SlideIO

/// Limits one job's analysis process runs under. A slide that exceeds one fails its job with
/// `over_budget`; only that process is killed and the next job starts at once.
public struct JobBudget: Sendable, Equatable {
    /// Resident memory of the analysis process, in bytes.
    public var memoryBytes: Int
    /// Wall-clock seconds of one attempt.
    public var wallSeconds: Double
    /// Open files of the analysis process.
    public var openFiles: Int

    /// 4 GiB (a quarter of the memory of a small box when it has less than 16 GiB), 6 hours, 1024 files.
    public init(memoryBytes: Int? = nil, wallSeconds: Double = 6 * 3600, openFiles: Int = 1024) {
        let physical = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        self.memoryBytes = memoryBytes ?? min(4 << 30, max(1 << 30, physical / 4))
        self.wallSeconds = wallSeconds
        self.openFiles = openFiles
    }

    /// Reads `4G`, `512M`, `1500000000` (bytes; K, M, G, T are powers of 1024).
    public static func bytes(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased().replacingOccurrences(of: "IB", with: "")
            .replacingOccurrences(of: "B", with: "")
        let units: [Character: Double] = ["K": 1024, "M": 1_048_576, "G": 1_073_741_824, "T": 1_099_511_627_776]
        if let last = trimmed.last, let unit = units[last], let value = Double(trimmed.dropLast()), value > 0 {
            return Int(value * unit)
        }
        return Int(trimmed).flatMap { $0 > 0 ? $0 : nil }
    }

    /// Reads `90s`, `30m`, `6h`, `1d` or plain seconds.
    public static func seconds(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let last = trimmed.last, let unit = units[last], let value = Double(trimmed.dropLast()), value > 0 {
            return value * unit
        }
        return Double(trimmed).flatMap { $0 > 0 ? $0 : nil }
    }

    /// `4 GiB`, `512 MiB`.
    public static func describe(bytes: Int) -> String {
        let gib = Double(bytes) / Double(1 << 30)
        if gib >= 1 { return gib == gib.rounded() ? "\(Int(gib)) GiB" : String(format: "%.1f GiB", gib) }
        return "\(bytes >> 20) MiB"
    }

    /// `6 h`, `90 s`, `2.5 min`.
    public static func describe(seconds: Double) -> String {
        func number(_ value: Double) -> String { value == value.rounded() ? "\(Int(value))" : String(format: "%.1f", value) }
        if seconds >= 3600 { return number(seconds / 3600) + " h" }
        if seconds >= 60 { return number(seconds / 60) + " min" }
        return number(seconds) + " s"
    }
}

/// How a worker runs each job in its own process: `tessera job-process ...` (the same binary)
/// under `budget`. The worker keeps the lease; the process does the analysis and its writes.
public struct JobIsolation: Sendable {
    /// The `tessera` binary to run.
    public var executable: String
    public var budget: JobBudget
    /// The analysis process's log level.
    public var logLevel: String
    /// Where the process opens the queue and the models (the worker's own).
    public var dataDirectory: String
    public var queue: String?
    public var modelsDirectory: String

    public init(executable: String, budget: JobBudget = JobBudget(), logLevel: String = "warning",
                dataDirectory: String = "", queue: String? = nil, modelsDirectory: String = ModelCatalog.directory) {
        self.executable = executable
        self.budget = budget
        self.logLevel = logLevel
        self.dataDirectory = dataDirectory
        self.queue = queue
        self.modelsDirectory = modelsDirectory
    }

    /// The running binary, when it is a file (`/proc/self/exe`).
    public static var currentExecutable: String? {
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments.first
        return path.flatMap { FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil }
    }

    /// The same settings for one store and models directory.
    func bound(dataDirectory: String, queue: String?, modelsDirectory: String) -> JobIsolation {
        var copy = self
        copy.dataDirectory = dataDirectory
        copy.queue = queue
        copy.modelsDirectory = modelsDirectory
        return copy
    }
}

/// The analysis process's side: what `tessera job-process` runs.
public enum JobProcess {
    /// Exit statuses of the analysis process (anything else, or a signal, is a crash).
    public enum Status: Int32 {
        /// The results are written; the worker marks the job done (after its last look at it).
        case analysed = 14
        /// The job failed and the process recorded why.
        case failed = 10
        /// The lease was gone (cancelled or taken over).
        case leaseLost = 11
        /// The process could not start the job (bad arguments, store unreachable).
        case unusable = 12
        /// The worker that started it has gone.
        case orphaned = 13
    }

    /// What the worker hands the process.
    public struct Arguments: Sendable {
        public var dataDirectory: String
        public var queue: String?
        public var modelsDirectory: String
        public var resultsDirectory: String
        public var job: Int
        public var token: Int
        public var owner: String
        public var parent: Int32
        public var threads: Int
        public var batchSize: Int
        public var checkpointTiles: Int
        public var checkpointSeconds: Double
        public var budget: JobBudget
        /// The slide pixel limit (`--max-slide-pixels`) the worker runs with.
        public var maxSlidePixels: Int64

        public init(dataDirectory: String, queue: String?, modelsDirectory: String, resultsDirectory: String, job: Int, token: Int,
                    owner: String, parent: Int32, threads: Int, batchSize: Int, checkpointTiles: Int, checkpointSeconds: Double,
                    budget: JobBudget, maxSlidePixels: Int64) {
            self.maxSlidePixels = maxSlidePixels
            self.dataDirectory = dataDirectory
            self.queue = queue
            self.modelsDirectory = modelsDirectory
            self.resultsDirectory = resultsDirectory
            self.job = job
            self.token = token
            self.owner = owner
            self.parent = parent
            self.threads = threads
            self.batchSize = batchSize
            self.checkpointTiles = checkpointTiles
            self.checkpointSeconds = checkpointSeconds
            self.budget = budget
        }

        /// The command line the worker starts `tessera` with.
        var commandLine: [String] {
            ["job-process", "--data", dataDirectory, "--models", modelsDirectory, "--results", resultsDirectory,
             "--job", "\(job)", "--token", "\(token)", "--owner", owner, "--parent", "\(parent)", "--threads", "\(threads)",
             "--batch-size", "\(batchSize)", "--checkpoint-tiles", "\(checkpointTiles)",
             "--checkpoint-seconds", "\(checkpointSeconds)", "--memory", "\(budget.memoryBytes)",
             "--seconds", "\(budget.wallSeconds)", "--open-files", "\(budget.openFiles)", "--max-slide-pixels", "\(maxSlidePixels)"]
                + (queue.map { ["--queue", $0] } ?? [])
        }
    }

    /// Runs the job in this process and returns the exit status. Reports `stage TEXT` and
    /// `progress DONE TOTAL` lines on standard output for the worker.
    public static func run(_ arguments: Arguments, logger: Logger) -> Status {
        // The worker may have started us from a thread with its stop signals blocked: take the defaults back.
        var signals = sigset_t()
        sigemptyset(&signals)
        for number in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, number) }
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        applyLimits(arguments.budget, threads: arguments.threads)
        watchParent(arguments.parent)

        let store: any JobQueue
        let job: Job
        do {
            store = try DataDirectory.openStore(arguments.dataDirectory, queue: arguments.queue)
            job = try store.job(JobID(arguments.job))
        } catch {
            logger.error("job process: \(error)")
            return .unusable
        }
        guard job.state == .running, job.leaseToken == arguments.token, job.leaseOwner == arguments.owner else { return .leaseLost }
        var configuration = WorkerConfiguration(threads: arguments.threads, batchSize: arguments.batchSize,
                                                checkpointTiles: arguments.checkpointTiles, resultsDirectory: arguments.resultsDirectory)
        configuration.owner = arguments.owner
        configuration.checkpointSeconds = arguments.checkpointSeconds
        configuration.memoryBudget = arguments.budget.memoryBytes
        configuration.completes = false
        configuration.slideLimits = SlideLimits(maxPixels: arguments.maxSlidePixels)
        let runner = JobRunner(store: store, models: ModelProvider(directory: arguments.modelsDirectory),
                               configuration: configuration, logger: logger)
        let lease = Lease(job: job.id, token: arguments.token, owner: arguments.owner)
        let report = LineWriter()
        let outcome = runner.run(job: job, lease: lease,
                                 progress: { _, done, total in report.line("progress \(done) \(total)") },
                                 stage: { report.line("stage " + $0) })
        switch outcome {
        case .done: return .analysed
        case .failed: return .failed
        case .leaseLost, .stopped, .cancelled: return .leaseLost
        }
    }

    /// Address space (a backstop well above the resident budget: allocators and thread stacks
    /// reserve far more than they use), CPU seconds (the wall budget on every core) and open files.
    static func applyLimits(_ budget: JobBudget, threads: Int) {
        func set(_ resource: Int32, _ value: Int) {
            var limit = rlimit()
            getrlimit(__rlimit_resource_t(UInt32(resource)), &limit)
            let wanted = rlim_t(max(0, value))
            limit.rlim_cur = limit.rlim_max == rlim_t.max ? wanted : min(wanted, limit.rlim_max)  // rlim_t.max: RLIM_INFINITY
            setrlimit(__rlimit_resource_t(UInt32(resource)), &limit)
        }
        set(Int32(RLIMIT_AS.rawValue), budget.memoryBytes * 4 + (8 << 30))
        set(Int32(RLIMIT_CPU.rawValue), Int(budget.wallSeconds * Double(max(1, threads + 1))) + 60)
        set(Int32(RLIMIT_NOFILE.rawValue), budget.openFiles)
    }

    /// Ends this process when the worker that started it dies (it holds the lease; without it
    /// the job goes back to the queue and would be worked twice).
    static func watchParent(_ parent: Int32) {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "tessera.job-process.parent"))
        timer.schedule(deadline: .now() + 0.1, repeating: 0.1)
        timer.setEventHandler {
            if getppid() != parent { _exit(Status.orphaned.rawValue) }
        }
        timer.resume()
        parentWatch.set(timer)
    }

    private static let parentWatch = TimerHolder()
}

/// Keeps the parent watch's timer alive for the life of the process.
private final class TimerHolder: @unchecked Sendable {
    // @unchecked: set once, before any reader.
    private var timer: (any DispatchSourceTimer)?
    func set(_ timer: any DispatchSourceTimer) { self.timer = timer }
}

/// Whole lines on standard output, one writer at a time.
private final class LineWriter: @unchecked Sendable {
    // @unchecked: writes are serialised by `lock`.
    private let lock = NSLock()
    func line(_ text: String) {
        lock.withLock { FileHandle.standardOutput.write(Data((text.replacingOccurrences(of: "\n", with: " ") + "\n").utf8)) }
    }
}
