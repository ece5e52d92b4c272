import Foundation
import Testing
@testable import JobStore

/// A settable clock for lease and backoff tests.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Double = 1_000_000
    var now: Double { lock.withLock { value } }
    func advance(_ seconds: Double) { lock.withLock { value += seconds } }
}

func temporaryDatabase() -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-jobs-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory.appendingPathComponent("jobs.sqlite").path
}

func slide(_ n: Int) -> StoredSlide {
    StoredSlide(sha256: String(repeating: String(n % 10), count: 64), path: "/store/\(n).svs", originalName: "slide-\(n).svs",
                size: 1000 + n)
}

@Test func sqliteIsRecentEnoughForReturning() {
    #expect(SQLiteLibrary.versionNumber >= 3_035_000)
}

@Suite("Job store")
struct JobStoreTests {
    let clock = TestClock()

    func makeStore(path: String = temporaryDatabase(), lease: Double = 30) throws -> JobStore {
        let clock = self.clock
        return try JobStore(path: path, leaseSeconds: lease, backoffSeconds: 2, clock: { clock.now })
    }

    @Test func opensInWALWithSchemaVersion() throws {
        let path = temporaryDatabase()
        _ = try makeStore(path: path)
        let reopened = try makeStore(path: path)
        #expect(try reopened.integrityCheck() == "ok")
        #expect(FileManager.default.fileExists(atPath: path + "-wal"))
    }

    @Test func enqueueDeduplicatesByContentModelAndParameters() throws {
        let store = try makeStore()
        let first = try store.enqueue(slide: slide(1), model: "compact")
        #expect(first.created && first.job.state == .queued && first.job.slide.originalName == "slide-1.svs")
        let again = try store.enqueue(slide: slide(1), model: "compact")
        #expect(!again.created && again.job.id == first.job.id)
        let otherModel = try store.enqueue(slide: slide(1), model: "teacher")
        #expect(otherModel.created && otherModel.job.id != first.job.id)
        let keyed = try store.enqueue(slide: slide(2), model: "compact", idempotencyKey: "abc")
        let sameKey = try store.enqueue(slide: slide(3), model: "compact", idempotencyKey: "abc")
        #expect(keyed.created && !sameKey.created && sameKey.job.id == keyed.job.id)
        #expect(try store.counts()[.queued] == 3)
    }

