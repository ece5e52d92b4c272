import Engine
import Foundation
import Logging
import SlideIO
import Testing
@testable import TesseraCore

/// Segmentation models in the pipeline: the blending canvas, the EHO stain estimate, and a real
/// job with the third-party lavlab SHELL segmenter on a real slide.
@Suite("Segmentation", .serialized)
struct SegmentationTests {
    static let lavlab = Support.shared.appendingPathComponent("models/lavlab-shell-v1")
    static let cmu = Support.shared.appendingPathComponent("slides/CMU-1-Small-Region.svs").path
    static var lavlabAvailable: Bool { FileManager.default.fileExists(atPath: lavlab.appendingPathComponent("model_v1.onnx").path) }

    static func card(_ segmentation: String, classes: [String] = ["a", "b"]) throws -> ModelCard {
        let json = """
            {"name": "seg", "task": "segmentation", "classes": [\(classes.map { "\"\($0)\"" }.joined(separator: ", "))],
             "input": {"size": 16, "mpp": 1.0}, "segmentation": \(segmentation)}
            """
        return try JSONDecoder().decode(ModelCard.self, from: Data(json.utf8))
    }

    func readMap(_ map: SegmentationMap) throws -> [UInt8] {
        let data = try Data(contentsOf: URL(fileURLWithPath: map.rawPath))
        #expect(data.count == map.width * map.height)
        return [UInt8](data)
    }

    /// Tiles that agree on every pixel's class (it depends on the pixel's map column only) give
    /// exactly that class everywhere, wherever the tiles overlap, and every row is written once.
    @Test func canvasKeepsWhatOverlappingTilesAgreeOn() throws {
        let card = try Self.card("{}")
        let (width, height, tile) = (40, 30, 16)
        let canvas = try SegmentationCanvas(width: width, height: height, classes: 2, tile: tile,
                                            rule: SegmentationRule(card: card, classes: 2), directory: Support.temporaryDirectory())
        for y in [0, 12, 14] { for x in [0, 12, 24] {
            var outputs = [Float](repeating: 0, count: 2 * tile * tile)
            for ty in 0..<tile { for tx in 0..<tile {
                let positive: Float = x + tx < 20 ? 1 : -1
                outputs[ty * tile + tx] = positive
                outputs[tile * tile + ty * tile + tx] = -positive
            } }
            try outputs.withUnsafeBufferPointer { try canvas.add(x: x, y: y, outputs: $0.baseAddress!) }
        } }
        let map = try canvas.finish(mpp: 1, downsample: 2)
        let pixels = try readMap(map)
        for y in 0..<height { for x in 0..<width {
            #expect(pixels[y * width + x] == (x < 20 ? 1 : 2), "pixel (\(x), \(y))")
        } }
        #expect(map.classPixels == [20 * height, 20 * height])
        #expect(map.cell == 4 && map.cellsWide == 10 && map.cellsHigh == 8)
        #expect(map.cells[0] == 1 && map.cells[9] == 2)
        try FileManager.default.removeItem(atPath: map.rawPath)
    }

    /// Where two tiles disagree, the one whose centre is nearer wins (Gaussian weights); pixels
    /// no tile covers stay 0 (not analysed).
    @Test func canvasFavoursTheNearerTileCentre() throws {
        let card = try Self.card("{}")
        let tile = 16
        let canvas = try SegmentationCanvas(width: 40, height: 16, classes: 2, tile: tile,
                                            rule: SegmentationRule(card: card, classes: 2), directory: Support.temporaryDirectory())
        for (x, klass) in [(0, 0), (8, 1)] {
            var outputs = [Float](repeating: -1, count: 2 * tile * tile)
            for i in 0..<(tile * tile) { outputs[klass * tile * tile + i] = 1 }
            try outputs.withUnsafeBufferPointer { try canvas.add(x: x, y: 0, outputs: $0.baseAddress!) }
        }
        let map = try canvas.finish(mpp: nil, downsample: 1)
        // Row 8 (the tiles' middle row; at their top and bottom rows both weights sit at the floor).
        let row = Array(try readMap(map)[(8 * 40)..<(9 * 40)])
        // Tile centres at 7.5 and 15.5: the overlap 8..<16 splits at 11.5.
        #expect(Array(row[0..<12]) == [UInt8](repeating: 1, count: 12))
        #expect(Array(row[12..<24]) == [UInt8](repeating: 2, count: 12))
        #expect(Array(row[24..<40]) == [UInt8](repeating: 0, count: 16))
        try FileManager.default.removeItem(atPath: map.rawPath)
    }

