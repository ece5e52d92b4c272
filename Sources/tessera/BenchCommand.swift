import ArgumentParser
import Foundation
import TesseraCore

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks.", subcommands: [TilesBench.self, RunBench.self])
}

struct TilesBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tiles",
        abstract: "Patch decode + normalise throughput on a generated pyramidal JPEG TIFF (table + JSON line).")

    @Option(help: "Side of the generated slide in pixels.")
    var size = 20_000

    @Option(help: "Use this slide instead of the generated one.")
    var slide: String?

    @Option(name: .customLong("tile-size"), help: "Patch side in pixels.")
    var tileSize = 224

    @Option(help: "Thread counts to measure, comma-separated.")
    var threads = "1,\(ProcessInfo.processInfo.activeProcessorCount)"

    @Option(name: .customLong("max-tiles"), help: "Stop each measurement after this many patches.")
    var maxTiles: Int?

    @Flag(help: "Print only the JSON line.")
    var json = false

    func run() throws {
        try reportingErrors {
            let path = slide ?? TileBenchmark.defaultSlidePath(size: size)
            let generated = slide == nil ? try TileBenchmark.ensureSlide(path: path, size: size) : 0
            var counts = threads.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            counts = counts.filter { $0 > 0 }.reduce(into: []) { if !$0.contains($1) { $0.append($1) } }
            guard !counts.isEmpty else { throw SlideError.invalidArgument("--threads needs at least one count") }
            let report = try TileBenchmark.run(slidePath: path, tileSize: tileSize, threadCounts: counts,
                                               generateSeconds: generated, maxTiles: maxTiles)
            if !json { print(report.table) }
            print(JSONOutput.line(report))
        }
    }
}

struct RunBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "End-to-end tissue tiles/s of `tessera run` on a generated slide (table + JSON line).")

    @Option(help: "Side of the generated slide in pixels.")
    var size = 30_000

    @Option(help: "Model name or .onnx path.")
    var model = ModelCatalog.defaultModel

    @Option(help: "Cores to use.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Print only the JSON line.")
    var json = false

    func run() throws {
        do {
            let report = try PipelineBenchmark.run(size: size, model: model, threads: threads)
            if !json { print(report.table) }
            print(JSONOutput.line(report))
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
    }
}
