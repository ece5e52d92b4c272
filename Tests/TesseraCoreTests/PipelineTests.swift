import Foundation
import Logging
import Testing
@testable import TesseraCore

@Suite("End-to-end pipeline", .serialized)
struct PipelineTests {
    static let logger = Logger(label: "tests")

    func options(models: String, root: String) -> RunOptions {
        var options = RunOptions()
        options.model = "tiny"
        options.modelsDirectory = models
        options.outputDirectory = root + "/out"
        options.dataDirectory = root + "/data"
        options.threads = 2
        return options
    }

    @Test func runWritesConsistentOutputs() throws {
        let models = try Support.tinyModels()
        let root = Support.temporaryDirectory()
        let slide = try Support.syntheticSlide()
        let reports = try SlideRun.run(paths: [slide], options: options(models: models, root: root), logger: Self.logger)
        let report = try #require(reports.first)
        #expect(report.state == "done")
        let directory = try #require(report.outputDir)
        let summary = try JSONDecoder().decode(JobSummary.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/summary.json")))
        #expect(summary.tilesTissue > 100 && summary.tilesTissue < summary.tilesTotal)
        #expect(summary.tileSize == 32 && summary.mpp == 2.0 && summary.level == 2, "0.5 um/px slide, 2 um/px model: level 2")
        #expect(summary.decodeRoute == "stored-level", "level 2 is at 2 um/px: read as is")
        #expect(abs(summary.classFractions.values.reduce(0, +) - 1) < 1e-9)
        #expect(summary.validated == .no, "the tiny card states no validation")
        let guardrails = try #require(summary.guardrails)
        #expect(guardrails.tiles == summary.tilesTissue && guardrails.tilesFlagged <= guardrails.tiles)
        let csv = try String(contentsOfFile: directory + "/tiles.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == summary.tilesTissue + 1)
        #expect(csv[0].hasSuffix(",flags"))
        let row = csv[1].split(separator: ",")
        let probabilities = row[8...].compactMap { Double($0) }
        #expect(probabilities.count == 3 && abs(probabilities.reduce(0, +) - 1) < 1e-4)
        let geojson = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/annotations.geojson")))
        let features = try #require((geojson as? [String: Any])?["features"] as? [[String: Any]])
        #expect(features.count == summary.tilesTissue)
        let properties = try #require(features.first?["properties"] as? [String: Any])
        #expect(["A", "B", "C"].contains(properties["class"] as? String ?? ""))
        for name in ["heatmap.png", "overlay.png"] {
            let png = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))
            #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "\(name) is a PNG")
        }
        // Running the same slide again finds the finished job: no duplicate work, same folder.
        let again = try SlideRun.run(paths: [slide], options: options(models: models, root: root), logger: Self.logger)
        #expect(again.first?.job == report.job && again.first?.outputDir == directory)
        let store = try DataDirectory.openStore(root + "/data")
        #expect(try store.counts()[.done] == 1)
    }

    /// Checkpointed tiles of a grid with another tile count (an earlier version planned the slide
    /// differently) are not resumed into this grid: the analysis starts again.
    @Test func checkpointsOfAnotherGridAreNotResumed() throws {
        let models = try Support.tinyModels()
        let (reference, session) = try ModelProvider(directory: models).session(for: "tiny", threads: 1)
        let analysis = SlideAnalysis(slidePath: try Support.syntheticSlide(), parameters: AnalysisParameters(),
                                     card: reference.card, session: session, threads: 1)
        let fresh = try analysis.run()
        let total = fresh.grid.tiles.count
        #expect(total > 64)
        // Scores no model gives: if they were resumed, they would show.
        let planted = (0..<64).map { TileResult(index: $0, scores: [1, 0, 0]) }
        let resumed = try analysis.run(resume: planted, resumeTiles: total)
        #expect(resumed.scores.prefix(64).allSatisfy { $0 == [1, 0, 0] }, "the same grid resumes")
        let restarted = try analysis.run(resume: planted, resumeTiles: total + 7)
        #expect(restarted.scores.count == total)
        #expect(restarted.scores.prefix(64) == fresh.scores.prefix(64), "another grid's tiles are scored again")
    }

    @Test func poisonSlideFailsAndOthersGoOn() throws {
        let models = try Support.tinyModels()
        let root = Support.temporaryDirectory()
        let bad = root + "/broken.svs"
        try Data("this is not a slide".utf8).write(to: URL(fileURLWithPath: bad))
        let blank = try Support.syntheticSlide(width: 1500, height: 1000, tissue: 0)
        let good = try Support.syntheticSlide(width: 1500, height: 1000, tissue: 0.5, seed: 2)
        let reports = try SlideRun.run(paths: [bad, blank, "/nonexistent.svs", good], options: options(models: models, root: root),
                                       logger: Self.logger)
        #expect(reports.map(\.state) == ["failed", "done", "failed", "done"])
        #expect(reports[0].error?.contains("not a slide Tessera can read") == true)
        #expect(reports[1].tilesTissue == 0, "zero tissue: done with no tiles")
        #expect(reports[3].tilesTissue ?? 0 > 0)
        let blankGeo = try String(contentsOfFile: reports[1].outputDir! + "/annotations.geojson", encoding: .utf8)
        #expect(blankGeo.hasPrefix("{\"type\":\"FeatureCollection\",\"features\":[]}"))
    }

    @Test func embeddingsAreWrittenWhenAsked() throws {
        let models = try Support.tinyModels()
        let root = Support.temporaryDirectory()
        var options = options(models: models, root: root)
        options.parameters.embeddings = true
        let slide = try Support.syntheticSlide(width: 1500, height: 1000, tissue: 0.5, seed: 3)
        let report = try #require(try SlideRun.run(paths: [slide], options: options, logger: Self.logger).first)
        let directory = try #require(report.outputDir)
        let index = try String(contentsOfFile: directory + "/embeddings.csv", encoding: .utf8).split(separator: "\n")
        #expect(index.count == (report.tilesTissue ?? 0) + 1)
        let dims = Int(index[1].split(separator: ",").last!)!
        let size = try FileManager.default.attributesOfItem(atPath: directory + "/embeddings.f32")[.size] as! Int
        #expect(dims > 0 && size == dims * 4 * (report.tilesTissue ?? 0))
    }
}