    /// Sigmoid outputs with a threshold: a pixel whose best class is not likely enough falls to
    /// the background class; a bad activation or background name is a card error.
    @Test func sigmoidThresholdFallsToBackground() throws {
        let rule = try SegmentationRule(card: Self.card(#"{"activation": "sigmoid", "threshold": 0.5, "background": "bg"}"#,
                                                        classes: ["gland", "stroma", "bg"]), classes: 3)
        let weak: [Float] = [-0.2, -1, -3], strong: [Float] = [0.4, -1, -3], background: [Float] = [-2, -1, 0.5]
        #expect(weak.withUnsafeBufferPointer { rule.decide($0.baseAddress!, stride: 1, classes: 3, scale: 1) } == 2)
        #expect(strong.withUnsafeBufferPointer { rule.decide($0.baseAddress!, stride: 1, classes: 3, scale: 1) } == 0)
        #expect(background.withUnsafeBufferPointer { rule.decide($0.baseAddress!, stride: 1, classes: 3, scale: 1) } == 2)
        #expect(throws: ModelCatalogError.self) { try SegmentationRule(card: Self.card(#"{"activation": "relu"}"#), classes: 2) }
        #expect(throws: ModelCatalogError.self) { try SegmentationRule(card: Self.card(#"{"background": "nope"}"#), classes: 2) }
    }

    /// The Macenko estimate finds the two stains a synthetic H&E thumbnail was mixed from.
    @Test func stainEstimateRecoversTheMixedStains() throws {
        let h: [Double] = [0.65, 0.70, 0.29], e: [Double] = [0.07, 0.99, 0.11]
        func unit(_ v: [Double]) -> [Double] { let n = v.map { $0 * $0 }.reduce(0, +).squareRoot(); return v.map { $0 / n } }
        let (uh, ue) = (unit(h), unit(e))
        let (width, height) = (64, 64)
        var rgb = [UInt8](repeating: 240, count: width * height * 3)
        var state: UInt64 = 42
        func uniform(_ range: ClosedRange<Double>) -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return range.lowerBound + Double(state >> 11) / Double(1 << 53) * (range.upperBound - range.lowerBound)
        }
        for i in 0..<(width * height) where i % width >= 16 {
            // A fifth of the pixels hold only hematoxylin, a fifth only eosin, the rest both.
            var ch = uniform(0.1...1.2), ce = uniform(0.1...1.2)
            if i % 5 == 0 { ce = 0 } else if i % 5 == 1 { ch = 0 }
            for c in 0..<3 {
                let od = ch * uh[c] + ce * ue[c]
                rgb[3 * i + c] = UInt8(max(1, min(255, (240 * pow(10, -od)).rounded())))
            }
        }
        let mask = TissueMask(thumbnail: rgb, width: width, height: height, downsampleX: 1, downsampleY: 1)
        let stain = try StainTransform.estimate(from: mask)
        // Background 240 (the mask may count a few faint tissue pixels as background).
        #expect(abs(stain.io - 240) < 2)
        // The inverse's rows pick each stain out: eosin's row is ~0 on hematoxylin and vice versa.
        func dot(_ a: [Float], _ b: [Double]) -> Double { zip(a, b).map { Double($0) * $1 }.reduce(0, +) }
        #expect(abs(dot(stain.eosin, uh)) < 0.08 * abs(dot(stain.eosin, ue)), "\(stain.eosin)")
        #expect(abs(dot(stain.hematoxylin, ue)) < 0.08 * abs(dot(stain.hematoxylin, uh)), "\(stain.hematoxylin)")
        #expect(dot(stain.eosin, ue) > 0 && dot(stain.hematoxylin, uh) > 0)
        let (values, vectors) = StainTransform.symmetricEigen([[4, 1, 0], [1, 3, 1], [0, 1, 2]])
        for j in 0..<3 {
            let m = [[4.0, 1, 0], [1, 3, 1], [0, 1, 2]], v = vectors[j]
            for r in 0..<3 { #expect(abs((0..<3).map { m[r][$0] * v[$0] }.reduce(0, +) - values[j] * v[r]) < 1e-9) }
        }
    }

