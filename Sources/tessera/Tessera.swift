import ArgumentParser
import Dispatch
import Foundation
import Logging
import TesseraCore

@main
struct TesseraCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tessera",
        abstract: "Deep-learning inference on whole-slide pathology images.",
        version: Tessera.version,
        subcommands: [RunCommand.self, ServeCommand.self, WatchCommand.self, ThroughputCommand.self, InspectCommand.self, TilesCommand.self, ModelsCommand.self, BenchCommand.self,
                      SampleSlideCommand.self, DoctorCommand.self, AuditCommand.self, JobProcessCommand.self])

    static func main() {
        Tessera.keepFreedBlocks()
        main(nil)
    }
}

/// Runs a command body, turning Tessera errors into one `tessera: error: ...` line and exit code 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as SlideError {
        printError(error.description)
        throw ExitCode.failure
    }
}

/// Prints a line to standard error.
func printError(_ message: String) {
    var stream = StandardError()
    print("tessera: error: \(message)", to: &stream)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        FileHandle.standardError.write(Data(string.utf8))
    }
}

/// Sends swift-log output to standard error at `level` (trace ... critical; info when unknown).
func bootstrapLogging(level name: String) {
    let level = Logger.Level(rawValue: name) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}

/// Runs `handler` on SIGTERM or SIGINT instead of dying; keep the returned sources alive.
func onTerminationSignal(_ handler: @escaping @Sendable () -> Void) -> [any DispatchSourceSignal] {
    onSignals([SIGTERM, SIGINT], handler)
}

/// Runs `handler` on each of `numbers` instead of their default action; keep the returned sources alive.
///
/// The signals are blocked on the calling thread first, never ignored: a signal that is already
/// pending (a supervisor may stop us the moment we start, or a parent may have spawned us with
/// them blocked) then stays pending and reaches the sources, where `SIG_IGN` would discard it.
/// The sources run on their own serial queue so a busy worker pool cannot delay them.
func onSignals(_ numbers: [Int32], _ handler: @escaping @Sendable () -> Void) -> [any DispatchSourceSignal] {
    var signals = sigset_t()
    sigemptyset(&signals)
    for number in numbers { sigaddset(&signals, number) }
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    let queue = DispatchQueue(label: "tessera.signals")
    return numbers.map { number in
        let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
        source.setEventHandler(handler: handler)
        source.resume()
        return source
    }
}
