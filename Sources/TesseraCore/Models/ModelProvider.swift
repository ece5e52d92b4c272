import Engine
import Foundation

/// Loads models once and hands out their sessions. A session runs one batch at a time, so one
/// worker uses one session; sessions are cached per model file and thread count.
public final class ModelProvider: @unchecked Sendable {
    // @unchecked: `cache` is only touched under `lock`.
    private let lock = NSLock()
    private var cache: [String: (ModelReference, Session)] = [:]
    /// The models directory names resolve in.
    public let directory: String

    public init(directory: String = ModelCatalog.directory) {
        self.directory = directory
    }

    /// The model's reference and a session on `threads` cores.
    public func session(for name: String, threads: Int, precision: Precision = .fp32) throws -> (ModelReference, Session) {
        let reference = try ModelCatalog.resolve(name, in: directory)
        let key = "\(reference.path)#\(threads)#\(precision.rawValue)"
        if let cached = lock.withLock({ cache[key] }) { return cached }
        var options = EngineOptions()
        options.precision = precision
        let model = try ModelCardCheck.load(reference, options: options)
        let session = try Session(model: model, threads: threads)
        lock.withLock { cache[key] = (reference, session) }
        return (reference, session)
    }
}
