import Foundation
import SlideIO

/// Options of a tiling run (`tessera tiles`).
public struct TilingOptions: Sendable {
    public var tileSize = 224
    public var targetMPP: Double? = 0.5
    public var overlap = 0
    public var minimumTissue = 0.5
    public var slideMPP: Double?
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public var format: PatchFormat = .floatNCHW(.unit)
    public var batchSize = 64
    public var readPixels = true
    /// How stored pixels become patches; nil lets the reader choose (see `DecodeRoute`).
    public var decodeRoute: DecodeRoute?
    public init() {}
}

/// `tessera tiles` output.
public struct TilingReport: Codable, Sendable {
    public var slide: String
    public var level: Int
    public var levelMPP: Double?
    public var mpp: Double?
    public var scale: Double
    public var tileSize: Int
    public var overlap: Int
    public var minTissue: Double
    public var gridColumns: Int
    public var gridRows: Int
    public var tilesTotal: Int
    public var tilesTissue: Int
    public var tissueFraction: Double
    public var maskSeconds: Double
    public var readSeconds: Double
    public var tilesPerSecond: Double
    public var threads: Int
    public var peakRSSBytes: Int
    /// The route the tiles were read with (nil with `--no-read`).
    public var decodeRoute: String?

    enum CodingKeys: String, CodingKey {
        case slide, level, mpp, scale, overlap, threads
        case decodeRoute = "decode_route"
        case levelMPP = "level_mpp", tileSize = "tile_size", minTissue = "min_tissue"
        case gridColumns = "grid_columns", gridRows = "grid_rows", tilesTotal = "tiles_total"
        case tilesTissue = "tiles_tissue", tissueFraction = "tissue_fraction", maskSeconds = "mask_seconds"
        case readSeconds = "read_seconds", tilesPerSecond = "tiles_per_second", peakRSSBytes = "peak_rss_bytes"
    }

    /// Human-readable lines.
    public var text: String {
        [
            "slide:          \(slide)",
            "level:          \(level)" + (levelMPP.map { String(format: " (%.3f um/px)", $0) } ?? ""),
            "patch mpp:      " + (mpp.map { String(format: "%.3f um/px", $0) } ?? "native (slide MPP unknown)")
                + (scale != 1 ? String(format: ", resampled x%.3f", scale) : ""),
            "tile:           \(tileSize) px, overlap \(overlap), min tissue \(minTissue)",
            "grid:           \(gridColumns) x \(gridRows) = \(tilesTotal) tiles",
            "tissue tiles:   \(tilesTissue)" + String(format: " (slide tissue %.1f%%)", tissueFraction * 100),
            String(format: "read:           %.3f s, %.0f tiles/s on %d threads (mask %.3f s)",
                   readSeconds, tilesPerSecond, threads, maskSeconds)
                + (decodeRoute.flatMap(DecodeRoute.init(rawValue:)).map { ", \($0.title)" } ?? ""),
            String(format: "peak RSS:       %.1f MiB", Double(peakRSSBytes) / 1_048_576),
        ].joined(separator: "\n")
    }
}

/// Runs tissue detection, builds the grid and (optionally) reads every tissue tile.
public enum Tiling {
    /// Tiles a slide; `maskPath` also writes the mask picture, `tilesPath` a CSV of the kept tiles.
    public static func run(path: String, options: TilingOptions, maskPath: String? = nil,
                           tilesPath: String? = nil) throws(SlideError) -> TilingReport {
        let slide = try Slide.open(path: path, mppOverride: options.slideMPP)
        let plan = try slide.plan(targetMPP: slide.properties.mppX == nil && options.slideMPP == nil
                                  && options.targetMPP == nil ? nil : options.targetMPP)
        let maskClock = Stopwatch()
        let mask = try slide.detectTissue()
        let maskSeconds = maskClock.seconds
        let grid = try TileGrid(plan: plan, tileSize: options.tileSize, overlap: options.overlap, mask: mask,
                                minimumTissue: options.minimumTissue)
        if let maskPath { try MaskPicture.write(mask: mask, grid: grid, to: maskPath) }
        if let tilesPath { try writeTileList(grid, to: tilesPath) }
        var readSeconds = 0.0
        var route: DecodeRoute?
        if options.readPixels && !grid.tiles.isEmpty {
            let reader = try PatchReader(slide: slide, grid: grid, threads: options.threads, route: options.decodeRoute)
            route = reader.route
            let batch = PatchBatch(capacity: options.batchSize, tileSize: options.tileSize, format: options.format)
            let clock = Stopwatch()
            while try reader.next(into: batch) {}
            readSeconds = clock.seconds
        }
        return TilingReport(
            slide: path, level: plan.level, levelMPP: plan.levelMPP, mpp: plan.mpp, scale: plan.scale,
            tileSize: options.tileSize, overlap: options.overlap, minTissue: options.minimumTissue,
            gridColumns: grid.columns, gridRows: grid.rows, tilesTotal: grid.totalCount,
            tilesTissue: grid.tiles.count, tissueFraction: mask.tissueFraction, maskSeconds: maskSeconds,
            readSeconds: readSeconds,
            tilesPerSecond: readSeconds > 0 ? Double(grid.tiles.count) / readSeconds : 0,
            threads: options.threads, peakRSSBytes: ResourceUsage.peakResidentBytes, decodeRoute: route?.rawValue)
    }

    /// Writes the kept tiles as CSV: position in the read level's (resampled) pixels, in level-0
    /// pixels, and tissue fraction.
    static func writeTileList(_ grid: TileGrid, to path: String) throws(SlideError) {
        var text = "column,row,x,y,level,level0_x,level0_y,level0_size,tissue_fraction\n"
        for tile in grid.tiles {
            let rect = grid.levelZeroRect(of: tile)
            text += "\(tile.column),\(tile.row),\(tile.x),\(tile.y),\(grid.plan.level),"
                + String(format: "%.1f,%.1f,%.1f,%.4f\n", rect.x, rect.y, rect.width, tile.tissueFraction)
        }
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw .writeFailed(path: path, reason: "\(error)")
        }
    }
}
