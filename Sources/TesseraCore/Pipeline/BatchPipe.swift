import Foundation
import SlideIO

/// The two-slot queue between the reader thread and the engine. `@unchecked Sendable`: all
/// state is guarded by `condition`; a batch is owned by whichever side took it last.
final class BatchPipe: @unchecked Sendable {
    private let condition = NSCondition()
    private var free: [PatchBatch]
    private var filled: [PatchBatch] = []
    private var finished = false
    private var aborted = false
    private var failure: (any Error)?

    init(batches: [PatchBatch]) { free = batches }

    /// A batch to fill; nil once the consumer has gone.
    func takeFree() -> PatchBatch? {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty && !aborted { condition.wait() }
        return aborted ? nil : free.removeFirst()
    }

    func putFilled(_ batch: PatchBatch) {
        condition.lock()
        filled.append(batch)
        condition.broadcast()
        condition.unlock()
    }

    func putFree(_ batch: PatchBatch) {
        condition.lock()
        free.append(batch)
        condition.broadcast()
        condition.unlock()
    }

    /// The next filled batch in order; nil at the end; rethrows the reader's error.
    func takeFilled() throws -> PatchBatch? {
        condition.lock()
        defer { condition.unlock() }
        while filled.isEmpty && !finished { condition.wait() }
        if !filled.isEmpty { return filled.removeFirst() }
        if let failure { throw failure }
        return nil
    }

    func finish(error: (any Error)?) {
        condition.lock()
        finished = true
        failure = error
        condition.broadcast()
        condition.unlock()
    }

    /// Stops the reader (consumer leaving early or done).
    func abort() {
        condition.lock()
        aborted = true
        condition.broadcast()
        condition.unlock()
    }
}
