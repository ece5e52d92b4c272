import Foundation
import SlideIO

/// Everything the output files are made from.
struct OutputInputs {
    var jobID: Int
    var slideName: String
    var modelName: String
    var classes: [String]
    var grid: TileGrid
    var mask: TissueMask
    var scores: [[Float]]
    var embeddings: [[Float]]?
    var timings: [String: Double]
    var slideWidth: Int
    var slideHeight: Int
    /// Provenance and geometry for the pictures, maps and regions (see Provenance.swift).
    var slideSHA256 = ""
    var slideMPP: Double?
    var cardJSON: Data?
    var modelPath: String?
    var parameters = AnalysisParameters()
    /// What the model was validated on (nil: not validated).
    var validated: String? = nil
    /// Where the slide's MPP came from: its metadata, or `override` (the fallback stated for slides without one).
    var mppSource: String? = nil
    /// A segmentation model's class map (its raw file is removed once the outputs are written).
    var segmentation: SegmentationMap? = nil
    /// The stain estimate an EHO model's input was made with.
    var colourTransform: StainTransform? = nil
    /// How stored pixels became patches (nil when every tile came from a checkpoint).
    var decodeRoute: String? = nil
}

/// summary.json's `segmentation` block: the per-pixel class map of a segmentation model.
public struct SegmentationSummary: Codable, Sendable {
    /// The map's file in the output folder.
    public var map: String
    public var mapWidth: Int
    public var mapHeight: Int
    /// Microns per map pixel (nil when the slide has none).
    public var mapMPP: Double?
    /// Level-0 pixels per map pixel.
    public var levelZeroScale: Double
    /// Map pixels per class, and each class's share of the analysed pixels.
    public var classPixels: [String: Int]
    public var classShares: [String: Double]
    /// regions.geojson outlines blocks of this many map pixels square.
    public var regionCellPixels: Int
    /// Tile side, overlap (map pixels) and the rule that made classes of the blended outputs.
    public var tileSize: Int
    public var overlap: Int
    public var activation: String
    public var threshold: Double?
    public var background: String?

    enum CodingKeys: String, CodingKey {
        case map, activation, threshold, background, overlap
        case mapWidth = "map_width", mapHeight = "map_height", mapMPP = "map_mpp", levelZeroScale = "level0_per_map_pixel"
        case classPixels = "class_pixels", classShares = "class_shares", regionCellPixels = "region_cell_pixels"
        case tileSize = "tile_size"
    }

    /// Fills the block and replaces the tile-based fractions and areas with the map's pixels.
    static func add(_ map: SegmentationMap, _ inputs: OutputInputs, to summary: inout JobSummary) {
        let names = JobOutputs.classNames(inputs)
        let analysed = max(1, map.classPixels.reduce(0, +))
        var pixels: [String: Int] = [:], shares: [String: Double] = [:]
        for (index, name) in names.enumerated() {
            let count = index < map.classPixels.count ? map.classPixels[index] : 0
            pixels[name] = count
            shares[name] = Double(count) / Double(analysed)
        }
        summary.task = "segmentation"
        summary.classFractions = shares
        if let mpp = map.mpp {
            let area = pow(mpp / 1000, 2)
            summary.classAreasMM2 = pixels.mapValues { Double($0) * area }
            summary.tissueAreaMM2 = Double(map.classPixels.reduce(0, +)) * area
        }
        summary.segmentation = SegmentationSummary(
            map: "classmap.tif", mapWidth: map.width, mapHeight: map.height, mapMPP: map.mpp, levelZeroScale: map.downsample,
            classPixels: pixels, classShares: shares, regionCellPixels: map.cell, tileSize: inputs.grid.tileSize,
            overlap: inputs.grid.overlap, activation: map.rule.activation, threshold: map.rule.stated,
            background: map.rule.background.map { names[$0] })
    }
}

