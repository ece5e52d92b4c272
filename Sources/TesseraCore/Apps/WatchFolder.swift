import Foundation
import JobStore
import Logging
import SlideIO

/// Options of `tessera watch`.
public struct WatchOptions: Sendable {
    public var input: String
    public var output: String
    public var dataDirectory = DataDirectory.defaultPath
    /// Job queue URL (`postgres://...`); nil keeps the SQLite queue in the data folder.
    public var queue: String?
    public var model = ModelCatalog.defaultModel
    public var modelsDirectory = ModelCatalog.directory
    /// Seconds a file's size and mtime must stay unchanged before it is taken.
    public var settleSeconds = 30.0
    /// Seconds between scans (inotify wakes scans earlier where it works).
    public var pollSeconds = 5.0
    /// File processed slides into IN/done and IN/failed.
    public var moveProcessed = false
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public var parameters = AnalysisParameters()
    /// Take slides in sub-folders of IN too (results keep the sub-folder: OUT/<sub>/<name>/).
    public var recursive = false
    /// Analyse each slide in its own process under a budget (nil: in this process).
    public var isolation: JobIsolation?
    /// The pixel limit of a slide (`--max-slide-pixels`).
    public var slideLimits = SlideLimits()

    public init(input: String, output: String) {
        self.input = input
        self.output = output
    }
}

/// The watch-folder daemon: finds slides that have finished arriving in a folder, queues each
/// (fileset) once by content, runs the inference worker in the same process, and files results.
public final class WatchFolder: @unchecked Sendable {
    // @unchecked: `pending` and `waiting` are only touched by the scanning thread; the rest is immutable or Sendable.
    public let options: WatchOptions
    public let store: any JobQueue
    public let runner: JobRunner
    private let logger: Logger
    private let intake: SlideIntake
    private var pending: [String: (signature: Signature, since: Double, incomplete: Bool)] = [:]
    /// Settled files that failed the completeness check, already logged (logged once, not every scan).
    private var waiting = Set<String>()
    private let notifier: DirectoryNotifier?
    /// Files whose jobs may still run, so a job is abandoned when its file changes.
    private let taken: TakenFiles

    /// What a candidate looks like now: total bytes and newest mtime of its files.
    struct Signature: Equatable, Sendable {
        var size: Int
        var modified: Double
    }

