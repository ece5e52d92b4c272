import Foundation
import PostgresTestSupport
import Testing
@testable import TesseraCore

/// kill -9 of a real `tessera run` process at random points, then a restart: the job ends done
/// exactly once with the same outputs as an uninterrupted run, and the database stays sound.
@Suite("Crash recovery", .serialized)
struct CrashRecoveryTests {
    func run(_ binary: String, _ arguments: [String], environment: [String: String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// The slides, models and an uninterrupted reference run shared by the tests.
    struct Fixture {
        let binary: String
        let slides: [String]
        let environment: [String: String]
        let reference: String

        func arguments(_ root: String, queue: String? = nil, threads: Int = 2) -> [String] {
            ["run"] + slides + ["--model", "tiny", "--out", root + "/out", "--data", root + "/data", "--threads", "\(threads)"]
                + (queue.map { ["--queue", $0] } ?? [])
        }

        /// Outputs in `root` are byte-identical to the reference run's, with no partial folders.
        func expectSameOutputs(_ root: String, _ note: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            for slide in slides {
                let name = (slide as NSString).lastPathComponent
                for file in ["tiles.csv", "annotations.geojson", "heatmap.png", "overlay.png"] {
                    let a = try Data(contentsOf: URL(fileURLWithPath: "\(reference)/out/\(name)/\(file)"))
                    let b = try Data(contentsOf: URL(fileURLWithPath: "\(root)/out/\(name)/\(file)"))
                    #expect(a == b, "\(name)/\(file) identical \(note)", sourceLocation: sourceLocation)
                }
            }
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: root + "/out").filter { $0.hasPrefix(".") }
            #expect(leftovers.isEmpty, "no partial output folders: \(leftovers)", sourceLocation: sourceLocation)
        }

        /// Every job done, exactly once, in a sound store.
        func expectAllDoneOnce(_ store: any JobQueue, sourceLocation: SourceLocation = #_sourceLocation) throws {
            #expect(try store.integrityCheck() == "ok", sourceLocation: sourceLocation)
            let jobs = try store.jobs()
            #expect(jobs.count == slides.count && jobs.allSatisfy { $0.state == .done }, sourceLocation: sourceLocation)
            for job in jobs {
                #expect(try store.events(of: job.id).filter { $0.message == "done" }.count == 1, "done exactly once",
                        sourceLocation: sourceLocation)
            }
        }
    }

    func fixture() throws -> Fixture {
        let binary = try #require(Support.binary)
        let models = try Support.tinyModels()
        let slides = [try Support.syntheticSlide(width: 6000, height: 4000, tissue: 0.5, seed: 7),
                      try Support.syntheticSlide(width: 3000, height: 2000, tissue: 0.5, seed: 8)]
        let environment = ["TESSERA_MODELS": models, "CI": "1"]
        let reference = Support.temporaryDirectory()
        let fixture = Fixture(binary: binary, slides: slides, environment: environment, reference: reference)
        let clean = try run(binary, fixture.arguments(reference), environment: environment)
        Support.finish(clean)
        #expect(clean.terminationStatus == 0)
        return fixture
    }