/// Per-job summary written to summary.json (and served by the API).
public struct JobSummary: Codable, Sendable {
    public var job: Int
    public var slide: String
    public var model: String
    public var classes: [String]
    public var slideWidth: Int
    public var slideHeight: Int
    public var level: Int
    public var mpp: Double?
    public var tileSize: Int
    public var gridColumns: Int
    public var gridRows: Int
    public var tilesTotal: Int
    public var tilesTissue: Int
    public var classFractions: [String: Double]
    public var meanProbabilities: [String: Double]
    public var timings: [String: Double]
    public var tilesPerSecond: Double
    /// What the model was validated on, or false.
    public var validated: ModelCard.Validation?
    /// Tiles outside the model's training distribution or of low confidence.
    public var guardrails: Guardrails?
    /// Slide-level facts, areas and provenance (nil in summaries written before they existed).
    public var slideMPP: Double?
    public var tileStep: Double?
    public var classColours: [String: String]?
    public var classAreasMM2: [String: Double]?
    public var tissueAreaMM2: Double?
    public var provenance: Provenance?
    /// Where the slide's microns per pixel came from (`openslide`, `tiff-resolution`, ..., or
    /// `override`: the `--slide-mpp` / `slide_mpp` fallback for a slide that records none).
    public var slideMPPSource: String?
    /// Engine precision the tiles were scored in: `fp32` or `int8` (nil in older summaries).
    public var precision: String?
    /// `classification` or `segmentation` (nil in older summaries: classification).
    public var task: String?
    /// A segmentation model's class map: where it is, its geometry and per-class pixels.
    public var segmentation: SegmentationSummary?
    /// The per-slide stain estimate of a model with `input.colour_transform: eho`.
    public var colourTransform: StainTransform?
    /// When `--precision auto` / `precision=auto` was asked for: what it chose and why.
    public var precisionAuto: String?
    /// How the stored pixels became patches at `mpp`: `stored-level` (a level read as is), `resize`
    /// (a finer level decoded and shrunk by libvips) or `reduced-jpeg` (its JPEG tiles decoded at
    /// 1/2, 1/4 or 1/8 size); nil in older summaries and when no tile was read (none had tissue, or
    /// all came from a checkpoint).
    public var decodeRoute: String?

    enum CodingKeys: String, CodingKey {
        case job, slide, model, classes, level, mpp, timings, provenance, validated, guardrails, precision, task, segmentation
        case precisionAuto = "precision_auto", colourTransform = "colour_transform", decodeRoute = "decode_route"
        case slideMPP = "slide_mpp", tileStep = "tile_step", classColours = "class_colours"
        case classAreasMM2 = "class_areas_mm2", tissueAreaMM2 = "tissue_area_mm2"
        case slideWidth = "slide_width", slideHeight = "slide_height", tileSize = "tile_size"
        case gridColumns = "grid_columns", gridRows = "grid_rows", tilesTotal = "tiles_total", tilesTissue = "tiles_tissue"
        case classFractions = "class_fractions", meanProbabilities = "mean_probabilities", tilesPerSecond = "tiles_per_second"
        case slideMPPSource = "slide_mpp_source"
    }
}

/// Writes a job's output folder: summary.json, tiles.csv, annotations.geojson, heatmap.png,
/// overlay.png and optionally embeddings.f32 + embeddings.csv. Files are written into a temporary
/// folder next to the destination and renamed into place, so readers never see partial results.
enum JobOutputs {
    static func write(_ inputs: OutputInputs, to destination: String) throws -> JobSummary {
        let fm = FileManager.default
        let parent = (destination as NSString).deletingLastPathComponent
        try fm.createDirectory(atPath: parent, withIntermediateDirectories: true)
        let base = ".\((destination as NSString).lastPathComponent).partial-"
        // Folders left by a writer that was killed mid-way.
        for stale in (try? fm.contentsOfDirectory(atPath: parent))?.filter({ $0.hasPrefix(base) }) ?? [] {
            try? fm.removeItem(atPath: "\(parent)/\(stale)")
        }
        let staging = "\(parent)/\(base)\(UUID().uuidString.prefix(8))"
        try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        do {
            let (flags, guardrails) = Guardrails.assess(mask: inputs.mask, grid: inputs.grid, scores: inputs.scores)
            var summary = makeSummary(inputs)
            summary.guardrails = guardrails
            try addSlideFacts(inputs, to: &summary)
            if let map = inputs.segmentation { SegmentationSummary.add(map, inputs, to: &summary) }
            summary.colourTransform = inputs.colourTransform
            try writeJSON(summary, to: "\(staging)/summary.json")
            try writeCSV(inputs, flags: flags, to: "\(staging)/tiles.csv")
            try writeGeoJSON(inputs, to: "\(staging)/annotations.geojson")
            try Regions.write(inputs, to: "\(staging)/regions.geojson")
            try SlidePictures.write(inputs, summary: summary, directory: staging)
            if let map = inputs.segmentation {
                try MapImage.writeTIFF(rawFile: map.rawPath, width: map.width, height: map.height, bands: 1, mpp: map.mpp,
                                       to: "\(staging)/classmap.tif", nearest: true)
                try segmentationPicture(map, inputs).writePNG(to: "\(staging)/segmentation.png")
            } else {
                try ClassMapTIFF.write(inputs, directory: staging)
            }
            if let embeddings = inputs.embeddings { try writeEmbeddings(embeddings, inputs, directory: staging) }
            if fm.fileExists(atPath: destination) {
                let old = "\(staging).old"
                try fm.moveItem(atPath: destination, toPath: old)
                try fm.moveItem(atPath: staging, toPath: destination)
                try? fm.removeItem(atPath: old)
            } else {
                try fm.moveItem(atPath: staging, toPath: destination)
            }
            return summary
        } catch {
            try? fm.removeItem(atPath: staging)
            throw error
        }
    }

