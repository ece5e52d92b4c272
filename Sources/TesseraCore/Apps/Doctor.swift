import Engine
import Foundation
import HTTPServer
import JobStore
import SlideIO

/// What `tessera doctor` examines.
public struct DoctorOptions: Sendable {
    /// The data folder `run`, `serve` and `watch` would use.
    public var dataDirectory: String
    /// The job queue URL (`postgres://...`); nil is the SQLite queue in the data folder.
    public var queue: String?
    /// The models folder.
    public var modelsDirectory = ModelCatalog.directory
    /// Cores inference would use (`--threads`).
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public init(dataDirectory: String) { self.dataDirectory = dataDirectory }
}

/// One line of the doctor's report.
public struct DoctorCheck: Sendable, Equatable {
    public enum Status: String, Sendable {
        /// Fine.
        case ok
        /// Works, but worth knowing (slower kernels, little free space, ...).
        case note
        /// Tessera cannot do its job this way: the doctor exits non-zero.
        case problem
    }

    public var section: String
    public var name: String
    public var status: Status
    public var value: String
}

/// The doctor's findings, in the order they were examined.
public struct DoctorReport: Sendable {
    public var checks: [DoctorCheck] = []

    /// The checks that failed.
    public var problems: [DoctorCheck] { checks.filter { $0.status == .problem } }

    mutating func add(_ section: String, _ name: String, _ status: DoctorCheck.Status, _ value: String) {
        checks.append(DoctorCheck(section: section, name: name, status: status, value: value))
    }

    /// The report for people: one line per check under its section, then the verdict.
    public var text: String {
        var lines = ["Tessera \(Tessera.version) doctor"]
        var section = ""
        for check in checks {
            if check.section != section {
                section = check.section
                lines.append("")
                lines.append(section)
            }
            let mark = check.status == .ok ? "ok" : check.status.rawValue.uppercased()
            lines.append("  " + mark.padding(toLength: 9, withPad: " ", startingAt: 0) + check.name + ": " + check.value)
        }
        lines.append("")
        let problems = self.problems
        lines.append(problems.isEmpty ? "no problems found"
                     : "\(problems.count) problem\(problems.count == 1 ? "" : "s"): "
                        + problems.map { "\($0.name): \($0.value)" }.joined(separator: "; "))
        return lines.joined(separator: "\n") + "\n"
    }

    /// The report for monitoring: `ok`, `version`, `problems` (one line each) and every check.
    public var json: Data {
        let object: [String: Any] = [
            "ok": problems.isEmpty,
            "version": Tessera.version,
            "problems": problems.map { "\($0.section) \($0.name): \($0.value)" },
            "checks": checks.map { ["section": $0.section, "name": $0.name, "status": $0.status.rawValue, "value": $0.value] },
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
    }
}

/// `tessera doctor`: what an administrator checks on a box before (and while) Tessera runs on
/// it. It reads and probes, and changes nothing but a probe file it removes again.
public enum Doctor {
    public static func examine(_ options: DoctorOptions) -> DoctorReport {
        var report = DoctorReport()
        libraries(&report)
        processor(&report, threads: options.threads)
        memory(&report)
        dataFolder(&report, options.dataDirectory)
        models(&report, options.modelsDirectory, threads: options.threads)
        queue(&report, options)
        return report
    }

    // MARK: Libraries

    static func libraries(_ report: inout DoctorReport) {
        let section = "libraries"
        report.add(section, "Tessera", .ok, "\(Tessera.version) (\(ModelCatalog.executablePath))")
        if let failure = SlideLibraries.initialisationError() {
            report.add(section, "libvips", .problem, "\(SlideLibraries.vipsVersion), cannot start: \(failure)")
        } else {
            report.add(section, "libvips", .ok, SlideLibraries.vipsVersion)
        }
        if let version = SlideLibraries.openSlideVersion {
            report.add(section, "OpenSlide", .ok, "\(version) (libvips' openslideload: SVS, NDPI, MIRAX, ...)")
        } else {
            report.add(section, "OpenSlide", .problem,
                       "not available to libvips: SVS, NDPI and MIRAX slides cannot be read (install libopenslide0)")
        }
        report.add(section, "OpenBLAS", .ok, "\(EngineBLAS.configuration.trimmingCharacters(in: .whitespaces)); kernels for \(EngineBLAS.coreName)")
        report.add(section, "SQLite", .ok, SQLiteLibrary.version)
        report.add(section, "libmicrohttpd", .ok, HTTPLibrary.version)
        report.add(section, "libpq", .ok, "\(PostgresLibrary.versionString) (PostgreSQL job queue client)")
    }

    // MARK: Processor

