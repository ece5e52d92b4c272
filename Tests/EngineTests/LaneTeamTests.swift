import Foundation
import Synchronization
import Testing
@testable import Engine

/// The polling helper threads that split the steps of a single micro-batch.
@Suite struct LaneTeamTests {
    /// Thousands of back-to-back jobs (as between the steps of one inference), with the helpers
    /// sometimes asleep: every index of every job runs exactly once, on a valid lane.
    @Test(arguments: [2, 3]) func everyIndexRunsOnceAcrossManyJobs(lanes: Int) {
        let team = LaneTeam(lanes: lanes)
        defer { team.shutdown() }
        var rng = TestRNG(seed: UInt64(40 + lanes))
        let counts = Counts(256)
        defer { counts.buffer.deallocate() }
        let badLane = Atomic<Int>(0)
        for job in 0..<3000 {
            let n = rng.int(1...256), grain = rng.int(1...7)
            let units = (n + grain - 1) / grain
            let pieces = min(units, lanes * rng.int(1...4))
            counts.buffer.update(repeating: 0)
            if job % 500 == 499 { usleepLikeIdle() } // let the helpers fall asleep now and then
            team.run(n: n, units: units, grain: grain, pieces: pieces) { lane, range in
                if lane < 0 || lane >= lanes { badLane.wrappingAdd(1, ordering: .relaxed) }
                for i in range { counts.buffer[i] += 1 } // pieces are disjoint: an overlap shows as 2
            }
            let wrong = (0..<256).filter { counts.buffer[$0] != ($0 < n ? 1 : 0) }
            #expect(wrong.isEmpty, "job \(job): n \(n) grain \(grain) pieces \(pieces), indices \(wrong.prefix(5)) not run once")
            if !wrong.isEmpty { return }
        }
        #expect(badLane.load(ordering: .relaxed) == 0)
    }

    /// A call made while a job is running (from inside a piece) runs on the caller alone.
    @Test func nestedCallRunsOnTheCaller() {
        let team = LaneTeam(lanes: 2)
        defer { team.shutdown() }
        let inner = Atomic<Int>(0)
        team.run(n: 8, units: 8, grain: 1, pieces: 2) { _, range in
            team.run(n: range.count, units: range.count, grain: 1, pieces: 2) { lane, r in
                #expect(lane == 0)
                inner.wrappingAdd(r.count, ordering: .relaxed)
            }
        }
        #expect(inner.load(ordering: .relaxed) == 8)
    }

    /// Per-index run counts, written by the lanes at disjoint indices.
    struct Counts: @unchecked Sendable {
        let buffer: UnsafeMutableBufferPointer<Int>
        init(_ n: Int) { buffer = .allocate(capacity: n); buffer.initialize(repeating: 0) }
    }

    /// Sleeps long enough (~2 ms) for idle helpers to stop polling and wait on the semaphore.
    private func usleepLikeIdle() { Thread.sleep(forTimeInterval: 0.002) }
}
