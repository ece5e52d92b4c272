import CEngineKernels
import Dispatch
import Foundation
import Synchronization

/// Helper threads for splitting the steps of one micro-batch across lanes (batch 1 on several
/// cores). Between the steps of an inference they poll for the next step's pieces instead of
/// being woken by Dispatch, which costs tens of microseconds per step on a VM; after ~0.1 ms
/// without work they sleep on a semaphore. Lane 0 is the calling thread, lanes 1..<lanes the
/// helpers. One step runs at a time; a nested or concurrent call runs on the caller alone.
///
/// `@unchecked Sendable`: `job` is written by the caller only while no piece is outstanding
/// and read by a helper only after it claimed a piece of that job (a successful compare-exchange
/// on `ticket`, which the caller's release store published); the caller returns only after
/// every claimed piece finished and every helper left the job (`active`).
final class LaneTeam: @unchecked Sendable {
    let lanes: Int

    private final class Job {
        let n: Int, units: Int, grain: Int, pieces: Int
        let body: (Int, Range<Int>) -> Void
        init(n: Int, units: Int, grain: Int, pieces: Int, body: @escaping (Int, Range<Int>) -> Void) {
            self.n = n; self.units = units; self.grain = grain; self.pieces = pieces; self.body = body
        }
        func range(_ i: Int) -> Range<Int> {
            min(n, units * i / pieces * grain)..<min(n, units * (i + 1) / pieces * grain)
        }
    }

    /// generation (24 bits) | pieces (20 bits) | next piece (20 bits)
    private let ticket = Atomic<UInt64>(0)
    private let generation = Atomic<UInt64>(0)
    private let finished = Atomic<Int>(0)
    private let active = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let busy = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    private var job: Job?
    private var published: UInt64 = 0

    /// Polls of an idle helper before it sleeps (each a `pause`, ~0.1 ms in all).
    static let spinLimit = 4000

    init(lanes: Int) {
        self.lanes = lanes
        for lane in 1..<max(lanes, 1) {
            let thread = Thread { [self] in self.helper(lane) }
            thread.name = "tessera.engine.lane\(lane)"
            thread.start()
        }
    }

    /// Stops the helper threads (they hold the team until then).
    func shutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
        for _ in 1..<max(lanes, 1) { wake.signal() }
    }

    /// Runs `body(lane, range)` on `pieces` pieces of `0..<n` (boundaries multiples of `grain`)
    /// across the lanes; returns when all are done.
    func run(n: Int, units: Int, grain: Int, pieces: Int, _ body: (Int, Range<Int>) -> Void) {
        guard pieces < (1 << 20), !busy.exchange(true, ordering: .acquiring) else {
            body(0, 0..<n)
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { body in
            let job = Job(n: n, units: units, grain: grain, pieces: pieces, body: body)
            self.job = job
            published = (published + 1) & 0xFF_FFFF
            finished.store(0, ordering: .relaxed)
            ticket.store(published << 40 | UInt64(pieces) << 20, ordering: .releasing)
            generation.store(published, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                for _ in 1..<lanes { wake.signal() }
            }
            while let i = claim() {
                job.body(0, job.range(i))
                finished.wrappingAdd(1, ordering: .releasing)
            }
            while finished.load(ordering: .acquiring) < pieces || active.load(ordering: .acquiring) > 0 {
                tessera_cpu_relax()
            }
            self.job = nil
        }
    }

    /// Claims the next piece of the published job, or nil when none is left.
    private func claim() -> Int? {
        var t = ticket.load(ordering: .acquiring)
        while true {
            let pieces = Int((t >> 20) & 0xF_FFFF), next = Int(t & 0xF_FFFF)
            if next >= pieces { return nil }
            let (exchanged, original) = ticket.compareExchange(expected: t, desired: t + 1,
                                                               successOrdering: .acquiring, failureOrdering: .acquiring)
            if exchanged { return next }
            t = original
        }
    }

    private func helper(_ lane: Int) {
        var seen = generation.load(ordering: .acquiring)
        while !stopping.load(ordering: .relaxed) {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen && !stopping.load(ordering: .relaxed) {
                spins += 1
                if spins < Self.spinLimit { tessera_cpu_relax(); continue }
                sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                if generation.load(ordering: .sequentiallyConsistent) == seen && !stopping.load(ordering: .sequentiallyConsistent) {
                    wake.wait()
                }
                sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                spins = 0
            }
            seen = generation.load(ordering: .acquiring)
            active.wrappingAdd(1, ordering: .sequentiallyConsistent)
            work(lane)
            active.wrappingSubtract(1, ordering: .releasing)
        }
    }

    /// Runs claimed pieces; every reference to the job's closure ends before this returns.
    @inline(never)
    private func work(_ lane: Int) {
        while let i = claim() {
            if let job { job.body(lane, job.range(i)) }
            finished.wrappingAdd(1, ordering: .releasing)
        }
    }
}