    /// segmentation.png: the map's blocks in the class colours, transparent where not analysed.
    static func segmentationPicture(_ map: SegmentationMap, _ inputs: OutputInputs) -> MapImage {
        let colours = self.colours(inputs)
        var picture = MapImage(width: map.cellsWide, height: map.cellsHigh, bands: 4, mpp: nil)
        for (index, value) in map.cells.enumerated() where value > 0 {
            let colour = colours[min(colours.count - 1, Int(value) - 1)]
            (picture.pixels[4 * index], picture.pixels[4 * index + 1], picture.pixels[4 * index + 2]) = colour
            picture.pixels[4 * index + 3] = 255
        }
        return picture
    }

    static func argmax(_ scores: [Float]) -> Int {
        var best = 0
        for index in scores.indices where scores[index] > scores[best] { best = index }
        return best
    }

    static func className(_ inputs: OutputInputs, _ index: Int) -> String {
        index < inputs.classes.count ? inputs.classes[index] : "class_\(index)"
    }

    /// Names of every output class (the card's, then `class_N` for any the card leaves out).
    static func classNames(_ inputs: OutputInputs) -> [String] {
        (0..<max(inputs.classes.count, inputs.scores.first?.count ?? 0)).map { className(inputs, $0) }
    }

    /// One colour per output class.
    static func colours(_ inputs: OutputInputs) -> [ClassPalette.RGB] {
        ClassPalette.colours(for: classNames(inputs), cardJSON: inputs.cardJSON)
    }

    static func makeSummary(_ inputs: OutputInputs) -> JobSummary {
        let classCount = inputs.scores.first?.count ?? inputs.classes.count
        var counts = [Int](repeating: 0, count: classCount)
        var sums = [Double](repeating: 0, count: classCount)
        for scores in inputs.scores {
            counts[argmax(scores)] += 1
            for index in scores.indices where index < classCount { sums[index] += Double(scores[index]) }
        }
        let n = Double(max(1, inputs.scores.count))
        var fractions: [String: Double] = [:], means: [String: Double] = [:]
        for index in 0..<classCount {
            fractions[className(inputs, index)] = inputs.scores.isEmpty ? 0 : Double(counts[index]) / n
            means[className(inputs, index)] = inputs.scores.isEmpty ? 0 : sums[index] / n
        }
        let inference = inputs.timings["tiles_seconds"] ?? 0
        return JobSummary(
            job: inputs.jobID, slide: inputs.slideName, model: inputs.modelName, classes: inputs.classes,
            slideWidth: inputs.slideWidth, slideHeight: inputs.slideHeight, level: inputs.grid.plan.level,
            mpp: inputs.grid.plan.mpp, tileSize: inputs.grid.tileSize, gridColumns: inputs.grid.columns,
            gridRows: inputs.grid.rows, tilesTotal: inputs.grid.totalCount, tilesTissue: inputs.grid.tiles.count,
            classFractions: fractions, meanProbabilities: means, timings: inputs.timings,
            tilesPerSecond: inference > 0 ? Double(inputs.scores.count) / inference : 0,
            validated: inputs.validated.map(ModelCard.Validation.yes) ?? ModelCard.Validation.no, slideMPPSource: inputs.mppSource,
            precision: inputs.parameters.precision ?? "fp32", precisionAuto: inputs.parameters.precisionAuto,
            decodeRoute: inputs.decodeRoute)
    }