    static func processor(_ report: inout DoctorReport, threads: Int) {
        let section = "processor"
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }.map { $0.trimmingCharacters(in: .whitespaces) }
        report.add(section, "model", .ok, model ?? "unknown")
        let cpu = CPUFeatures.current
        let yes = { (flag: Bool) in flag ? "yes" : "no" }
        report.add(section, "instruction sets", .ok,
                   CPUISA.allCases.map { "\($0) \(yes(cpu.supports($0)))" }.joined(separator: ", "))
        let kernels: String
        switch cpu.engineLevel {
        case .portable: kernels = "portable C (no AVX2 + FMA): inference is several times slower"
        case .avx2, .avx2VNNI: kernels = "AVX2 + FMA builds of the kernels (the hand-written AVX-512 tiles need AVX-512)"
        case .avx512, .avx512VNNI, .avx512BF16: kernels = "the AVX-512 register tiles (direct, pointwise, depthwise, Winograd, pooling)"
        }
        report.add(section, "engine kernels", cpu.engineLevel >= .avx2 ? .ok : .note, "\(cpu.engineLevel): \(kernels)")
        let vnni = cpu.supports(.avx512VNNI) || cpu.supports(.avx2VNNI)
        report.add(section, "INT8 (VNNI)", .ok,
                   vnni ? "yes: INT8 kernels on, with vpdpbusd (\(cpu.supports(.avx512VNNI) ? "AVX-512 VNNI" : "AVX-VNNI"))"
                       : cpu.engineLevel >= .avx2 ? "no VNNI: INT8 kernels on, with AVX2 vpmaddubsw + vpmaddwd (exact, slower than VNNI)"
                       : "no: INT8 kernels run in portable C")
        let bf16: String
        switch cpu.engineLevel {
        case .avx512BF16: bf16 = "yes: --precision bf16 runs on vdpbf16ps tiles"
        case .avx512, .avx512VNNI: bf16 = "no AVX512-BF16: --precision bf16 rounds to bf16 and computes with AVX-512 FMA (not faster than fp32)"
        default: bf16 = "no: --precision bf16 runs in plain C here, slower than fp32 (auto never picks it on this CPU)"
        }
        report.add(section, "BF16", .ok, bf16)
        report.add(section, "OpenBLAS kernels", cpu.engineLevel >= .avx2 ? .ok : .note,
                   "\(EngineBLAS.coreName) (im2col convolutions and dense layers not on Tessera's own tiles)")
        let online = ProcessInfo.processInfo.processorCount
        let usable = ProcessInfo.processInfo.activeProcessorCount
        report.add(section, "threads", threads > usable ? .note : .ok,
                   "\(threads) for inference (--threads); \(usable) cores this process may use, \(online) online"
                       + (threads > usable ? ": more threads than cores slows inference down" : ""))
    }

    // MARK: Memory