    /// A lab's model folder for the lavlab SHELL segmenter, as its users would write it: the
    /// ONNX file and its external weights beside a Tessera card.
    static func lavlabModels() throws -> String {
        let models = Support.temporaryDirectory() + "/models"
        let folder = models + "/lavlab-shell-v1"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for name in ["model_v1.onnx", "model_v1.onnx.data"] {
            try FileManager.default.createSymbolicLink(atPath: folder + "/" + name,
                                                       withDestinationPath: lavlab.appendingPathComponent(name).path)
        }
        try FileManager.default.copyItem(atPath: Support.root.appendingPathComponent("docs/examples/lavlab-shell-v1/model.json").path,
                                         toPath: folder + "/model.json")
        return models
    }

    /// The engine gives ONNX Runtime's class mask on a real 512 x 512 tile of a real slide, read
    /// through Tessera's own slide reader.
    @Test(.enabled(if: SegmentationTests.lavlabAvailable, "../shared/data is absent"))
    func lavlabMaskMatchesONNXRuntimeOnARealTile() async throws {
        let expected = try [UInt8](Data(contentsOf: Support.root.appendingPathComponent("Tests/EngineTests/Fixtures/ops/lavlab_mask512.u8")))
        #expect(expected.count == 512 * 512)
        let slide = try Slide.open(path: Self.cmu)
        let plan = try slide.plan(targetMPP: slide.properties.mppX)
        #expect(plan.level == 0 && !plan.isResampled)
        let grid = try TileGrid(plan: plan, tileSize: 512, mask: nil, minimumTissue: 0)
        let index = try #require(grid.tiles.firstIndex { $0.x == 1024 && $0.y == 1024 })
        let reader = try PatchReader(slide: slide, grid: grid, threads: 1)
        reader.seek(toTile: index)
        let batch = PatchBatch(capacity: 1, tileSize: 512, format: .floatNCHW(.unit))
        #expect(try reader.next(into: batch))
        let model = try Model(contentsOf: Self.lavlab.appendingPathComponent("model_v1.onnx").path, inputShape: [3, 512, 512])
        let output = try await Session(model: model, threads: 2).run(Tensor(shape: [1, 3, 512, 512], data: batch.floats)).outputs[0]
        #expect(output.shape == [1, 3, 512, 512])
        var same = 0
        let plane = 512 * 512
        for i in 0..<plane {
            let v = (output.data[i], output.data[plane + i], output.data[2 * plane + i])
            let klass: UInt8 = v.0 >= v.1 && v.0 >= v.2 ? 0 : v.1 >= v.2 ? 1 : 2
            if klass == expected[i] { same += 1 }
        }
        #expect(Double(same) / Double(plane) >= 0.9999, "\(plane - same) of \(plane) pixels differ from ONNX Runtime")
    }

