import Foundation
import Logging

/// End-to-end throughput of `tessera run` on a generated slide (`tessera bench run`).
public enum PipelineBenchmark {
    /// The result.
    public struct Report: Codable, Sendable {
        public var benchmark = "run"
        public var slide: String
        public var width: Int
        public var model: String
        public var threads: Int
        public var tilesTissue: Int
        public var seconds: Double
        public var tilesPerSecond: Double
        public var engineOnlyTilesPerSecond: Double?
        /// The same slide through `SlideAnalysis` alone (no queue, no checkpoints, no output files).
        public var analysisTilesPerSecond: Double?
        public var targetTilesPerSecond: Double
        public var peakRSSBytes: Int

        enum CodingKeys: String, CodingKey {
            case benchmark, slide, width, model, threads, seconds
            case tilesTissue = "tiles_tissue", tilesPerSecond = "tiles_per_second"
            case engineOnlyTilesPerSecond = "engine_only_tiles_per_second", analysisTilesPerSecond = "analysis_tiles_per_second"
            case targetTilesPerSecond = "target_tiles_per_second", peakRSSBytes = "peak_rss_bytes"
        }

        /// A table for people.
        public var table: String {
            [
                "slide \(slide) (\(width) x \(width)), model \(model), \(threads) threads",
                "tissue tiles           \(tilesTissue)",
                String(format: "wall time              %.2f s", seconds),
                String(format: "end-to-end tiles/s     %.1f  (%.2fx the %.0f tiles/s goal: 2 GT450 scanners at 20x)",
                       tilesPerSecond, tilesPerSecond / targetTilesPerSecond, targetTilesPerSecond),
                analysisTilesPerSecond.map { String(format: "analysis only tiles/s %.1f  (no queue, checkpoints or output files)", $0) } ?? "",
                String(format: "peak RSS               %.1f MiB (getrusage ru_maxrss)", Double(peakRSSBytes) / 1_048_576),
            ].filter { !$0.isEmpty }.joined(separator: "\n")
        }
    }

    /// Two Aperio GT450s at 20x: 2 x 81 slides/h x ~7,200 tissue tiles / 3600 s.
    public static let targetTilesPerSecond = 324.0

    /// Generates (or reuses) the slide and runs it through a fresh job store.
    public static func run(size: Int, model: String, threads: Int, modelsDirectory: String = ModelCatalog.directory) throws -> Report {
        let path = TileBenchmark.defaultSlidePath(size: size)
        _ = try TileBenchmark.ensureSlide(path: path, size: size)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-bench-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var options = RunOptions()
        options.model = model
        options.modelsDirectory = modelsDirectory
        options.outputDirectory = scratch + "/out"
        options.dataDirectory = scratch + "/data"
        options.threads = threads
        var logger = Logger(label: "tessera.bench")
        logger.logLevel = .error
        let clock = Stopwatch()
        let reports = try SlideRun.run(paths: [path], options: options, logger: logger)
        let seconds = clock.seconds
        guard let report = reports.first, report.state == "done" else {
            throw ModelCatalogError(description: "benchmark run failed: \(reports.first?.error ?? "no report")")
        }
        let tiles = report.tilesTissue ?? 0
        // The same pipeline without the job queue around it: what the queue and the outputs cost.
        let (reference, session) = try ModelProvider(directory: modelsDirectory).session(for: model, threads: threads)
        let analysisClock = Stopwatch()
        let analysis = try SlideAnalysis(slidePath: path, parameters: AnalysisParameters(), card: reference.card, session: session,
                                         threads: threads).run()
        let analysisSeconds = analysisClock.seconds
        if let map = analysis.segmentation { try? FileManager.default.removeItem(atPath: map.rawPath) }
        var result = Report(slide: path, width: size, model: model, threads: threads, tilesTissue: tiles, seconds: seconds,
                            tilesPerSecond: Double(tiles) / seconds, engineOnlyTilesPerSecond: nil,
                            targetTilesPerSecond: targetTilesPerSecond, peakRSSBytes: ResourceUsage.peakResidentBytes)
        result.analysisTilesPerSecond = Double(analysis.scores.count) / max(analysisSeconds, 1e-9)
        return result
    }
}
