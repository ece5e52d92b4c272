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

    public init(input: String, output: String) {
        self.input = input
        self.output = output
    }
}

/// The watch-folder daemon: finds slides that have finished arriving in a folder, queues each
/// (fileset) once by content, runs the inference worker in the same process, and files results.
public final class WatchFolder: @unchecked Sendable {
    // @unchecked: `pending` is only touched by the scanning thread; the rest is immutable or Sendable.
    public let options: WatchOptions
    public let store: any JobQueue
    public let worker: Worker
    private let logger: Logger
    private let reference: ModelReference
    private var pending: [String: (signature: Signature, since: Double)] = [:]
    private let notifier: DirectoryNotifier?

    /// What a candidate looks like now: total bytes and newest mtime of its files.
    struct Signature: Equatable {
        var size: Int
        var modified: Double
    }

    public init(options: WatchOptions, logger: Logger, stop: StopFlag) throws {
        self.options = options
        self.logger = logger
        try FileManager.default.createDirectory(atPath: options.input, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: options.output, withIntermediateDirectories: true)
        store = try DataDirectory.openStore(options.dataDirectory, queue: options.queue)
        reference = try ModelCatalog.resolve(options.model, in: options.modelsDirectory)
        let output = (options.output as NSString).standardizingPath
        let configuration = WorkerConfiguration(threads: options.threads) { job in
            output + "/" + SlideRun.folderName(for: job)
        }
        worker = Worker(store: store, models: ModelProvider(directory: options.modelsDirectory),
                        configuration: configuration, logger: logger, stop: stop)
        notifier = DirectoryNotifier(path: options.input)
    }

    /// Scans and works until `stop` is set. Returns after the current batch when stopped.
    public func run() throws {
        logger.info("watching", metadata: ["in": "\(options.input)", "out": "\(options.output)",
                                            "inotify": "\(notifier != nil)"])
        try worker.recoverLeases()
        while !worker.stop.isSet {
            try scan()
            try fileFinished()
            if try worker.runNext() != nil {
                try fileFinished()
                continue
            }
            if let notifier { notifier.wait(seconds: options.pollSeconds) } else { Thread.sleep(forTimeInterval: options.pollSeconds) }
            try worker.recoverLeases()
        }
        logger.info("stopped")
    }

    // MARK: Scanning

    /// Names of files still being written, or not slides at all.
    static func isIgnored(_ name: String) -> Bool {
        let lower = name.lowercased()
        if name.hasPrefix(".") || name.hasPrefix("~") || name.hasSuffix("~") { return true }
        for suffix in [".tmp", ".part", ".partial", ".crdownload", ".filepart", ".download", ".swp", ".lock", ".reason.txt"]
        where lower.hasSuffix(suffix) { return true }
        return ["done", "failed"].contains(lower)
    }

