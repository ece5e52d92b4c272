import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
@testable import TesseraCore
import SlideIO

/// Each slide is analysed in its own `tessera job-process` under a budget: a decode bomb kills
/// only its own process, cancel and SIGTERM end the work at once, and killed servers cost valid
/// slides nothing.
@Suite("Contained slide work", .serialized, .needsTesseraBinary)
struct ContainedJobsTests {
    /// `tessera serve` with one worker on a free port.
    func serve(data: String, models: String, arguments: [String] = []) throws -> (Process, HTTPClient) {
        try Support.serve(data: data, models: models, arguments: ["--workers", "1"] + arguments, environment: ["TESSERA_API_TOKENS": ""])
    }

    func upload(_ client: HTTPClient, _ path: String, name: String, query: String = "") throws -> Int {
        let body = try Data(contentsOf: URL(fileURLWithPath: path))
        let (status, json) = try client.json("POST", "/v1/slides?filename=\(name)\(query)", body: body)
        #expect(status == 202, "\(name) accepted: \(json)")
        return try #require(json["id"] as? Int)
    }

    func job(_ client: HTTPClient, _ id: Int) throws -> [String: Any] {
        try client.json("GET", "/v1/jobs/\(id)").1
    }

    /// Waits until every job is final; returns their rows.
    func waitFinal(_ client: HTTPClient, _ ids: [Int], within seconds: Double) throws -> [Int: [String: Any]] {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let rows = try Dictionary(uniqueKeysWithValues: ids.map { ($0, try job(client, $0)) })
            if rows.values.allSatisfy({ ["done", "failed", "cancelled"].contains($0["state"] as? String ?? "") }) || Date() > deadline {
                return rows
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }

    /// Analysis processes started by `server` (the children of its process).
    static func analysisProcesses(of server: Int32) -> [Int32] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server)/task")) ?? []
        return tasks.flatMap { task -> [Int32] in
            let text = (try? String(contentsOfFile: "/proc/\(server)/task/\(task)/children", encoding: .utf8)) ?? ""
            return text.split(separator: " ").compactMap { Int32($0) }
        }
    }

    /// Any `tessera job-process` still alive on this machine whose arguments name `data`.
    static func strayProcesses(data: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let arguments = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return arguments.contains("job-process") && arguments.contains(data)
        }
    }

    /// Peak resident memory of a process (VmHWM), in bytes.
    static func peakResident(of pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return kb * 1024
    }

    @Test func aDecodeBombFailsOnItsBudgetWhileGoodSlidesBehindItFinish() throws {
        let models = try Support.tinyModels()
        let data = Support.temporaryDirectory() + "/data"
        let bomb = Support.temporaryDirectory() + "/bomb.tif"
        // 40,000 x 40,000 RGB in one-row deflate strips: a few MB on disk, 4.8 GB decoded.
        try StripTIFFBomb.write(to: bomb, width: 40_000, height: 40_000)
        let budget = 768 << 20
        let (server, client) = try serve(data: data, models: models, arguments: ["--job-memory", "768M"])
        defer {
            kill(server.processIdentifier, SIGKILL)
            Support.finish(server)
        }
        let bombID = try upload(client, bomb, name: "bomb.tif", query: "&slide_mpp=0.5&model=tiny")
        let good = [try upload(client, try Support.syntheticSlide(width: 3000, height: 2000, seed: 51), name: "a.tif", query: "&model=tiny"),
                    try upload(client, try Support.syntheticSlide(width: 3000, height: 2000, seed: 52), name: "b.tif", query: "&model=tiny")]
        let rows = try waitFinal(client, [bombID] + good, within: 120)
        let bombRow = try #require(rows[bombID])
        #expect(bombRow["state"] as? String == "failed")
        let error = bombRow["error"] as? [String: Any]
        #expect(error?["code"] as? String == "over_budget", "\(bombRow)")
        let message = error?["message"] as? String ?? ""
        #expect(message.contains("768 MiB memory budget") && message.contains("while "), "says which budget and when: \(message)")
        for id in good { #expect(rows[id]?["state"] as? String == "done", "good slide \(id): \(rows[id] ?? [:])") }
        let peak = try #require(Self.peakResident(of: server.processIdentifier))
        #expect(peak < budget, "the service itself stayed under the budget: \(peak >> 20) MiB")
        #expect(Self.strayProcesses(data: data).isEmpty)
    }

    @Test func cancelAndSigtermEndTheAnalysisWithinTwoSeconds() throws {
        let models = try Support.tinyModels()
        let data = Support.temporaryDirectory() + "/data"
        let slide = try Support.syntheticSlide(width: 4000, height: 3000, seed: 53)
        // The shipped DenseNet on one core: a job that lasts far longer than the test waits.
        let slow = ["--threads", "1"]
        var (server, client) = try serve(data: data, models: models, arguments: slow)
        defer {
            kill(server.processIdentifier, SIGKILL)
            Support.finish(server)
        }
        func waitRunning(_ id: Int) throws {
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                if try job(client, id)["state"] as? String == "running", !Self.analysisProcesses(of: server.processIdentifier).isEmpty {
                    return
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
            Issue.record("job \(id) never ran in an analysis process")
        }
        let first = try upload(client, slide, name: "first.tif", query: "&model=densenet121-lc25000")
        try waitRunning(first)
        // SIGTERM to the analysis process alone (as `systemctl stop` sends to the whole unit) is a
        // stop, not a crash: the job runs again at once without using an attempt.
        let stoppedChild = try #require(Self.analysisProcesses(of: server.processIdentifier).first)
        kill(stoppedChild, SIGTERM)
        let rerun = Date().addingTimeInterval(30)
        while try Date() < rerun && (Self.analysisProcesses(of: server.processIdentifier).filter { $0 != stoppedChild }.isEmpty
                                 || job(client, first)["state"] as? String != "running") {
            Thread.sleep(forTimeInterval: 0.05)
        }
        let events = try DataDirectory.openStore(data).events(of: JobID(first)).map(\.message)
        #expect(events.contains { $0.hasPrefix("worker stopping") }, "\(events)")
        #expect(!events.contains { $0.contains("crashed") }, "\(events)")
        #expect(try job(client, first)["attempts"] as? Int == 1, "the stopped attempt was given back")
        Thread.sleep(forTimeInterval: 1)
        let children = Self.analysisProcesses(of: server.processIdentifier)
        #expect(children.count == 1)
        let cancelled = Date()
        #expect(try client.call("DELETE", "/v1/jobs/\(first)").status == 200)
        while children.contains(where: { kill($0, 0) == 0 }) && Date().timeIntervalSince(cancelled) < 10 {
            Thread.sleep(forTimeInterval: 0.02)
        }
        let cancelSeconds = Date().timeIntervalSince(cancelled)
        #expect(cancelSeconds < 2, "the analysis ended \(cancelSeconds) s after the cancel")
        #expect(try job(client, first)["state"] as? String == "cancelled")

        // SIGTERM while a job runs: the server exits within 2 s and the job waits, attempts unspent.
        let second = try upload(client, slide, name: "second.tif", query: "&model=densenet121-lc25000&min_tissue=0.3")
        try waitRunning(second)
        let stopped = Date()
        kill(server.processIdentifier, SIGTERM)
        while server.isRunning && Date().timeIntervalSince(stopped) < 15 { Thread.sleep(forTimeInterval: 0.02) }
        let stopSeconds = Date().timeIntervalSince(stopped)
        #expect(!server.isRunning && server.terminationStatus == 0)
        #expect(stopSeconds < 2, "serve stopped \(stopSeconds) s after SIGTERM")
        Thread.sleep(forTimeInterval: 0.3)
        #expect(Self.strayProcesses(data: data).isEmpty, "no analysis process outlives the server")
        let store = try DataDirectory.openStore(data)
        let row = try store.job(JobID(second))
        #expect(row.state == .queued && row.attempts == 0 && row.interruptions == 0, "\(row)")
        (server, client) = try serve(data: data, models: models, arguments: ["--workers", "0"])
    }

    @Test func twentyKillsOfServeCostValidSlidesNothing() throws {
        let models = try Support.tinyModels()
        let data = Support.temporaryDirectory() + "/data"
        var (server, client) = try serve(data: data, models: models)
        var ids: [Int] = []
        for seed in 0..<6 {
            ids.append(try upload(client, try Support.syntheticSlide(width: 3000, height: 2000, seed: 60 + UInt64(seed)),
                                  name: "s\(seed).tif", query: "&model=tiny-fine"))
        }
        var generator = SystemRandomNumberGenerator()
        var kills = 0
        while kills < 20 {
            if !server.isRunning { (server, client) = try serve(data: data, models: models) }
            Thread.sleep(forTimeInterval: Double.random(in: 0.4...2.0, using: &generator))
            kill(server.processIdentifier, SIGKILL)
            Support.finish(server)
            kills += 1
        }
        // Analysis processes of a killed server end by themselves.
        let deadline = Date().addingTimeInterval(5)
        while !Self.strayProcesses(data: data).isEmpty && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(Self.strayProcesses(data: data).isEmpty)
        (server, client) = try serve(data: data, models: models)
        defer {
            kill(server.processIdentifier, SIGTERM)
            Support.finish(server)
        }
        let rows = try waitFinal(client, ids, within: 180)
        for id in ids {
            #expect(rows[id]?["state"] as? String == "done", "slide \(id) after \(kills) kills: \(rows[id] ?? [:])")
        }
        let store = try DataDirectory.openStore(data)
        #expect(try store.integrityCheck() == "ok")
        for id in ids {
            #expect(try store.events(of: JobID(id)).filter { $0.message == "done" }.count == 1, "done exactly once")
            #expect(try store.job(JobID(id)).attempts <= 1, "no attempt lost to a killed server")
        }
    }
}

/// A TIFF of a large RGB image in one-row deflate strips of light grey: a few MB on disk (a
/// plausible ratio for blank glass, so it passes the slide checks), gigabytes once decoded.
enum StripTIFFBomb {
    /// `sharedStrips`: every strip points at the same bytes (a file far smaller than its tables claim).
    static func write(to path: String, width: Int, height: Int, sharedStrips: Bool = false) throws {
        let row = try deflated(count: width * 3)
        var file = Data("II*\u{0}".utf8)
        func u16(_ value: Int) { withUnsafeBytes(of: UInt16(value).littleEndian) { file.append(contentsOf: $0) } }
        func u32(_ value: Int) { withUnsafeBytes(of: UInt32(value).littleEndian) { file.append(contentsOf: $0) } }
        let dataOffset = 8
        let offsets = dataOffset + row.count * (sharedStrips ? 1 : height)
        let counts = offsets + 4 * height
        let bits = counts + 4 * height
        let ifd = bits + 6
        u32(ifd)
        for _ in 0..<(sharedStrips ? 1 : height) { file.append(row) }
        for strip in 0..<height { u32(dataOffset + (sharedStrips ? 0 : strip * row.count)) }
        for _ in 0..<height { u32(row.count) }
        u16(8); u16(8); u16(8)
        let entries: [(Int, Int, Int, Int)] = [
            (256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, bits), (259, 3, 1, 8), (262, 3, 1, 2),
            (273, 4, height, offsets), (277, 3, 1, 3), (278, 4, 1, 1), (279, 4, height, counts), (284, 3, 1, 1)]
        u16(entries.count)
        for (tag, type, count, value) in entries {
            u16(tag); u16(type); u32(count)
            if type == 3 && count == 1 { u16(value); u16(0) } else { u32(value) }
        }
        u32(0)
        try file.write(to: URL(fileURLWithPath: path))
    }

    /// A zlib stream of `count` bytes of 0xF0 (light grey): gzip's deflate data in a zlib wrapper.
    static func deflated(count: Int) throws -> Data {
        let folder = Support.temporaryDirectory()
        let raw = folder + "/row"
        try Data(repeating: 0xF0, count: count).write(to: URL(fileURLWithPath: raw))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/gzip")
        process.arguments = ["-9", "-n", "-k", raw]
        try process.run()
        process.waitUntilExit()
        let gzip = try Data(contentsOf: URL(fileURLWithPath: raw + ".gz"))
        // gzip = 10-byte header + raw deflate + CRC32 + size; zlib = 2-byte header + raw deflate + Adler-32.
        let deflate = gzip.subdata(in: 10..<(gzip.count - 8))
        var zlib = Data([0x78, 0xDA])
        zlib.append(deflate)
        var a: UInt32 = 1, b: UInt32 = 0
        for _ in 0..<count {
            a = (a + 0xF0) % 65521
            b = (b + a) % 65521
        }
        withUnsafeBytes(of: ((b << 16) | a).bigEndian) { zlib.append(contentsOf: $0) }
        return zlib
    }
}

@Suite("Job failures")
struct JobFailureCodeTests {
    @Test func stripsSharingTheirBytesAreTooLargeNotADecodeJob() throws {
        let path = Support.temporaryDirectory() + "/shared.tif"
        // 200,000 x 200,000 px in 1.6 MB: every strip points at one row, so the tables sum to far
        // more bytes than the file holds.
        try StripTIFFBomb.write(to: path, width: 200_000, height: 200_000, sharedStrips: true)
        #expect {
            _ = try Slide.open(path: path, mppOverride: 0.5)
        } throws: { error in
            guard case SlideError.tooLarge = error else { return false }
            return "\(error)".contains(":1")
        }
    }

    @Test func aFullDiskIsAWriteFailureThatSaysWhatToDo() {
        let error = SlideError.writeFailed(path: "/data/outputs/.7.partial-1/overlay.png",
                                           reason: "write error; unix error: No space left on device")
        let failure = JobFailure.from(error, slidePath: "/data/slides/abc", slideName: "case 7.svs")
        #expect(failure.code == .writeFailed && failure.transient)
        #expect(failure.message.contains("the disk holding the data folder is full"), "\(failure.message)")
        #expect(JobFailure(stored: failure.stored).code == .writeFailed, "the code survives the job row")
    }
}
