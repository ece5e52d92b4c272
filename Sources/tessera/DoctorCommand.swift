import ArgumentParser
import Foundation
import TesseraCore

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check this machine for Tessera: libraries, CPU, memory, data folder, models, job queue.",
        discussion: """
            Prints Tessera's and its libraries' versions (libvips, OpenSlide, OpenBLAS, SQLite, \
            libmicrohttpd, libpq), the CPU and the instruction sets the engine uses, cores and \
            memory, the data folder (writable, free space), every model in the models folder \
            and whether it loads, and whether the job queue can be reached. Exits 1 when any \
            check is a problem. The models folder is $TESSERA_MODELS (else the shipped one).
            """)

    @Option(help: "Data folder to check (default: $TESSERA_DATA, else ~/.local/share/tessera).")
    var data = DataDirectory.defaultPath

    @Option(help: "Job queue URL to check (default: $TESSERA_QUEUE, else SQLite in the data folder).")
    var queue: String?

    @Option(help: "Cores inference would use.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Print the report as JSON (for monitoring).")
    var json = false

    func run() throws {
        var options = DoctorOptions(dataDirectory: data)
        options.queue = queue ?? DataDirectory.defaultQueue
        options.threads = max(1, threads)
        let report = Doctor.examine(options)
        if json {
            FileHandle.standardOutput.write(report.json + Data("\n".utf8))
        } else {
            FileHandle.standardOutput.write(Data(report.text.utf8))
        }
        if !report.problems.isEmpty { throw ExitCode.failure }
    }
}