    static func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try encoder.encode(value).write(to: URL(fileURLWithPath: path))
    }

    /// tiles.csv; the last column, `flags`, lists a tile's guardrail flags (`;`-separated, empty when none).
    static func writeCSV(_ inputs: OutputInputs, flags: [[Guardrails.Flag]], to path: String) throws {
        let classCount = inputs.scores.first?.count ?? inputs.classes.count
        var text = "tile,x,y,level,width,height,tissue_fraction,class,"
            + (0..<classCount).map { "p_" + className(inputs, $0) }.joined(separator: ",") + ",flags\n"
        for (index, tile) in inputs.grid.tiles.enumerated() where index < inputs.scores.count {
            let rect = inputs.grid.levelZeroRect(of: tile)
            let scores = inputs.scores[index]
            text += "\(index),\(Int(rect.x.rounded())),\(Int(rect.y.rounded())),\(inputs.grid.plan.level),"
                + "\(Int(rect.width.rounded())),\(Int(rect.height.rounded())),"
                + String(format: "%.4f", tile.tissueFraction) + "," + className(inputs, argmax(scores)) + ","
                + scores.map { String(format: "%.6f", $0) }.joined(separator: ",") + ","
                + (index < flags.count ? flags[index].map(\.rawValue).joined(separator: ";") : "") + "\n"
        }
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// GeoJSON in level-0 pixel coordinates, one Feature per tissue tile, in QuPath's
    /// conventions (objectType, classification with name and colour, measurements).
    static func writeGeoJSON(_ inputs: OutputInputs, to path: String) throws {
        let colours = self.colours(inputs)
        var text = "{\"type\":\"FeatureCollection\",\"features\":["
        for (index, tile) in inputs.grid.tiles.enumerated() where index < inputs.scores.count {
            let rect = inputs.grid.levelZeroRect(of: tile)
            let x0 = rect.x.rounded(), y0 = rect.y.rounded()
            let x1 = (rect.x + rect.width).rounded(), y1 = (rect.y + rect.height).rounded()
            let scores = inputs.scores[index]
            let best = argmax(scores)
            let name = className(inputs, best)
            let colour = colours[best]
            let probability = String(format: "%.6f", scores[best]), tissue = String(format: "%.4f", tile.tissueFraction)
            // QuPath keeps only `measurements` of the free properties: probability and tissue go there too.
            let measurements = "\"probability\":\(probability),\"tissue_fraction\":\(tissue),"
                + scores.indices.map { "\"p_\(className(inputs, $0))\":" + String(format: "%.6f", scores[$0]) }.joined(separator: ",")
            if index > 0 { text += "," }
            text += "{\"type\":\"Feature\",\"id\":\"\(Provenance.uuid(inputs, "tile", index))\",\"geometry\":{\"type\":\"Polygon\",\"coordinates\":[["
                + "[\(Int(x0)),\(Int(y0))],[\(Int(x1)),\(Int(y0))],[\(Int(x1)),\(Int(y1))],[\(Int(x0)),\(Int(y1))],[\(Int(x0)),\(Int(y0))]"
                + "]]},\"properties\":{\"objectType\":\"tile\",\"classification\":{\"name\":\"\(name)\",\"color\":["
                + "\(colour.0),\(colour.1),\(colour.2)]},\"class\":\"\(name)\",\"probability\":\(probability)"
                + ",\"tissue_fraction\":\(tissue),\"measurements\":{\(measurements)}}}"
        }
        text += "]}\n"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// embeddings.f32: tiles x dims little-endian float32; embeddings.csv: tile, x, y per row.
    static func writeEmbeddings(_ embeddings: [[Float]], _ inputs: OutputInputs, directory: String) throws {
        var data = Data()
        for row in embeddings { row.withUnsafeBufferPointer { data.append(Data(buffer: $0)) } }
        try data.write(to: URL(fileURLWithPath: "\(directory)/embeddings.f32"))
        var index = "tile,x,y,dims\n"
        for (n, tile) in inputs.grid.tiles.enumerated() where n < embeddings.count {
            let rect = inputs.grid.levelZeroRect(of: tile)
            index += "\(n),\(Int(rect.x.rounded())),\(Int(rect.y.rounded())),\(embeddings[n].count)\n"
        }
        try index.write(toFile: "\(directory)/embeddings.csv", atomically: false, encoding: .utf8)
    }
}
