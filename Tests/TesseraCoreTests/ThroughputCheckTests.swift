import Foundation
import Logging
import Testing
@testable import TesseraCore

@Suite("Throughput check", .serialized)
struct ThroughputCheckTests {
    /// The pace check runs on a slide like the scanner's (40x, Aperio levels 1/4/16), measures every
    /// decode route on it, says which one the analysis used, and compares a reduced precision with fp32.
    @Test func paceCheckUsesAScannerLikeSlideAndNamesItsDecodeRoute() throws {
        var options = ThroughputOptions()
        options.modelsDirectory = try Support.tinyModels()
        options.model = "tiny-fine"
        options.slideArea = (1.5, 1)
        options.cacheDirectory = Support.temporaryDirectory()
        options.durationSeconds = 3
        options.threads = 2
        options.precision = "bf16"
        let report = try ThroughputCheck.run(options)
        #expect(report.slideWidth == 6000 && report.slideHeight == 4000, "1.5 x 1 mm at 0.25 um/px")
        #expect(report.slideDescription.contains("GT450-like") && report.slideDescription.contains("40x, 0.25 um/px"))
        #expect(report.decodeRoute == "reduced-jpeg")
        let routes = Dictionary(uniqueKeysWithValues: report.decodeRoutes.map { ($0.route, $0) })
        #expect(routes.count == 3)
        #expect(routes["stored-level"]?.unavailable?.contains("no stored level at 0.5 um/px") == true)
        #expect((routes["resize"]?.tilesPerSecond ?? 0) > 0 && routes["resize"]?.used == false)
        #expect((routes["reduced-jpeg"]?.tilesPerSecond ?? 0) > 0 && routes["reduced-jpeg"]?.used == true)
        #expect(report.precision == "bf16" && report.fp32EngineTilesPerSecond != nil && report.fp32EndToEndTilesPerSecond != nil)
        #expect(report.tissueTilesPerSlide > 100)
        let table = report.table
        #expect(table.contains("decode") && table.contains("(reduced-size JPEG decode)"))
        #expect(table.contains(", on the generated GT450-like slide"))
        // The same slide through the analysis: its summary names the route.
        let cache = try #require(options.cacheDirectory)
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: cache).first { $0.hasSuffix(".svs") })
        let slide = cache + "/" + name
        var run = RunOptions()
        run.model = "tiny-fine"
        run.modelsDirectory = options.modelsDirectory
        let root = Support.temporaryDirectory()
        run.outputDirectory = root + "/out"
        run.dataDirectory = root + "/data"
        run.threads = 2
        let reports = try SlideRun.run(paths: [slide], options: run, logger: Logger(label: "test"))
        let directory = try #require(reports.first?.outputDir)
        let summary = try JSONDecoder().decode(JobSummary.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/summary.json")))
        #expect(summary.decodeRoute == "reduced-jpeg" && summary.level == 0 && summary.mpp == 0.5)
    }

    /// A given slide without MPP is refused naming --slide-mpp, and measured once it is stated.
    @Test(.enabled(if: Support.sharedAvailable, "../shared/data is absent"))
    func givenSlideWithoutMPPTakesSlideMPP() throws {
        var options = ThroughputOptions()
        options.modelsDirectory = try Support.tinyModels()
        options.model = "tiny"
        options.slides = [Support.shared.appendingPathComponent("odd-inputs/boxes.tiff").path]
        options.durationSeconds = 3
        options.threads = 1
        do {
            _ = try ThroughputCheck.run(options)
            Issue.record("a slide without MPP was measured")
        } catch {
            #expect("\(error)".contains("--slide-mpp"))
        }
        options.slideMPP = 0.5
        let report = try ThroughputCheck.run(options)
        #expect(report.slideDescription.contains("boxes.tiff"))
        #expect(report.decodeRoutes.contains { $0.used })
    }

    @Test func unknownScannerIsRefusedNamingTheKnownOnes() throws {
        var options = ThroughputOptions()
        options.modelsDirectory = try Support.tinyModels()
        options.model = "tiny"
        options.scanner = "gt540"
        do {
            _ = try ThroughputCheck.run(options)
            Issue.record("an unknown scanner was accepted")
        } catch {
            #expect("\(error)".contains("unknown scanner 'gt540'") && "\(error)".contains("gt450"))
        }
    }
}
