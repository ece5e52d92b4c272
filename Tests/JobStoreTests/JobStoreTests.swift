import Foundation
import PostgresTestSupport
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

/// Where a queue test keeps its jobs.
enum Backend: String, Sendable {
    case sqlite, postgres
}

/// The queue test suite, written once against `JobQueue` and run on each backend by the suites
/// below: every test gets a fresh store location (an SQLite file, or a new PostgreSQL database).
struct QueueCases {
    let backend: Backend
    let clock = TestClock()
    /// The SQLite file or the PostgreSQL database URL.
    let location: String

    init(_ backend: Backend) throws {
        self.backend = backend
        switch backend {
        case .sqlite: location = temporaryDatabase()
        case .postgres: location = try PostgresTestServer.createDatabase()
        }
    }

    /// Opens (another connection to) the test's store.
    func makeStore(lease: Double = 30) throws -> any JobQueue {
        let clock = self.clock
        switch backend {
        case .sqlite: return try JobStore(path: location, leaseSeconds: lease, backoffSeconds: 2, clock: { clock.now })
        case .postgres: return try PostgresJobStore(url: location, leaseSeconds: lease, backoffSeconds: 2, clock: { clock.now })
        }
    }

    func opensWithCurrentSchema() throws {
        _ = try makeStore()
        let reopened = try makeStore()
        #expect(try reopened.integrityCheck() == "ok")
        switch backend {
        case .sqlite:
            #expect(FileManager.default.fileExists(atPath: location + "-wal"))
        case .postgres:
            // Reopening migrated nothing twice: one version row, at the latest version (the SQLite one).
            let versions = try PostgresConnection(url: location).query("SELECT version FROM tessera_schema")
            #expect(versions.count == 1 && versions.first?.int("version") == Migrator.latestVersion)
            #expect(try reopened.jobs().isEmpty)
        }
    }

