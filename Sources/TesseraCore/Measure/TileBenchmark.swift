import Foundation
import SlideIO

/// Measures patch decode (+ normalise) throughput on a large pyramidal JPEG TIFF
/// (`tessera bench tiles`).
public enum TileBenchmark {
    /// One measured configuration.
    public struct Row: Codable, Sendable {
        public var format: String
        public var threads: Int
        public var patches: Int
        public var seconds: Double
        public var patchesPerSecond: Double
        public var patchesPerSecondPerCore: Double

        enum CodingKeys: String, CodingKey {
            case format, threads, patches, seconds
            case patchesPerSecond = "patches_per_second", patchesPerSecondPerCore = "patches_per_second_per_core"
        }
    }

    /// The whole result.
    public struct Report: Codable, Sendable {
        public var benchmark = "tiles"
        public var slide: String
        public var width: Int
        public var height: Int
        public var tileSize: Int
        public var tilesTissue: Int
        public var generateSeconds: Double
        public var rows: [Row]
        public var peakRSSBytes: Int

        enum CodingKeys: String, CodingKey {
            case benchmark, slide, width, height, rows
            case tileSize = "tile_size", tilesTissue = "tiles_tissue", generateSeconds = "generate_seconds"
            case peakRSSBytes = "peak_rss_bytes"
        }
    }

    /// The default benchmark slide path (cached between runs).
    public static func defaultSlidePath(size: Int) -> String {
        let base = ProcessInfo.processInfo.environment["XDG_CACHE_HOME"]
            ?? (NSHomeDirectory() + "/.cache")
        return base + "/tessera/bench-\(size)x\(size)-jpeg.tif"
    }

    /// A real H&E slide to take texture from when `../shared/data` is present.
    public static func realTexturePath() -> String? {
        let candidates = ["../shared/data/slides/CMU-1-Small-Region.svs"]
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// Makes the benchmark slide when missing; returns seconds spent generating (0 if cached).
    public static func ensureSlide(path: String, size: Int) throws(SlideError) -> Double {
        if FileManager.default.fileExists(atPath: path) { return 0 }
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                 withIntermediateDirectories: true)
        let clock = Stopwatch()
        try SyntheticSlide.write(to: path, width: size, height: size, texturePath: realTexturePath(), mpp: 0.5,
                                 tissueFraction: 0.45, quality: 85)
        return clock.seconds
    }

    /// Reads every tissue tile once per configuration (u8 and normalised float, each thread count).
    public static func run(slidePath: String, tileSize: Int, threadCounts: [Int], generateSeconds: Double,
                           maxTiles: Int? = nil, minimumSeconds: Double = 2) throws(SlideError) -> Report {
        let slide = try Slide.open(path: slidePath)
        let plan = try slide.plan(targetMPP: slide.properties.mppX == nil ? nil : 0.5)
        let mask = try slide.detectTissue()
        let full = try TileGrid(plan: plan, tileSize: tileSize, mask: mask, minimumTissue: 0.5)
        var rows: [Row] = []
        let formats: [(String, PatchFormat)] = [("u8", .rgb8), ("float-nchw", .floatNCHW(.imageNet))]
        for (name, format) in formats {
            for threads in threadCounts {
                let reader = try PatchReader(slide: slide, grid: full, threads: threads)
                let batch = PatchBatch(capacity: 64, tileSize: tileSize, format: format)
                var count = 0
                let clock = Stopwatch()
                // Whole passes over the slide until at least `minimumSeconds` have passed.
                repeat {
                    reader.seek(toTile: 0)
                    while try reader.next(into: batch) {
                        count += batch.count
                        if let maxTiles, count >= maxTiles { break }
                    }
                } while clock.seconds < minimumSeconds && maxTiles == nil && !full.tiles.isEmpty
                let seconds = clock.seconds
                let rate = Double(count) / max(seconds, 1e-9)
                rows.append(Row(format: name, threads: threads, patches: count, seconds: seconds,
                                patchesPerSecond: rate, patchesPerSecondPerCore: rate / Double(threads)))
            }
        }
        return Report(slide: slidePath, width: slide.properties.width, height: slide.properties.height,
                      tileSize: tileSize, tilesTissue: full.tiles.count, generateSeconds: generateSeconds, rows: rows,
                      peakRSSBytes: ResourceUsage.peakResidentBytes)
    }
}

extension TileBenchmark.Report {
    /// A table for people.
    public var table: String {
        var lines = [
            "slide \(slide) (\(width) x \(height)), \(tilesTissue) tissue tiles of \(tileSize) px",
            "format       threads   patches   seconds   patches/s   per core   vs 3,000/core target",
            "-----------  -------   -------   -------   ---------   --------   --------------------",
        ]
        for row in rows {
            lines.append(row.format.padding(toLength: 11, withPad: " ", startingAt: 0)
                         + String(format: "  %7d   %7d   %7.2f   %9.0f   %8.0f   %.2fx", row.threads, row.patches, row.seconds, row.patchesPerSecond,
                                row.patchesPerSecondPerCore, row.patchesPerSecondPerCore / 3000))
        }
        lines.append(String(format: "peak RSS %.1f MiB (getrusage ru_maxrss)", Double(peakRSSBytes) / 1_048_576))
        return lines.joined(separator: "\n")
    }
}
