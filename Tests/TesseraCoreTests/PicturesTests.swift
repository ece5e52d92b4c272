import Foundation
import Logging
import SlideIO
import Testing
@testable import TesseraCore

/// The outputs a pathologist reads and other tools open: pictures with legend and scale bar,
/// full-resolution class and probability maps, QuPath-complete GeoJSON, merged regions.
@Suite("Pictures and maps", .serialized)
struct PicturesTests {
    struct Run: Sendable {
        var directory: String
        var summary: JobSummary
        var slide: String
        var models: String
        var rows: [[Substring]]
    }

    /// One analysed slide shared by the tests of this suite.
    static let shared = Result { try analyse() }
    static func run() throws -> Run { try shared.get() }

    static func analyse(width: Int = 3000, height: Int = 2200, seed: UInt64 = 41) throws -> Run {
        let models = try Support.tinyModels()
        let root = Support.temporaryDirectory()
        let slide = try Support.syntheticSlide(width: width, height: height, tissue: 0.5, seed: seed)
        let options = PipelineTests().options(models: models, root: root)
        let report = try #require(try SlideRun.run(paths: [slide], options: options, logger: Logger(label: "tests")).first)
        let directory = try #require(report.outputDir)
        let summary = try JSONDecoder().decode(JobSummary.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/summary.json")))
        let rows = try String(contentsOfFile: directory + "/tiles.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .map { $0.split(separator: ",") }
        return Run(directory: directory, summary: summary, slide: slide, models: models, rows: rows)
    }

    @Test func picturesCarryLegendScaleAndTitle() throws {
        let run = try Self.run()
        let pictures = try ["heatmap.png", "overlay.png", "confidence.png"].map { try Picture.readRGB(path: run.directory + "/" + $0) }
        #expect(Set(pictures.map(\.width)).count == 1 && Set(pictures.map(\.height)).count == 1, "all three the same size")
        let mapWidth = pictures[0].width - SlidePictures.panelWidth
        // The map part has the slide's aspect (the thumbnail's size).
        let aspect = Double(run.summary.slideWidth) / Double(run.summary.slideHeight)
        let thumbnailHeight = Double(mapWidth) / aspect
        #expect(Double(pictures[0].height) >= thumbnailHeight - 2)
        let colours = try #require(run.summary.classColours)
        #expect(Set(colours.values).count == colours.count, "every class its own colour")
        for (index, picture) in pictures.enumerated() {
            var panel = Set<String>(), ink = 0, scaleBar = 0
            for y in 0..<picture.height {
                for x in mapWidth..<picture.width {
                    let p = picture.pixel(x, y)
                    panel.insert(ClassPalette.hex(p))
                    if p.0 < 80 && p.1 < 80 && p.2 < 80 { ink += 1 }
                    if y > picture.height - 24, p == SlidePictures.ink { scaleBar += 1 }
                }
            }
            #expect(ink > 400, "picture \(index): text drawn in the panel (\(ink) dark pixels)")
            #expect(scaleBar > 60, "picture \(index): a scale bar at the bottom of the panel")
            if index < 2 {
                for (name, hex) in colours where (run.summary.classFractions[name] ?? 0) >= 0 {
                    #expect(panel.contains(hex), "picture \(index): legend swatch of \(name) \(hex)")
                }
            }
        }
        // In the heatmap, the cell of the first tile has its class's colour.
        let first = run.rows[0]
        let step = try #require(run.summary.tileStep)
        let downsample = Double(run.summary.slideWidth) / Double(mapWidth)
        let x = Int((Double(first[1])! + step / 2) / downsample), y = Int((Double(first[2])! + step / 2) / downsample)
        #expect(ClassPalette.hex(pictures[0].pixel(x, y)) == colours[String(first[7])])
    }

    @Test func classAndProbabilityMapsReopenAligned() throws {
        let run = try Self.run()
        let step = try #require(run.summary.tileStep)
        let slideMPP = try #require(run.summary.slideMPP)
        let classes = try MapImage.read(path: run.directory + "/classmap.tif")
        #expect(classes.width == Int((Double(run.summary.slideWidth) / step).rounded(.up)))
        #expect(classes.height == Int((Double(run.summary.slideHeight) / step).rounded(.up)))
        #expect(abs((classes.mpp ?? 0) - slideMPP * step) < 1e-3 * slideMPP * step, "pixel size = slide MPP x step")
        #expect(classes.bands == 1)
        let probabilities = try MapImage.read(path: run.directory + "/probability.tif")
        #expect(probabilities.width == classes.width && probabilities.bands == run.summary.classes.count)
        var analysed = Set<Int>()
        for row in run.rows {
            let column = Int((Double(row[1])! / step).rounded()), line = Int((Double(row[2])! / step).rounded())
            let pixel = line * classes.width + column
            analysed.insert(pixel)
            #expect(Int(classes.pixels[pixel]) == run.summary.classes.firstIndex(of: String(row[7]))! + 1)
            for band in 0..<probabilities.bands {
                let expected = Double(row[8 + band])! * 255
                #expect(abs(Double(probabilities.pixels[pixel * probabilities.bands + band]) - expected) <= 0.51)
            }
        }
        #expect(classes.pixels.indices.filter { !analysed.contains($0) }.allSatisfy { classes.pixels[$0] == 0 }, "0 = not analysed")
        // The slide opener (OpenSlide / libvips) takes it as a pyramidal TIFF of the same size. (Its MPP,
        // one tile's width, is beyond what it accepts as a scanner's pixel size; MapImage.read checked it.)
        let reopened = try Slide.open(path: run.directory + "/classmap.tif")
        #expect(reopened.properties.width == classes.width && reopened.properties.height == classes.height)
    }

    @Test func geoJSONIsQuPathCompleteAndRegionsAddUp() throws {
        let run = try Self.run()
        let annotations = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run.directory + "/annotations.geojson"))) as? [String: Any]
        let tiles = try #require(annotations?["features"] as? [[String: Any]])
        #expect(tiles.count == run.summary.tilesTissue)
        for feature in tiles.prefix(50) {
            #expect(UUID(uuidString: feature["id"] as? String ?? "") != nil)
            let measurements = try #require((feature["properties"] as? [String: Any])?["measurements"] as? [String: Double])
            #expect(measurements["probability"] != nil && measurements["tissue_fraction"] != nil && measurements["p_A"] != nil)
        }
        #expect(Set(tiles.compactMap { $0["id"] as? String }).count == tiles.count, "ids unique")
        let regions = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run.directory + "/regions.geojson"))) as? [String: Any]
        let features = try #require(regions?["features"] as? [[String: Any]])
        let step = try #require(run.summary.tileStep), mpp = try #require(run.summary.slideMPP)
        let tileArea = Double(run.summary.tilesTissue) * pow(step * mpp / 1000, 2)
        var areaSum = 0.0, tileSum = 0, geometrySum = 0.0
        for feature in features {
            let properties = try #require(feature["properties"] as? [String: Any])
            let measurements = try #require(properties["measurements"] as? [String: Any])
            let area = try #require(measurements["area_mm2"] as? Double)
            let name = try #require(properties["name"] as? String)
            #expect(abs(area - (run.summary.classAreasMM2?[name] ?? -1)) < 1e-5, "\(name): summary and regions agree")
            areaSum += area
            tileSum += measurements["tiles"] as? Int ?? 0
            let geometry = try #require(feature["geometry"] as? [String: Any])
            #expect(geometry["type"] as? String == "MultiPolygon")
            let polygons = try #require(geometry["coordinates"] as? [[[[Double]]]])
            var pixels = 0.0
            for polygon in polygons {
                for (ring, points) in polygon.enumerated() {
                    var twice = 0.0
                    for i in 0..<(points.count - 1) { twice += points[i][0] * points[i + 1][1] - points[i + 1][0] * points[i][1] }
                    pixels += (ring == 0 ? 1 : -1) * abs(twice) / 2
                }
            }
            let geometryArea = pixels * pow(mpp / 1000, 2)
            #expect(abs(geometryArea - area) < 1e-6 + 1e-6 * area, "\(name): the outline encloses exactly its tiles")
            geometrySum += geometryArea
        }
        #expect(tileSum == run.summary.tilesTissue)
        #expect(abs(areaSum - tileArea) < 1e-6 && abs((run.summary.tissueAreaMM2 ?? 0) - tileArea) < 1e-6)
        let provenance = try #require(run.summary.provenance)
        #expect(provenance.tesseraVersion == Tessera.version && provenance.model == "tiny")
        #expect(provenance.slideSHA256 == (try SHA256.hexDigest(ofFile: run.slide)))
        #expect(provenance.modelSHA256 == (try SHA256.hexDigest(ofFile: run.models + "/tiny/model.onnx")))
        #expect(provenance.parameters.minTissue == 0.5)
    }

    @Test func outlinesKeepHolesAndSplitCornerNeighbours() {
        // A 3 x 3 ring with an empty centre, and one cell touching it only at a corner.
        var cells = [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2), (2, 2), (3, 3)].map { Regions.Point(x: $0.0, y: $0.1) }
        var polygons = Regions.outline(cells)
        #expect(polygons.count == 2)
        let ring = polygons.first { $0.count == 2 }
        #expect(ring.map { Regions.signedArea($0[0]) + Regions.signedArea($0[1]) } == 8, "9 - 1 hole")
        #expect(polygons.contains { $0.count == 1 && Regions.signedArea($0[0]) == 1 })
        cells.append(Regions.Point(x: 1, y: 1))
        polygons = Regions.outline(cells)
        #expect(polygons.map(\.count) == [1, 1], "the hole filled: two plain polygons")
        #expect(polygons.map { Regions.signedArea($0[0]) }.sorted() == [1, 9])
        #expect(polygons.contains { $0[0].count == 4 }, "straight corners dropped")
    }
}