    public init(options: WatchOptions, logger: Logger, stop: StopFlag) throws {
        self.options = options
        self.logger = logger
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: options.input, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw UsageError("\(options.input): " + (FileManager.default.fileExists(atPath: options.input) ? "is a file" : "no such folder")
                             + "; give the folder the scanners write into (create it first)")
        }
        do {
            try FileManager.default.createDirectory(atPath: options.output, withIntermediateDirectories: true)
        } catch {
            throw UsageError("\(options.output): cannot create the results folder (--out)")
        }
        store = try DataDirectory.openStore(options.dataDirectory, queue: options.queue)
        intake = SlideIntake(store: store, dataDirectory: options.dataDirectory, modelsDirectory: options.modelsDirectory,
                             interface: .commandLine, limits: options.slideLimits)
        _ = try intake.model(options.model)
        var configuration = WorkerConfiguration(threads: options.threads, resultsDirectory: DataDirectory.outputs(options.dataDirectory))
        configuration.isolation = options.isolation?.bound(dataDirectory: options.dataDirectory, queue: options.queue,
                                                           modelsDirectory: options.modelsDirectory)
        configuration.slideLimits = options.slideLimits
        let taken = TakenFiles()
        self.taken = taken
        // A job whose file changes while it runs is abandoned: its results would mix two files.
        runner = JobRunner(store: store, models: ModelProvider(directory: options.modelsDirectory),
                           configuration: configuration, logger: logger, stop: stop, abandon: { taken.changed($0.id) })
        notifier = DirectoryNotifier(path: options.input)
    }

    /// Scans and works until `stop` is set. Returns after the current batch when stopped.
    public func run() throws {
        logger.info("watching", metadata: ["in": "\(options.input)", "out": "\(options.output)",
                                            "inotify": "\(notifier != nil)"])
        var loop = WorkLoop(runner: runner, idleSeconds: options.pollSeconds)
        let notifier = self.notifier
        loop.wait = { seconds in
            if let notifier { notifier.wait(seconds: seconds) } else { Thread.sleep(forTimeInterval: seconds) }
        }
        try loop.run(step: {
            try scan()
            try fileFinished()
        })
        logger.info("stopped")
    }

    // MARK: Scanning

    /// Settle times an incomplete file may stay unchanged before it is refused (`incomplete_slide`).
    static let incompleteGiveUp = 10.0

    /// Names of files still being written, or not slides at all.
    static func isIgnored(_ name: String) -> Bool {
        let lower = name.lowercased()
        if name.hasPrefix(".") || name.hasPrefix("~") || name.hasSuffix("~") { return true }
        for suffix in [".tmp", ".part", ".partial", ".crdownload", ".filepart", ".download", ".swp", ".lock", ".reason.txt"]
        where lower.hasSuffix(suffix) { return true }
        return ["done", "failed"].contains(lower)
    }

    /// Whether two paths are one file (the same path, or hard links to one inode): a job reading
    /// `b` sees every change made to `a`.
    static func sameFile(_ a: String, _ b: String) -> Bool {
        if (a as NSString).standardizingPath == (b as NSString).standardizingPath { return true }
        var x = stat(), y = stat()
        guard stat(a, &x) == 0, stat(b, &y) == 0 else { return false }
        return x.st_dev == y.st_dev && x.st_ino == y.st_ino
    }

    /// A MIRAX slide's data folder (its files count towards the slide's signature).
    static func companion(of path: String) -> String? {
        let stem = (path as NSString).deletingPathExtension
        return path.lowercased().hasSuffix(".mrxs") && FileManager.default.fileExists(atPath: stem) ? stem : nil
    }

    /// One scan: candidates whose signature has been stable for the settle time, and that are
    /// complete (`SlideCheck`), are taken. A file that changes after it was taken has its job
    /// cancelled and is taken again, as new content, once it has settled and is complete.
    func scan() throws {
        let now = Date().timeIntervalSince1970
        var seen = Set<String>()
        for (path, relative) in candidates(in: options.input, prefix: "") {
            let companion = Self.companion(of: path)
            guard let signature = Self.signature(path: path, companion: companion) else { continue }
            seen.insert(path)
            if let record = try store.watchedFile(path: path) {
                // Already dealt with (this run or an earlier one); a file filed away and put back is new again.
                if record.size == signature.size, record.modified == signature.modified, record.state != "moved",
                   !(record.state == "rejected" && options.moveProcessed) {
                    // Known after a restart too: the job is abandoned if this file changes while it runs.
                    if record.state == "queued", let id = record.job, !taken.isTracked(id), let job = try? store.job(id), !job.state.isFinal {
                        taken.track(id, path: path, companion: companion, signature: signature, jobReads: job.slide.path)
                    }
                    continue
                }
                // Changed after it was taken: a job still to run on these bytes is cancelled (one reading
                // another copy, e.g. an upload of the same content, is left be; its results are not filed here).
                if record.state == "queued", let id = record.job, let job = try? store.job(id), [.queued, .running].contains(job.state),
                   Self.sameFile(path, job.slide.path) {
                    try store.cancel(id)
                    taken.forget(id)
                    logger.notice("changed after it was taken: its job is cancelled; the file is taken again once it is complete",
                                  metadata: ["file": "\(relative)", "job.id": "\(id)"])
                }
            }
            guard let previous = pending[path], previous.signature == signature else {
                pending[path] = (signature, now, false)
                continue
            }
            guard now - previous.since >= options.settleSeconds else { continue }
            // Settled is not enough: a scanner that pauses mid-file leaves a file whose tables point
            // past its end. Such a file waits (checked again when it changes), never analysed half;
            // one left unchanged for `incompleteGiveUp` settle times is refused like any broken file.
            let givingUp = previous.incomplete && now - previous.since >= Self.incompleteGiveUp * options.settleSeconds
            if previous.incomplete && !givingUp { continue }
            if !givingUp {
                do {
                    try SlideCheck.check(path: path, limits: options.slideLimits)
                } catch SlideError.incomplete(_, let reason) {
                    pending[path]?.incomplete = true
                    if waiting.insert(path).inserted {
                        logger.notice("waiting for the rest of the file", metadata: ["file": "\(relative)", "reason": "\(reason)"])
                    }
                    continue
                } catch {
                    // Anything else (too large, unreadable) is the intake's to refuse, with its reason.
                }
            }
            pending[path] = nil
            waiting.remove(path)
            try take(path: path, relative: relative, signature: signature, companion: companion, givingUp: givingUp)
        }
        for path in pending.keys where !seen.contains(path) { pending[path] = nil }
        waiting = waiting.filter { seen.contains($0) }
    }

    /// Files in `folder` that may be slides (path, path relative to IN); sub-folders with `recursive`,
    /// never `done/` and `failed/` of IN itself, never a MIRAX slide's data folder.
    private func candidates(in folder: String, prefix: String) -> [(String, String)] {
        let entries = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
        let names = Set(entries)
        var result: [(String, String)] = []
        for name in entries where !Self.isIgnored(name) || (!prefix.isEmpty && ["done", "failed"].contains(name.lowercased())) {
            let path = folder + "/" + name
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                let isMiraxData = names.contains { $0.lowercased() == name.lowercased() + ".mrxs" }
                if options.recursive && !isMiraxData { result += candidates(in: path, prefix: prefix + name + "/") }
                continue
            }
            result.append((path, prefix + name))
        }
        return result
    }

    static func signature(path: String, companion: String?) -> Signature? {
        func stat(_ path: String) -> Signature? {
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
            let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
            let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return Signature(size: size, modified: modified)
        }
        guard var total = stat(path) else { return nil }
        if let companion, let enumerator = FileManager.default.enumerator(atPath: companion) {
            for case let relative as String in enumerator {
                if let part = stat(companion + "/" + relative) {
                    total.size += part.size
                    total.modified = max(total.modified, part.modified)
                }
            }
        }
        return total
    }

    /// A settled file: a job if it opens as a slide, else rejected with its reason. A file whose
    /// content already failed (or was cancelled) is a request to try again: the job is queued again.
    private func take(path: String, relative: String, signature: Signature, companion: String?, givingUp: Bool) throws {
        let name = (relative as NSString).lastPathComponent
        let receipt: SlideIntake.Receipt
        do {
            receipt = try intake.submit(.init(path: path, name: name, model: options.model, parameters: options.parameters,
                                              keeping: options.moveProcessed ? .linkIntoStore : .inPlace))
        } catch let refusal as SlideIntake.Refusal where refusal.code == .incompleteSlide && !givingUp {
            // Cut short again between the scan's check and the intake: it waits like any incomplete file.
            pending[path] = (signature, Date().timeIntervalSince1970, true)
            if waiting.insert(path).inserted {
                logger.notice("waiting for the rest of the file", metadata: ["file": "\(relative)", "reason": "\(refusal.description)"])
            }
            return
        } catch let refusal as SlideIntake.Refusal {
            logger.warning("not taken", metadata: ["file": "\(relative)", "code": "\(refusal.code.rawValue)", "reason": "\(refusal.description)"])
            try store.recordWatchedFile(WatchedFile(path: path, size: signature.size, modified: signature.modified,
                                                    sha256: nil, job: nil, state: "rejected", reason: refusal.description))
            fileAway(path: path, relative: relative, into: "failed", reason: refusal.description)
            return
        }
        var job = receipt.job
        if [.failed, .cancelled].contains(job.state) {
            job = try store.retry(job.id)
            logger.info("queued again", metadata: ["file": "\(relative)", "job.id": "\(job.id)"])
        } else {
            logger.info(receipt.created ? "queued" : "already known", metadata: ["file": "\(relative)", "job.id": "\(job.id)"])
        }
        if !job.state.isFinal {
            taken.track(job.id, path: path, companion: companion, signature: signature, jobReads: job.slide.path)
        }
        try store.recordWatchedFile(WatchedFile(path: path, size: signature.size, modified: signature.modified,
                                                sha256: job.slide.sha256, job: job.id, state: "queued", reason: nil))
    }

    /// Files slides whose jobs finished into done/ or failed/ (when asked to), and their results into OUT.
    func fileFinished() throws {
        for (file, job) in try store.watchedFilesWithFinishedJobs() {
            taken.forget(job.id)
            var record = file
            // A file that changed after it was taken: these results (or this cancelled job) are of
            // content that is gone. Nothing goes to OUT and the file stays for the next scans to take.
            if let now = Self.signature(path: file.path, companion: Self.companion(of: file.path)),
               now != Signature(size: file.size, modified: file.modified) {
                record.state = "superseded"
                record.reason = "the file changed after it was taken"
                logger.notice("changed after it was taken: results not filed", metadata: ["file": "\(file.path)", "job.id": "\(job.id)"])
                try store.recordWatchedFile(record)
                continue
            }
            record.state = options.moveProcessed ? "moved" : "finished"
            record.reason = job.error.map { JobFailure(stored: $0).message }
            let input = (options.input as NSString).standardizingPath
            let path = (file.path as NSString).standardizingPath
            let relative = path.hasPrefix(input + "/") ? String(path.dropFirst(input.count + 1)) : (path as NSString).lastPathComponent
            if job.state == .done { deliver(job, as: relative) }
            if options.moveProcessed, FileManager.default.fileExists(atPath: file.path) {
                fileAway(path: file.path, relative: relative, into: job.state == .done ? "done" : "failed", reason: record.reason)
            }
            try store.recordWatchedFile(record)
        }
    }

    /// Puts the job's results into OUT/<sub-folder>/<name>/. A folder there from another job (the
    /// same name with other content, rescanned) is kept: these results go to `name~2` (then `~3`, ...).
    private func deliver(_ job: Job, as relative: String) {
        let output = (options.output as NSString).standardizingPath
        let sub = (relative as NSString).deletingLastPathComponent
        let base = ResultFolders.folderName(forFileNamed: (relative as NSString).lastPathComponent, job: job.id)
        var n = 1
        var target: String { output + (sub.isEmpty ? "" : "/" + sub) + "/" + ResultFolders.numbered(base, n) }
        while FileManager.default.fileExists(atPath: target), ResultFolders.job(in: target) != job.id.rawValue { n += 1 }
        guard let source = job.outputDirectory else { return }
        do {
            if ResultFolders.job(in: target) == job.id.rawValue { return }
            try ResultFolders.deliver(from: source, to: target)
            if n > 1 {
                logger.notice("results of an earlier file with this name kept; these are in \(ResultFolders.numbered(base, n))",
                              metadata: ["file": "\(relative)", "job.id": "\(job.id)"])
            }
            logger.info("results", metadata: ["file": "\(relative)", "job.id": "\(job.id)", "out": "\(target)"])
        } catch {
            logger.error("could not place results", metadata: ["file": "\(relative)", "job.id": "\(job.id)", "reason": "\(error)"])
        }
    }

    /// Moves a slide (and a MIRAX folder) into IN/<folder>/<sub-folder>/, with NAME.reason.txt for
    /// failures. Without `moveProcessed`, a failure's reason goes to OUT/<relative>.reason.txt instead.
    private func fileAway(path: String, relative: String, into folder: String, reason: String?) {
        let fm = FileManager.default
        let name = (relative as NSString).lastPathComponent
        let sub = (relative as NSString).deletingLastPathComponent
        guard options.moveProcessed else {
            if let reason {
                let target = options.output + (sub.isEmpty ? "" : "/" + sub)
                try? fm.createDirectory(atPath: target, withIntermediateDirectories: true)
                try? (reason + "\n").write(toFile: target + "/" + name + ".reason.txt", atomically: true, encoding: .utf8)
            }
            return
        }
        let target = options.input + "/" + folder + (sub.isEmpty ? "" : "/" + sub)
        try? fm.createDirectory(atPath: target, withIntermediateDirectories: true)
        try? fm.removeItem(atPath: target + "/" + name)
        try? fm.moveItem(atPath: path, toPath: target + "/" + name)
        let stem = (path as NSString).deletingPathExtension
        if name.lowercased().hasSuffix(".mrxs"), fm.fileExists(atPath: stem) {
            let stemName = (stem as NSString).lastPathComponent
            try? fm.removeItem(atPath: target + "/" + stemName)
            try? fm.moveItem(atPath: stem, toPath: target + "/" + stemName)
        }
        if let reason, folder == "failed" {
            try? (reason + "\n").write(toFile: target + "/" + name + ".reason.txt", atomically: true, encoding: .utf8)
        }
    }
}

