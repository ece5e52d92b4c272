import Foundation
import JobStore
import Logging

/// The one drive loop of `run`, `serve` and `watch`: recover leases -> let the app do its part
/// (watch: scan the folder) -> run the next job -> wait when there was nothing to run.
public struct WorkLoop: Sendable {
    public let runner: JobRunner
    /// Seconds to wait when the queue had nothing runnable.
    public var idleSeconds: Double
    /// Waits up to the given seconds (watch: until inotify reports a change).
    public var wait: @Sendable (Double) -> Void = { Thread.sleep(forTimeInterval: $0) }
    /// Called with every finished attempt.
    public var finished: @Sendable (Job, JobOutcome) -> Void = { _, _ in }
    /// Called with progress (job, tiles done, tiles total).
    public var progress: (@Sendable (Job, Int, Int) -> Void)?

    public init(runner: JobRunner, idleSeconds: Double = 0.5) {
        self.runner = runner
        self.idleSeconds = idleSeconds
    }

    /// Works until `done()` answers true or the runner's stop flag is set. `step` runs before
    /// every claim; an error from the queue or from `step` goes to `failed`, which rethrows it by
    /// default (serve logs it and goes on).
    public func run(step: () throws -> Void = {}, until done: () throws -> Bool = { false },
                    failed: (any Error) throws -> Void = { throw $0 }) throws {
        var recovered = Date.distantPast
        while !runner.stop.isSet {
            do {
                if Date().timeIntervalSince(recovered) >= idleSeconds {
                    try runner.recoverLeases()
                    recovered = Date()
                }
                try step()
                if try done() { return }
                if let (job, outcome) = try runner.runNext(progress: progress) {
                    finished(job, outcome)
                    continue
                }
                if try done() { return }
            } catch {
                try failed(error)
            }
            wait(idleSeconds)
        }
    }
}
