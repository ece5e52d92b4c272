import Foundation

/// A stop request shared between a signal handler and the work loop: set once, read at every
/// batch boundary.
public final class StopFlag: @unchecked Sendable {
    // @unchecked: `value` is guarded by `lock`.
    private let lock = NSLock()
    private var value = false
    public init() {}
    /// Whether a stop was asked for.
    public var isSet: Bool { lock.withLock { value } }
    /// Asks the loop to stop at the next batch boundary.
    public func set() { lock.withLock { value = true } }
}