    @Test func claimLeasesInOrderAndFencesStaleWorkers() throws {
        let store = try makeStore()
        let a = try store.enqueue(slide: slide(1), model: "m").job
        let b = try store.enqueue(slide: slide(2), model: "m").job
        let (claimed, lease) = try #require(try store.claim(owner: "w1"))
        #expect(claimed.id == a.id && claimed.state == .running && claimed.attempts == 1 && lease.owner == "w1")
        #expect(try store.claim(owner: "w2")?.job.id == b.id)
        #expect(try store.claim(owner: "w3") == nil)

        // w1 stops heartbeating; its lease expires and is rescued, then w3 takes the job over.
        clock.advance(31)
        #expect(try store.rescueExpiredLeases().sorted() == [a.id, b.id])
        #expect(try store.claim(owner: "w3") == nil, "a lease lost without progress waits out the backoff")
        clock.advance(2)
        let (retaken, newLease) = try #require(try store.claim(owner: "w3"))
        #expect(retaken.id == a.id && newLease.token > lease.token && retaken.attempts == 2)
        #expect(throws: JobStoreError.leaseLost(a.id)) { try store.heartbeat(lease) }
        #expect(throws: JobStoreError.leaseLost(a.id)) {
            try store.checkpoint(lease, results: [TileResult(index: 0, scores: [1])], tilesDone: 1)
        }
        #expect(throws: JobStoreError.leaseLost(a.id)) { try store.complete(lease, outputDirectory: "/x") }
        #expect(try store.results(of: a.id).isEmpty)
        try store.heartbeat(newLease)
        try store.complete(newLease, outputDirectory: "/out/1")
        let done = try store.job(a.id)
        #expect(done.state == .done && done.outputDirectory == "/out/1" && done.finishedAt != nil)
    }

    @Test func checkpointsAreIdempotentAndResumable() throws {
        let store = try makeStore()
        let job = try store.enqueue(slide: slide(1), model: "m").job
        let (_, lease) = try #require(try store.claim(owner: "w"))
        try store.setTotal(lease, tiles: 4)
        try store.checkpoint(lease, results: [TileResult(index: 0, scores: [0.1, 0.9]), TileResult(index: 1, scores: [0.5, 0.5])],
                             tilesDone: 2)
        // The worker dies; the job is rescued with its progress and claimed again.
        clock.advance(31)
        try store.rescueExpiredLeases()
        let requeued = try store.job(job.id)
        #expect(requeued.state == .queued && requeued.tilesDone == 2 && requeued.attempts == 0,
                "progress made: the crash does not use up an attempt")
        let (resumed, lease2) = try #require(try store.claim(owner: "w2"))
        #expect(resumed.tilesDone == 2 && resumed.tilesTotal == 4)
        // Re-running tile 1 replaces it rather than duplicating it.
        try store.checkpoint(lease2, results: [TileResult(index: 1, scores: [0.5, 0.5]), TileResult(index: 2, scores: [1, 0]),
                                               TileResult(index: 3, scores: [0, 1])], tilesDone: 4)
        let results = try store.results(of: job.id)
        #expect(results.map(\.index) == [0, 1, 2, 3])
        #expect(results[0].scores == [0.1, 0.9])
    }

    @Test func failuresRetryWithBackoffThenFail() throws {
        let store = try makeStore()
        let job = try store.enqueue(slide: slide(1), model: "m", maxAttempts: 3).job
        var delays: [Double] = []
        for attempt in 1...3 {
            let (claimed, lease) = try #require(try store.claim(owner: "w"), "attempt \(attempt)")
            #expect(claimed.attempts == attempt)
            try store.fail(lease, reason: "decode error \(attempt)")
            let after = try store.job(job.id)
            if attempt < 3 {
                #expect(after.state == .queued)
                delays.append(after.runAfter - clock.now)
                #expect(try store.claim(owner: "w") == nil, "not before the backoff")
                clock.advance(after.runAfter - clock.now)
            } else {
                #expect(after.state == .failed && after.error == "decode error 3")
            }
        }
        #expect(delays == [2, 4])
        let history = try store.events(of: job.id).map(\.message)
        #expect(history.contains("decode error 1") && history.contains("decode error 3"))
    }

    @Test func permanentFailureAndCancel() throws {
        let store = try makeStore()
        let a = try store.enqueue(slide: slide(1), model: "m").job
        let b = try store.enqueue(slide: slide(2), model: "m").job
        let (_, lease) = try #require(try store.claim(owner: "w"))
        try store.fail(lease, reason: "not a slide", permanent: true)
        #expect(try store.job(a.id).state == .failed)
        let (_, leaseB) = try #require(try store.claim(owner: "w"))
        #expect(try store.cancel(b.id).state == .cancelled)
        #expect(throws: JobStoreError.leaseLost(b.id)) { try store.checkpoint(leaseB, results: [], tilesDone: 1) }
        #expect(try store.cancel(b.id).state == .cancelled, "cancel is idempotent")
        #expect(throws: JobStoreError.notFound(JobID(999))) { try store.job(JobID(999)) }
    }

    @Test func progressLessCrashesUseUpAttempts() throws {
        let store = try makeStore()
        let job = try store.enqueue(slide: slide(1), model: "m", maxAttempts: 2).job
        for _ in 0..<2 {
            _ = try #require(try store.claim(owner: "crashy"))
            clock.advance(31)
            try store.rescueExpiredLeases()
            clock.advance(100)
        }
        let failed = try store.job(job.id)
        #expect(failed.state == .failed && failed.error?.contains("lease expired") == true)
    }

    @Test func concurrentClaimersNeverShareAJob() throws {
        let path = temporaryDatabase()
        let setup = try makeStore(path: path)
        for n in 0..<120 { _ = try setup.enqueue(slide: StoredSlide(sha256: "\(n)", path: "/\(n)", originalName: "\(n)", size: 1), model: "m") }
        let workers = 4
        let stores = try (0..<workers).map { _ in try makeStore(path: path) }
        let claims = ClaimLog()
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            while let (job, lease) = try? stores[worker].claim(owner: "w\(worker)") {
                claims.add(job.id, attempt: job.attempts)
                try? stores[worker].complete(lease, outputDirectory: nil)
            }
        }
        #expect(claims.all.count == 120)
        #expect(Set(claims.all.map(\.0)).count == 120)
        #expect(try setup.counts()[.done] == 120)
        #expect(try setup.integrityCheck() == "ok")
    }
}

final class ClaimLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(JobID, Int)] = []
    func add(_ id: JobID, attempt: Int) { lock.withLock { entries.append((id, attempt)) } }
    var all: [(JobID, Int)] { lock.withLock { entries } }
}