/// The watched files whose jobs may still run, with the signature they were taken with. Asked by
/// the job runner before every batch (from the loop's thread), told by the scans.
final class TakenFiles: @unchecked Sendable {
    // @unchecked: every field is guarded by `lock`.
    private let lock = NSLock()
    private var files: [JobID: (path: String, companion: String?, signature: WatchFolder.Signature, jobReads: String)] = [:]
    private var looked: [JobID: (at: Double, reason: String?)] = [:]

    /// Remembers that `job` was taken from `path` as `signature`; `jobReads` is the file the job opens.
    func track(_ job: JobID, path: String, companion: String?, signature: WatchFolder.Signature, jobReads: String) {
        lock.withLock { files[job] = (path, companion, signature, jobReads) }
    }

    func isTracked(_ job: JobID) -> Bool { lock.withLock { files[job] != nil } }

    func forget(_ job: JobID) {
        lock.withLock {
            files[job] = nil
            looked[job] = nil
        }
    }

    /// Why the job's file is no longer what was taken, or nil. Looks at the file at most twice a second.
    func changed(_ job: JobID) -> String? {
        guard let file = lock.withLock({ files[job] }) else { return nil }
        let now = Date().timeIntervalSince1970
        if let last = lock.withLock({ looked[job] }), now - last.at < 0.5 { return last.reason }
        var reason: String?
        // Only a change the job can see abandons it: the file it reads is this one (in place, or a
        // hard link into the store). A file replaced under a new inode leaves the job's copy whole;
        // its results are then simply not filed under this name.
        if let current = WatchFolder.signature(path: file.path, companion: file.companion),
           WatchFolder.sameFile(file.path, file.jobReads) {
            if current != file.signature {
                reason = "\((file.path as NSString).lastPathComponent) changed while it was analysed "
                    + "(\(file.signature.size) -> \(current.size) bytes); it is taken again once it is complete"
            }
        }
        // A file gone (filed away by hand, or `--move` linked it into the store) leaves the job be.
        lock.withLock { looked[job] = (now, reason) }
        return reason
    }
}

/// inotify on the input folder where the file system supports it, to scan as soon as something
/// changes; scans still run on a timer (network file systems send no events).
final class DirectoryNotifier: @unchecked Sendable {
    // @unchecked: the descriptor is only read by the one scanning thread.
    private let descriptor: Int32

    init?(path: String) {
        #if os(Linux)
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB)
        guard inotify_add_watch(fd, path, mask) >= 0 else {
            close(fd)
            return nil
        }
        descriptor = fd
        #else
        return nil
        #endif
    }

    deinit { close(descriptor) }

    /// Waits up to `seconds` for a change, then drains the events.
    func wait(seconds: Double) {
        var request = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        _ = poll(&request, 1, Int32(seconds * 1000))
        var buffer = [UInt8](repeating: 0, count: 4096)
        while read(descriptor, &buffer, buffer.count) > 0 {}
    }
}