    /// A segmentation job on a real slide: a per-pixel class map at the model's resolution that
    /// reopens aligned to the slide, region outlines, areas from the map's pixels, the stain
    /// estimate in summary.json; a second run finds the finished job.
    @Test(.enabled(if: SegmentationTests.lavlabAvailable, "../shared/data is absent"))
    func lavlabJobWritesClassMapRegionsAndAreas() throws {
        var options = RunOptions()
        options.model = "lavlab-shell-v1"
        options.modelsDirectory = try Self.lavlabModels()
        let root = Support.temporaryDirectory()
        options.outputDirectory = root + "/out"
        options.dataDirectory = root + "/data"
        options.threads = 2
        let reports = try SlideRun.run(paths: [Self.cmu], options: options, logger: Logger(label: "tests"))
        let report = try #require(reports.first)
        #expect(report.state == "done", "\(report.error ?? "")")
        let directory = try #require(report.outputDir)
        let summary = try JSONDecoder().decode(JobSummary.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/summary.json")))
        #expect(summary.task == "segmentation")
        let segmentation = try #require(summary.segmentation)
        #expect(summary.colourTransform != nil, "the card asks for EHO input")
        // The map: one pixel per 1 um (the card's MPP), level 0 of the slide every ~2 px.
        let map = try MapImage.read(path: directory + "/classmap.tif")
        #expect(map.width == segmentation.mapWidth && map.height == segmentation.mapHeight && map.bands == 1)
        #expect(abs(Double(map.width) * segmentation.levelZeroScale - Double(summary.slideWidth)) <= segmentation.levelZeroScale)
        #expect(abs(Double(map.height) * segmentation.levelZeroScale - Double(summary.slideHeight)) <= segmentation.levelZeroScale)
        #expect(abs((map.mpp ?? 0) - 1.0) < 0.01 && map.pages > 1)
        var histogram = [Int](repeating: 0, count: 256)
        for value in map.pixels { histogram[Int(value)] += 1 }
        #expect(histogram[4...].allSatisfy { $0 == 0 }, "values are class + 1 of 3 classes, or 0")
        // Tiles reach the slide's edges: at most the thin strips beside tissue-free tiles are not analysed.
        #expect(Double(histogram[0]) < 0.5 * Double(map.pixels.count))
        for (index, name) in ["lumen", "epithelium", "background"].enumerated() {
            #expect(segmentation.classPixels[name] == histogram[index + 1], "\(name)")
            let area = try #require(summary.classAreasMM2?[name])
            // A map pixel is mapMPP um square (0.998: the CMU slide's 0.499 um/px shrunk by exactly 2).
            let side = try #require(segmentation.mapMPP)
            #expect(abs(area - Double(histogram[index + 1]) * side * side * 1e-6) < 1e-9)
        }
        #expect(abs(segmentation.classShares.values.reduce(0, +) - 1) < 1e-9)
        let regions = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/regions.geojson")))
        let features = try #require((regions as? [String: Any])?["features"] as? [[String: Any]])
        #expect(!features.isEmpty)
        for feature in features {
            let properties = try #require(feature["properties"] as? [String: Any])
            let name = try #require(properties["name"] as? String)
            let measurements = try #require(properties["measurements"] as? [String: Any])
            #expect(measurements["pixels"] as? Int == segmentation.classPixels[name])
            let geometry = try #require(feature["geometry"] as? [String: Any])
            #expect(geometry["type"] as? String == "MultiPolygon")
        }
        let csv = try String(contentsOfFile: directory + "/tiles.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == summary.tilesTissue + 1 && summary.tilesTissue > 0)
        #expect(segmentation.overlap == 128 && segmentation.tileSize == 512)
        // No class map file is left behind in the temporary folder.
        let temporary = try FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path)
        #expect(!temporary.contains { $0.hasPrefix("classmap-") && $0.hasSuffix(".raw") })
        let again = try SlideRun.run(paths: [Self.cmu], options: options, logger: Logger(label: "tests"))
        #expect(again.first?.job == report.job && again.first?.outputDir == directory)
    }
}
