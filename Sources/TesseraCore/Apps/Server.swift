import Foundation
import HTTPServer
import JobStore
import Logging

/// Options of `tessera serve`.
public struct ServeOptions: Sendable {
    public var api: APIConfiguration
    public var http = HTTPServerConfiguration()
    /// Inference workers (each a job at a time); cores are shared between them.
    public var workers = 1
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    /// Job queue URL (`postgres://...`); nil keeps the SQLite queue in the data folder.
    public var queue: String?
    /// Analyse each slide in its own process under a budget (nil: in this process).
    public var isolation: JobIsolation?
    public init(dataDirectory: String) { api = APIConfiguration(dataDirectory: dataDirectory) }

    /// Address to listen on.
    public var host: String {
        get { http.host }
        set { http.host = newValue }
    }
    /// Port (0 = any free one).
    public var port: UInt16 {
        get { http.port }
        set { http.port = newValue }
    }
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    public var trustedProxies: [String] {
        get { http.trustedProxies }
        set { http.trustedProxies = newValue }
    }
    /// HTTP server threads.
    public var httpThreads: Int {
        get { http.threads }
        set { http.threads = newValue }
    }
}

/// `tessera serve`: the HTTP API and the inference workers in one process.
public final class Server: @unchecked Sendable {
    // @unchecked: mutable state is only touched in start()/stop() from the owning thread.
    public let api: APIService
    public let store: any JobQueue
    private let options: ServeOptions
    private let logger: Logger
    private let stopFlag = StopFlag()
    private var http: HTTPServer?
    private var workerThreads: [Thread] = []
    private let finished = DispatchGroup()

    public init(options: ServeOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        try DataDirectory.ensureWritable(options.api.dataDirectory)
        store = try DataDirectory.openStore(options.api.dataDirectory, queue: options.queue)
        api = try APIService(configuration: options.api, store: store, stopping: stopFlag)
    }

    /// The bound port (after `start`).
    public var port: UInt16 { http?.port ?? 0 }

    /// Starts the workers and the HTTP server.
    public func start() throws {
        let models = ModelProvider(directory: options.api.modelsDirectory)
        let perWorker = max(1, options.threads / max(1, options.workers))
        for index in 0..<max(0, options.workers) {
            let api = self.api
            var configuration = WorkerConfiguration(threads: perWorker, resultsDirectory: DataDirectory.outputs(options.api.dataDirectory))
            configuration.isolation = options.isolation?.bound(dataDirectory: options.api.dataDirectory, queue: options.queue,
                                                               modelsDirectory: options.api.modelsDirectory)
            configuration.slideLimits = options.api.slideLimits
            let runner = JobRunner(store: store, models: models, configuration: configuration, logger: logger, stop: stopFlag)
            var loop = WorkLoop(runner: runner)
            loop.progress = { job, done, _ in api.metrics.observe(job: job, tilesDone: done) }
            loop.finished = { job, outcome in api.metrics.finished(job: job, outcome: outcome) }
            finished.enter()
            let group = finished
            let logger = self.logger
            let work = loop
            let thread = Thread {
                defer { group.leave() }
                try? work.run(failed: { error in
                    logger.error("job queue", metadata: ["reason": "\(error)"])
                    Thread.sleep(forTimeInterval: 1)
                })
            }
            thread.name = "tessera-worker-\(index)"
            thread.start()
            workerThreads.append(thread)
        }
        http = try HTTPServer(configuration: options.http, handler: api)
        logger.info("listening", metadata: ["host": "\(options.http.host)", "port": "\(port)", "workers": "\(options.workers)"])
    }

    /// Stops accepting work (new requests get 503), stops the workers at their next batch (their
    /// jobs go back to the queue at the last checkpoint), then stops the HTTP server.
    public func stop() {
        stopFlag.set()
        finished.wait()
        http?.stop()
        http = nil
        logger.info("stopped")
    }
}
