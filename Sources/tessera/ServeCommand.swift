import ArgumentParser
import Dispatch
import Foundation
import Logging
import TesseraCore

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the HTTP upload API and the inference workers.")

    @Option(help: "Data folder: job database, stored slides, outputs.")
    var data = DataDirectory.defaultPath

    @Option(help: "Job queue URL, e.g. postgres://user@host:5432/tessera, shared by worker replicas (default: $TESSERA_QUEUE, else SQLite in the data folder).")
    var queue: String?

    @Option(help: "Address to listen on (default: $TESSERA_HOST, else 127.0.0.1).")
    var host = ProcessInfo.processInfo.environment["TESSERA_HOST"].flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"

    @Option(help: "Port to listen on, 0 picks a free one and prints it (default: $TESSERA_PORT, else 8080).")
    var port: UInt16 = ProcessInfo.processInfo.environment["TESSERA_PORT"].flatMap { UInt16($0) } ?? 8080

    @Option(help: "Inference workers (jobs run at once).")
    var workers = 1

    @Option(help: "Cores for inference, shared by the workers.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("max-upload"), help: "Largest accepted slide in bytes.")
    var maxUpload = 20 * 1024 * 1024 * 1024

    @Option(name: .customLong("max-slide-pixels"),
            help: "Most pixels (width x height) a slide's level may declare; larger slides are refused before decoding.")
    var maxSlidePixels = SlideLimits.defaultMaxPixels

    @Option(name: .customLong("http-threads"), help: "HTTP server threads.")
    var httpThreads = 4

    @Option(name: .customLong("trusted-proxy"), help: "Address of a reverse proxy whose X-Forwarded-For names the client (repeatable).")
    var trustedProxy: [String] = []

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @OptionGroup var budget: JobBudgetOptions

    func run() throws {
        bootstrapLogging(level: logLevel)
        var options = ServeOptions(dataDirectory: data)
        options.queue = queue ?? DataDirectory.defaultQueue
        options.host = host
        options.port = port
        options.httpThreads = max(1, httpThreads)
        options.trustedProxies = trustedProxy
        options.workers = max(0, workers)
        options.threads = max(1, threads)
        options.api.maxUploadBytes = maxUpload
        options.isolation = budget.isolation(logLevel: logLevel)
        options.api.slideLimits = SlideLimits(maxPixels: maxSlidePixels)
        // Bearer tokens: TESSERA_API_TOKENS (comma-separated) and the file TESSERA_API_TOKENS_FILE names;
        // SIGHUP reads them again.
        let tokenSource = APITokenSource()
        let logger = Logger(label: "tessera.serve")
        let server: Server
        let sources: [any DispatchSourceSignal]
        let done = DispatchSemaphore(value: 0)
        do {
            options.api.tokens = try tokenSource.load()
            server = try Server(options: options, logger: logger)
            // Before start(): the threads it starts inherit the blocked signals.
            sources = onTerminationSignal { done.signal() } + onSignals([SIGHUP]) { [api = server.api] in
                do {
                    let count = try api.tokens.reload(from: tokenSource)
                    logger.notice("SIGHUP: API tokens reloaded", metadata: ["tokens": "\(count)", "file": "\(tokenSource.file ?? "-")"])
                } catch {
                    logger.error("SIGHUP: API tokens not reloaded: \(error)")
                }
            }
            try server.start()
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        FileHandle.standardOutput.write(Data("tessera: listening on http://\(host):\(server.port)\n".utf8))
        done.wait()
        server.stop()
        sources.forEach { $0.cancel() }
    }
}