    /// Starts `tessera run` `times` times and kills each with SIGKILL at a random moment; returns the kills.
    func killRandomly(_ fixture: Fixture, _ root: String, queue: String? = nil, times: Int,
                      environment: [String: String] = [:]) throws -> Int {
        var generator = SystemRandomNumberGenerator()
        var kills = 0
        for _ in 0..<times {
            let process = try run(fixture.binary, fixture.arguments(root, queue: queue),
                                  environment: fixture.environment.merging(environment) { $1 })
            Thread.sleep(forTimeInterval: Double.random(in: 0.3...2.0, using: &generator))
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                kills += 1
            }
            Support.finish(process)
        }
        return kills
    }

    @Test(.needsTesseraBinary)
    func killedRunsResumeToIdenticalOutputs() throws {
        let fixture = try fixture()
        let crashed = Support.temporaryDirectory()
        let kills = try killRandomly(fixture, crashed, times: 6)
        let final = try run(fixture.binary, fixture.arguments(crashed), environment: fixture.environment)
        Support.finish(final)
        #expect(final.terminationStatus == 0)
        #expect(kills > 0)

        let store = try DataDirectory.openStore(crashed + "/data")
        try fixture.expectAllDoneOnce(store)
        try fixture.expectSameOutputs(crashed, "after \(kills) kills")
    }

    /// The same on a PostgreSQL queue, plus a worker killed mid-job whose lease nobody releases:
    /// the job is rescued once its lease expires, then finished exactly once.
    // Needs the PostgreSQL server binaries (apt-get install postgresql; scripts/setup.sh installs them).
    @Test(.needsTesseraBinary, .needsPostgres)
    func killedRunsOnPostgresResumeAfterLeaseExpiry() throws {
        let fixture = try fixture()
        let queue = try PostgresTestServer.createDatabase()
        let crashed = Support.temporaryDirectory()
        let shortLeases = ["TESSERA_LEASE_SECONDS": "3"]
        let kills = try killRandomly(fixture, crashed, queue: queue, times: 3, environment: shortLeases)
        #expect(!FileManager.default.fileExists(atPath: crashed + "/data/jobs.sqlite"), "jobs live in PostgreSQL")

        // One more run, killed while it holds a job.
        let store = try DataDirectory.openStore(crashed + "/data", queue: queue)
        let victim = try run(fixture.binary, fixture.arguments(crashed, queue: queue),
                             environment: fixture.environment.merging(shortLeases) { $1 })
        let marker = ":\(victim.processIdentifier):"
        var held: SlideJob?
        let deadline = Date().addingTimeInterval(60)
        while held == nil && victim.isRunning && Date() < deadline {
            held = try store.jobs(state: .running).first { $0.leaseOwner?.contains(marker) == true }
            if held == nil { Thread.sleep(forTimeInterval: 0.01) }
        }
        kill(victim.processIdentifier, SIGKILL)
        Support.finish(victim)
        let job = try #require(held, "the run claimed a job before it was killed")
        #expect(try store.job(job.id).state == .running, "nobody released the dead worker's lease")

        // The lease runs out (3 s) and a rescue returns the job to the queue.
        var rescued: [JobID] = []
        while !rescued.contains(job.id) && Date() < deadline {
            rescued += try store.rescueExpiredLeases()
            if !rescued.contains(job.id) { Thread.sleep(forTimeInterval: 0.2) }
        }
        #expect(rescued.contains(job.id))
        let requeued = try store.job(job.id)
        #expect(requeued.state == .queued && requeued.leaseOwner == nil)
        #expect(try store.events(of: job.id).contains { $0.message.hasPrefix("lease expired (owner") && $0.message.contains(marker) })

        let final = try run(fixture.binary, fixture.arguments(crashed, queue: queue), environment: fixture.environment)
        Support.finish(final)
        #expect(final.terminationStatus == 0)
        try fixture.expectAllDoneOnce(store)
        try fixture.expectSameOutputs(crashed, "after \(kills + 1) kills on PostgreSQL")
    }

    /// Two worker processes sharing one PostgreSQL queue: each job is claimed once and done once.
    @Test(.needsTesseraBinary, .needsPostgres)
    func replicasShareAPostgresQueue() throws {
        let fixture = try fixture()
        let queue = try PostgresTestServer.createDatabase()
        let shared = Support.temporaryDirectory()
        let replicas = try (0..<2).map { _ in
            try run(fixture.binary, fixture.arguments(shared, queue: queue, threads: 1), environment: fixture.environment)
        }
        for replica in replicas { Support.finish(replica) }
        #expect(replicas.allSatisfy { $0.terminationStatus == 0 })
        let store = try DataDirectory.openStore(shared + "/data", queue: queue)
        try fixture.expectAllDoneOnce(store)
        for job in try store.jobs() {
            #expect(try store.events(of: job.id).filter { $0.message.hasPrefix("claimed by") }.count == 1, "claimed once")
        }
        try fixture.expectSameOutputs(shared, "from two replicas")
    }
}