    static func memory(_ report: inout DoctorReport) {
        let section = "memory"
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        func kibibytes(_ key: String) -> Int? {
            meminfo.split(separator: "\n").first { $0.hasPrefix(key + ":") }
                .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") }
        }
        let total = kibibytes("MemTotal").map { $0 * 1024 }
        let available = kibibytes("MemAvailable").map { $0 * 1024 }
        let limit = (try? String(contentsOfFile: "/sys/fs/cgroup/memory.max", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        var value = "\(bytes(total)) total, \(bytes(available)) available"
        if let limit { value += ", cgroup limit \(bytes(limit))" }
        // A worker with the compact model peaks at a few hundred MiB (docs/performance.md).
        let usable = [available, limit].compactMap { $0 }.min()
        let low = usable.map { $0 < 1 << 30 } ?? false
        report.add(section, "memory", low ? .note : .ok, value + (low ? ": under 1 GiB left, a worker needs a few hundred MiB" : ""))
    }

    // MARK: Data folder

    static func dataFolder(_ report: inout DoctorReport, _ path: String) {
        let section = "data folder"
        let exists = FileManager.default.fileExists(atPath: path)
        if let problem = DataDirectory.writeProblem(path) {
            let subject = "data folder "
            report.add(section, "data folder", .problem, problem.hasPrefix(subject) ? String(problem.dropFirst(subject.count)) : problem)
        } else {
            report.add(section, "data folder", .ok, exists ? "\(path), writable" : "\(path), will be created")
        }
        // Free space and file system where the data goes: the folder, else its nearest parent.
        var folder = path
        while !FileManager.default.fileExists(atPath: folder) && folder != "/" && !folder.isEmpty {
            folder = (folder as NSString).deletingLastPathComponent
        }
        var info = statvfs()
        if statvfs(folder.isEmpty ? "." : folder, &info) == 0 {
            let free = Int(info.f_bavail) * Int(info.f_frsize)
            let size = Int(info.f_blocks) * Int(info.f_frsize)
            let status: DoctorCheck.Status = free < 1 << 30 ? .problem : free < 20 << 30 ? .note : .ok
            report.add(section, "free space", status, "\(bytes(free)) of \(bytes(size))"
                       + (status == .problem ? ": not enough for a slide" : status == .note ? ": a few slides' worth" : ""))
        }
        if let note = fileSystemNote(folder.isEmpty ? "." : folder) { report.add(section, "file system", .note, note) }
    }

    /// What to know about the file system `path` is on, or nil for an ordinary local disk.
    static func fileSystemNote(_ path: String) -> String? {
        // The mount with the longest mount point that contains `path` (/proc/self/mounts:
        // device, mount point, type, ...; spaces in mount points are written \040).
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        var best: (point: String, type: String)?
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            let point = fields[1].replacingOccurrences(of: "\\040", with: " ")
            let inside = point == "/" || real == point || real.hasPrefix(point + "/")
            if inside && point.count >= (best?.point.count ?? -1) { best = (point, String(fields[2])) }
        }
        guard let type = best?.type else { return nil }
        if ["nfs", "nfs4", "cifs", "smb3", "smbfs", "glusterfs", "ceph", "9p"].contains(type) || type.hasPrefix("fuse") {
            return "\(type) (network or FUSE): keep the SQLite job queue on a local disk (a PostgreSQL queue can be shared)"
        }
        return type == "tmpfs" ? "tmpfs: the job database and results are lost at reboot" : nil
    }

    // MARK: Models

    static func models(_ report: inout DoctorReport, _ directory: String, threads: Int) {
        let section = "models"
        let names = ModelCatalog.names(in: directory)
        guard !names.isEmpty else {
            report.add(section, "models folder", .problem, "no models in \(directory) (folders with model.json + model.onnx; set TESSERA_MODELS)")
            return
        }
        report.add(section, "models folder", .ok, "\(directory): \(names.joined(separator: ", "))")
        if !names.contains(ModelCatalog.compactModel) && !names.contains(ModelCatalog.teacherModel) {
            report.add(section, "default model", .problem,
                       "neither \(ModelCatalog.compactModel) nor \(ModelCatalog.teacherModel) is in \(directory): commands without --model fail")
        } else {
            let name = ModelCatalog.defaultModel(in: directory)
            let validated = (try? ModelCatalog.resolve(name, in: directory))?.card.validationStatement
            report.add(section, "default model", .ok, "\(name)" + (validated.map { " (validated: \($0))" } ?? " (not validated on real labels)"))
        }
        for name in names {
            let clock = Stopwatch()
            do {
                let reference = try ModelCatalog.resolve(name, in: directory)
                let size = reference.card.input.size
                // The card checked against the network, as every command that runs the model does.
                let model = try ModelCardCheck.load(reference)
                let mpp = reference.card.input.mpp.map { " at \($0) um/px" } ?? ""
                report.add(section, name, .ok, String(format: "loads in %.2f s: %d classes, %d px input%@, %.2f GFLOP per patch",
                                                      clock.seconds, reference.card.classes.count, size, mpp, model.flopsPerImage / 1e9))
            } catch {
                report.add(section, name, .problem, "does not load: \(error)")
            }
        }
    }

    // MARK: Queue

    static func queue(_ report: inout DoctorReport, _ options: DoctorOptions) {
        let section = "job queue"
        if let url = options.queue, !url.isEmpty, case .postgres = JobQueueLocation(url) {
            let shown = PostgresLibrary.redacted(url)
            do {
                let counts = try JobQueueLocation(url).open().counts()
                report.add(section, "PostgreSQL", .ok, "\(shown) reachable: " + countsText(counts))
            } catch {
                report.add(section, "PostgreSQL", .problem, "\(shown) unreachable: \(error)")
            }
            return
        }
        var path = options.dataDirectory + "/jobs.sqlite"
        if let queue = options.queue, !queue.isEmpty, case .sqlite(let file) = JobQueueLocation(queue) { path = file }
        guard FileManager.default.fileExists(atPath: path) else {
            report.add(section, "SQLite", .ok, "\(path) will be created on first use (SQLite \(SQLiteLibrary.version))")
            return
        }
        // Not opened: a connection would create -wal/-shm files owned by whoever runs the doctor.
        guard let handle = FileHandle(forReadingAtPath: path) else {
            report.add(section, "SQLite", .problem, "\(path) cannot be read\(errnoSuffix)")
            return
        }
        let header = (try? handle.read(upToCount: 16)) ?? Data()
        try? handle.close()
        guard header == Data("SQLite format 3\0".utf8) else {
            report.add(section, "SQLite", .problem, "\(path) is not an SQLite database")
            return
        }
        guard access(path, W_OK) == 0 else {
            report.add(section, "SQLite", .problem, "\(path) is not writable\(errnoSuffix)")
            return
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
        report.add(section, "SQLite", .ok, "\(path): SQLite database, \(bytes(size)), readable and writable")
    }

    static var errnoSuffix: String { " (\(String(cString: strerror(errno))))" }

    static func countsText(_ counts: [JobState: Int]) -> String {
        JobState.allCases.map { "\(counts[$0] ?? 0) \($0.rawValue)" }.joined(separator: ", ")
    }

    static func bytes(_ count: Int?) -> String {
        guard let count else { return "unknown" }
        let gib = Double(count) / Double(1 << 30)
        return gib >= 1 ? String(format: "%.1f GiB", gib) : String(format: "%.0f MiB", Double(count) / Double(1 << 20))
    }
}