    func enqueueDeduplicatesByContentModelAndParameters() throws {
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

    func claimLeasesInOrderAndFencesStaleWorkers() throws {
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
        #expect(retaken.id == a.id && newLease.token > lease.token && retaken.attempts == 1, "the lost lease gave its attempt back")
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

    func checkpointsAreIdempotentAndResumable() throws {
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

    func failuresRetryWithBackoffThenFail() throws {
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

    func permanentFailureAndCancel() throws {
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

    func lostLeasesCountInterruptionsNotAttempts() throws {
        let store = try makeStore()
        let job = try store.enqueue(slide: slide(1), model: "m", maxAttempts: 2).job
        // Worker crashes (leases that ran out) do not use the slide's attempts ...
        for round in 1..<10 {
            _ = try #require(try store.claim(owner: "crashy"), "claim \(round)")
            clock.advance(31)
            try store.rescueExpiredLeases()
            let after = try store.job(job.id)
            #expect(after.state == .queued && after.attempts == 0 && after.interruptions == round)
            clock.advance(100)
        }
        // ... progress resets the count ...
        let (_, lease) = try #require(try store.claim(owner: "w"))
        try store.checkpoint(lease, results: [TileResult(index: 0, scores: [1])], tilesDone: 1)
        clock.advance(31)
        try store.rescueExpiredLeases()
        #expect(try store.job(job.id).interruptions == 0)
        // ... and a slide that keeps taking its worker down is still stopped after ten in a row.
        for _ in 0..<10 {
            _ = try #require(try store.claim(owner: "crashy"))
            clock.advance(31)
            try store.rescueExpiredLeases()
            clock.advance(100)
        }
        let failed = try store.job(job.id)
        #expect(failed.state == .failed && failed.attempts == 0 && failed.interruptions == 10)
        #expect(failed.error?.hasPrefix("[worker_lost]") == true && failed.error?.contains("lease expired") == true)
        // A retry starts over.
        #expect(try store.retry(job.id).interruptions == 0)
    }

    func aStoppingWorkerGivesTheJobBackWithoutCost() throws {
        let store = try makeStore()
        let job = try store.enqueue(slide: slide(1), model: "m").job
        _ = try #require(try store.claim(owner: "w"))
        #expect(try store.releaseLeases(ownedBy: ["w"], reason: "worker stopping", interrupted: false) == [job.id])
        let back = try store.job(job.id)
        #expect(back.state == .queued && back.attempts == 0 && back.interruptions == 0)
        #expect(try store.claim(owner: "w2")?.job.id == job.id, "runnable at once")
    }

    func leasesOfGoneOwnersAreReleased() throws {
        let store = try makeStore()
        let a = try store.enqueue(slide: slide(1), model: "m").job
        let b = try store.enqueue(slide: slide(2), model: "m").job
        _ = try #require(try store.claim(owner: "host:1:dead"))
        let (_, live) = try #require(try store.claim(owner: "host:2:live"))
        #expect(try store.leaseOwners().sorted() == ["host:1:dead", "host:2:live"])
        #expect(try store.releaseLeases(ownedBy: ["host:1:dead", "host:3:none"], reason: "worker process ended") == [a.id])
        let released = try store.job(a.id)
        #expect(released.state == .queued && released.leaseOwner == nil && released.attempts == 0 && released.interruptions == 1)
        #expect(try store.leaseOwners() == ["host:2:live"])
        #expect(try store.job(b.id).state == .running)
        try store.heartbeat(live)
        #expect(try store.events(of: a.id).map(\.message).contains("worker process ended (owner host:1:dead)"))
    }

    func resultsKeepScoresAndEmbeddings() throws {
        let store = try makeStore()
        let job = try store.enqueue(slide: slide(1), model: "m", parameters: #"{"embeddings":true}"#).job
        let (_, lease) = try #require(try store.claim(owner: "w"))
        let tiles = (0..<1200).map { TileResult(index: $0, scores: [Float($0), -0.5, .pi], embedding: $0 % 2 == 0 ? [1, 2, Float($0)] : nil) }
        try store.checkpoint(lease, results: tiles, tilesDone: tiles.count)
        try store.complete(lease, outputDirectory: nil)
        #expect(try store.results(of: job.id) == tiles)
        #expect(try store.job(job.id).parameters == #"{"embeddings":true}"#)
        #expect(try store.jobs(state: .done).map(\.id) == [job.id] && store.jobs(state: .queued).isEmpty)
    }

    func watchedFilesAreRecordedOnce() throws {
        let store = try makeStore()
        let job = try store.enqueue(slide: slide(1), model: "m").job
        #expect(try store.watchedFile(path: "/in/a.svs") == nil)
        var file = WatchedFile(path: "/in/a.svs", size: 10, modified: 5.5, sha256: slide(1).sha256, job: job.id, state: "queued", reason: nil)
        try store.recordWatchedFile(file)
        try store.recordWatchedFile(WatchedFile(path: "/in/b.txt", size: 1, modified: 1, sha256: nil, job: nil, state: "rejected",
                                                reason: "not a slide"))
        #expect(try store.watchedFile(path: "/in/a.svs") == file)
        #expect(try store.watchedFilesWithFinishedJobs().isEmpty)
        let (_, lease) = try #require(try store.claim(owner: "w"))
        try store.complete(lease, outputDirectory: "/out/a")
        let finished = try store.watchedFilesWithFinishedJobs()
        #expect(finished.map(\.0) == [file] && finished.map(\.1.state) == [.done])
        file.state = "moved"
        try store.recordWatchedFile(file)
        #expect(try store.watchedFile(path: "/in/a.svs")?.state == "moved")
        #expect(try store.watchedFilesWithFinishedJobs().isEmpty)
    }

    func concurrentEnqueuesOfOneSlideMakeOneJob() throws {
        let stores = try (0..<4).map { _ in try makeStore() }
        let created = ClaimLog()
        DispatchQueue.concurrentPerform(iterations: stores.count) { worker in
            for n in 0..<20 {
                let slide = StoredSlide(sha256: "sha-\(n)", path: "/\(n)", originalName: "\(n)", size: n)
                if let (job, isNew) = try? stores[worker].enqueue(slide: slide, model: "m", idempotencyKey: "key-\(n)") {
                    created.add(job.id, attempt: isNew ? 1 : 0)
                }
            }
        }
        #expect(created.all.count == 80, "no enqueue failed")
        #expect(created.all.filter { $0.1 == 1 }.count == 20, "each slide created once")
        #expect(Set(created.all.map(\.0)).count == 20)
        #expect(try stores[0].counts()[.queued] == 20)
    }

    func concurrentClaimersNeverShareAJob() throws {
        let setup = try makeStore()
        for n in 0..<120 { _ = try setup.enqueue(slide: StoredSlide(sha256: "\(n)", path: "/\(n)", originalName: "\(n)", size: 1), model: "m") }
        let workers = 4
        let stores = try (0..<workers).map { _ in try makeStore() }
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

// The same queue tests on each backend.

@Suite("Job store (SQLite)")
struct SQLiteJobStoreTests {
    @Test func opensWithCurrentSchema() throws { try QueueCases(.sqlite).opensWithCurrentSchema() }
    @Test func enqueueDeduplicatesByContentModelAndParameters() throws { try QueueCases(.sqlite).enqueueDeduplicatesByContentModelAndParameters() }
    @Test func claimLeasesInOrderAndFencesStaleWorkers() throws { try QueueCases(.sqlite).claimLeasesInOrderAndFencesStaleWorkers() }
    @Test func checkpointsAreIdempotentAndResumable() throws { try QueueCases(.sqlite).checkpointsAreIdempotentAndResumable() }
    @Test func failuresRetryWithBackoffThenFail() throws { try QueueCases(.sqlite).failuresRetryWithBackoffThenFail() }
    @Test func permanentFailureAndCancel() throws { try QueueCases(.sqlite).permanentFailureAndCancel() }
    @Test func lostLeasesCountInterruptionsNotAttempts() throws { try QueueCases(.sqlite).lostLeasesCountInterruptionsNotAttempts() }
    @Test func aStoppingWorkerGivesTheJobBackWithoutCost() throws { try QueueCases(.sqlite).aStoppingWorkerGivesTheJobBackWithoutCost() }
    @Test func leasesOfGoneOwnersAreReleased() throws { try QueueCases(.sqlite).leasesOfGoneOwnersAreReleased() }
    @Test func resultsKeepScoresAndEmbeddings() throws { try QueueCases(.sqlite).resultsKeepScoresAndEmbeddings() }
    @Test func watchedFilesAreRecordedOnce() throws { try QueueCases(.sqlite).watchedFilesAreRecordedOnce() }
    @Test func concurrentEnqueuesOfOneSlideMakeOneJob() throws { try QueueCases(.sqlite).concurrentEnqueuesOfOneSlideMakeOneJob() }
    @Test func concurrentClaimersNeverShareAJob() throws { try QueueCases(.sqlite).concurrentClaimersNeverShareAJob() }
}

// Needs the PostgreSQL server binaries (Debian: apt-get install postgresql; scripts/setup.sh
// installs them); without them these tests are skipped with this reason.
@Suite("Job store (PostgreSQL)",
       .enabled(if: PostgresTestServer.available, "PostgreSQL server binaries not installed (apt-get install postgresql)"))
struct PostgresJobStoreTests {
    @Test func opensWithCurrentSchema() throws { try QueueCases(.postgres).opensWithCurrentSchema() }
    @Test func enqueueDeduplicatesByContentModelAndParameters() throws { try QueueCases(.postgres).enqueueDeduplicatesByContentModelAndParameters() }
    @Test func claimLeasesInOrderAndFencesStaleWorkers() throws { try QueueCases(.postgres).claimLeasesInOrderAndFencesStaleWorkers() }
    @Test func checkpointsAreIdempotentAndResumable() throws { try QueueCases(.postgres).checkpointsAreIdempotentAndResumable() }
    @Test func failuresRetryWithBackoffThenFail() throws { try QueueCases(.postgres).failuresRetryWithBackoffThenFail() }
    @Test func permanentFailureAndCancel() throws { try QueueCases(.postgres).permanentFailureAndCancel() }
    @Test func lostLeasesCountInterruptionsNotAttempts() throws { try QueueCases(.postgres).lostLeasesCountInterruptionsNotAttempts() }
    @Test func aStoppingWorkerGivesTheJobBackWithoutCost() throws { try QueueCases(.postgres).aStoppingWorkerGivesTheJobBackWithoutCost() }
    @Test func leasesOfGoneOwnersAreReleased() throws { try QueueCases(.postgres).leasesOfGoneOwnersAreReleased() }
    @Test func resultsKeepScoresAndEmbeddings() throws { try QueueCases(.postgres).resultsKeepScoresAndEmbeddings() }
    @Test func watchedFilesAreRecordedOnce() throws { try QueueCases(.postgres).watchedFilesAreRecordedOnce() }
    @Test func concurrentEnqueuesOfOneSlideMakeOneJob() throws { try QueueCases(.postgres).concurrentEnqueuesOfOneSlideMakeOneJob() }
    @Test func concurrentClaimersNeverShareAJob() throws { try QueueCases(.postgres).concurrentClaimersNeverShareAJob() }
}

final class ClaimLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(JobID, Int)] = []
    func add(_ id: JobID, attempt: Int) { lock.withLock { entries.append((id, attempt)) } }
    var all: [(JobID, Int)] { lock.withLock { entries } }
}