    /// One scan: candidates whose signature has been stable for the settle time are taken.
    func scan() throws {
        let now = Date().timeIntervalSince1970
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: options.input)) ?? []
        var seen = Set<String>()
        let names = Set(entries)
        for name in entries.sorted() where !Self.isIgnored(name) {
            let path = options.input + "/" + name
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
            // A MIRAX slide's folder belongs to its .mrxs file; it is not a candidate of its own.
            if isDirectory.boolValue { continue }
            let stem = (name as NSString).deletingPathExtension
            let companion = (name.lowercased().hasSuffix(".mrxs") && names.contains(stem)) ? options.input + "/" + stem : nil
            guard let signature = Self.signature(path: path, companion: companion) else { continue }
            seen.insert(path)
            if let record = try store.watchedFile(path: path), record.size == signature.size,
               record.modified == signature.modified {
                continue  // already dealt with (this run or an earlier one)
            }
            if let previous = pending[path], previous.signature == signature {
                if now - previous.since >= options.settleSeconds {
                    pending[path] = nil
                    try take(path: path, name: name, signature: signature)
                }
            } else {
                pending[path] = (signature, now)
            }
        }
        for path in pending.keys where !seen.contains(path) { pending[path] = nil }
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

    /// A settled file: a job if it opens as a slide, else rejected with its reason.
    private func take(path: String, name: String, signature: Signature) throws {
        do {
            _ = try Slide.open(path: path, mppOverride: options.parameters.slideMPP)
        } catch {
            logger.warning("not a readable slide", metadata: ["file": "\(name)", "reason": "\(error.description)"])
            try store.recordWatchedFile(WatchedFile(path: path, size: signature.size, modified: signature.modified,
                                                    sha256: nil, job: nil, state: "rejected", reason: error.description))
            fileAway(path: path, name: name, into: "failed", reason: error.description)
            return
        }
        let digest = try SHA256.hexDigest(ofFile: path)
        let slide = StoredSlide(sha256: digest, path: path, originalName: name, size: signature.size)
        let (job, created) = try store.enqueue(slide: slide, model: reference.identifier, parameters: options.parameters.canonicalJSON)
        try store.recordWatchedFile(WatchedFile(path: path, size: signature.size, modified: signature.modified,
                                                sha256: digest, job: job.id, state: "queued", reason: nil))
        logger.info(created ? "queued" : "already known", metadata: ["file": "\(name)", "job.id": "\(job.id)"])
    }

    /// Files slides whose jobs finished into done/ or failed/ (when asked to).
    private func fileFinished() throws {
        for (file, job) in try store.watchedFilesWithFinishedJobs() {
            var record = file
            record.state = "moved"
            record.reason = job.error
            let name = (file.path as NSString).lastPathComponent
            if job.state == .done { deliver(job, as: name) }
            if options.moveProcessed, FileManager.default.fileExists(atPath: file.path) {
                fileAway(path: file.path, name: name, into: job.state == .done ? "done" : "failed", reason: job.error)
            }
            try store.recordWatchedFile(record)
        }
    }

    /// Makes sure OUT/<name>/ holds the job's outputs. A job done by another worker on the same
    /// queue (`tessera serve`, another replica) or an earlier file with the same content has them
    /// elsewhere: they are copied under a temporary name and renamed, so OUT never shows a partial folder.
    private func deliver(_ job: Job, as name: String) {
        let fm = FileManager.default
        let folder = SlideRun.folderName(forFileNamed: name, job: job)
        let target = (options.output as NSString).standardizingPath + "/" + folder
        guard let source = job.outputDirectory, (source as NSString).standardizingPath != target,
              !fm.fileExists(atPath: target), fm.fileExists(atPath: source) else { return }
        let temporary = (options.output as NSString).standardizingPath + "/." + folder + ".copy-" + UUID().uuidString
        do {
            try fm.copyItem(atPath: source, toPath: temporary)
            try fm.moveItem(atPath: temporary, toPath: target)
            logger.info("outputs copied", metadata: ["file": "\(name)", "job.id": "\(job.id)", "from": "\(source)"])
        } catch {
            try? fm.removeItem(atPath: temporary)
            logger.error("could not copy outputs", metadata: ["file": "\(name)", "job.id": "\(job.id)", "reason": "\(error)"])
        }
    }

    /// Moves a slide (and a MIRAX folder) into IN/<folder>/, with NAME.reason.txt for failures.
    /// Without `moveProcessed`, a failure's reason goes to OUT/NAME.reason.txt instead.
    private func fileAway(path: String, name: String, into folder: String, reason: String?) {
        let fm = FileManager.default
        guard options.moveProcessed else {
            if let reason { try? (reason + "\n").write(toFile: options.output + "/" + name + ".reason.txt", atomically: true, encoding: .utf8) }
            return
        }
        let target = options.input + "/" + folder
        try? fm.createDirectory(atPath: target, withIntermediateDirectories: true)
        try? fm.removeItem(atPath: target + "/" + name)
        try? fm.moveItem(atPath: path, toPath: target + "/" + name)
        let stem = (name as NSString).deletingPathExtension
        if name.lowercased().hasSuffix(".mrxs"), fm.fileExists(atPath: options.input + "/" + stem) {
            try? fm.removeItem(atPath: target + "/" + stem)
            try? fm.moveItem(atPath: options.input + "/" + stem, toPath: target + "/" + stem)
        }
        if let reason, folder == "failed" {
            try? (reason + "\n").write(toFile: target + "/" + name + ".reason.txt", atomically: true, encoding: .utf8)
        }
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
