import Engine
import Foundation
import Logging
import SlideIO

/// Options of `tessera throughput`.
public struct ThroughputOptions: Sendable {
    public var slides: [String] = []
    public var model = ModelCatalog.defaultModel
    public var modelsDirectory = ModelCatalog.directory
    /// Slides per hour the scanners deliver; nil uses the scanner preset.
    public var arrivalPerHour: Double?
    public var scanner = "gt450"
    /// Scanned area of the generated slide, millimetres.
    public var slideArea = (width: 15.0, height: 15.0)
    /// Share of the generated slide covered by tissue.
    public var tissueFraction = 0.45
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    /// Seconds each stage measurement may take (the end-to-end run always covers whole slides).
    public var durationSeconds = 20.0
    /// Job queue URL (`postgres://...`) for the end-to-end run; nil uses a scratch SQLite queue.
    public var queue: String?
    /// Engine precision of the check: `fp32`, or `int8` (then fp32 is measured in the same run too,
    /// and the report gives the gain of each stage).
    public var precision = "fp32"
    /// Microns per pixel of given slides that do not record it (as `run --slide-mpp`).
    public var slideMPP: Double?
    /// Where the generated slide is kept between runs (default: `$XDG_CACHE_HOME/tessera` or `~/.cache/tessera`).
    public var cacheDirectory: String?
    public init() {}
}

/// A scanner's delivery rate, with where the figure comes from, and the slides it makes.
public struct ScannerPreset: Sendable {
    public var name: String
    public var slidesPerHour: Double
    public var source: String
    /// What its slides are: objective magnification, microns per pixel, pyramid downsamples.
    public var magnification: Int
    public var mpp: Double
    public var downsamples: [Int]

    /// Known scanners.
    public static let all: [ScannerPreset] = [
        ScannerPreset(name: "gt450", slidesPerHour: 81,
                      source: "Leica Aperio GT450 data sheet: up to 81 slides/hour, 15 x 15 mm at 40x",
                      magnification: 40, mpp: 0.25, downsamples: [1, 4, 16]),
    ]

    /// How its slides look, for people: `40x, 0.25 um/px, Aperio SVS levels 1/4/16`.
    public var slideKind: String {
        "\(magnification)x, \(mpp) um/px, Aperio SVS levels " + downsamples.map(String.init).joined(separator: "/")
    }
}

/// One way of turning the stored pixels into patches, as measured.
public struct DecodeRouteRate: Codable, Sendable {
    /// `stored-level`, `resize` or `reduced-jpeg` (see `DecodeRoute`).
    public var route: String
    public var title: String
    /// Patches per second (all cores, 8-bit RGB), nil when the route does not apply.
    public var tilesPerSecond: Double?
    /// Stored pixels covered per second (the level read), nil when the route does not apply.
    public var levelMegapixelsPerSecond: Double?
    /// Why the route does not apply.
    public var unavailable: String?
    /// Whether the analysis (the end-to-end stage, and `tessera run`) reads this way.
    public var used: Bool

    enum CodingKeys: String, CodingKey {
        case route, title, unavailable, used
        case tilesPerSecond = "tiles_per_second", levelMegapixelsPerSecond = "level_megapixels_per_second"
    }
}

/// `tessera throughput --json`: every stage, the verdict and the bottleneck.
public struct ThroughputReport: Codable, Sendable {
    public var model: String
    public var threads: Int
    public var slides: [String]
    public var slideWidth: Int
    public var slideHeight: Int
    public var tissueTilesPerSlide: Double
    public var decodeMegapixelsPerSecond: Double
    public var tilingTilesPerSecond: Double
    public var engineTilesPerSecond: Double
    public var endToEndTilesPerSecond: Double
    public var secondsPerSlide: Double
    public var slidesPerHour: Double
    public var arrivalSlidesPerHour: Double
    public var arrivalSource: String
    public var keepsPace: Bool
    public var headroom: Double
    public var bottleneck: String
    public var cpuUtilisation: Double
    public var peakRSSBytes: Int
    /// Engine precision of the stages above.
    public var precision: String
    /// With a reduced precision: the fp32 engine and end-to-end rates measured in the same run.
    public var fp32EngineTilesPerSecond: Double?
    public var fp32EndToEndTilesPerSecond: Double?
    public var fp32SlidesPerHour: Double?
    /// What the slides are: `generated GT450-like slide (...)` or `given`.
    public var slideDescription: String
    /// The route the analysis decodes with (`DecodeRoute`), and every route measured on the first slide.
    public var decodeRoute: String
    public var decodeRoutes: [DecodeRouteRate]
    /// With `--precision auto`: what it chose and why.
    public var precisionAuto: String?

    enum CodingKeys: String, CodingKey {
        case precisionAuto = "precision_auto"
        case model, threads, slides, bottleneck, headroom, precision
        case slideDescription = "slide_description", decodeRoute = "decode_route", decodeRoutes = "decode_routes"
        case fp32EngineTilesPerSecond = "fp32_engine_tiles_per_second", fp32EndToEndTilesPerSecond = "fp32_end_to_end_tiles_per_second"
        case fp32SlidesPerHour = "fp32_slides_per_hour"
        case slideWidth = "slide_width", slideHeight = "slide_height", tissueTilesPerSlide = "tissue_tiles_per_slide"
        case decodeMegapixelsPerSecond = "decode_megapixels_per_second", tilingTilesPerSecond = "tiling_tiles_per_second"
        case engineTilesPerSecond = "engine_tiles_per_second", endToEndTilesPerSecond = "end_to_end_tiles_per_second"
        case secondsPerSlide = "seconds_per_slide", slidesPerHour = "slides_per_hour"
        case arrivalSlidesPerHour = "arrival_slides_per_hour", arrivalSource = "arrival_source", keepsPace = "keeps_pace"
        case cpuUtilisation = "cpu_utilisation", peakRSSBytes = "peak_rss_bytes"
    }

    /// The table for people.
    public var table: String {
        let verdict = (keepsPace
            ? String(format: "KEEPS PACE: %.0f slides/h against %.0f arriving (headroom %+.0f%%)", slidesPerHour,
                     arrivalSlidesPerHour, headroom * 100)
            : String(format: "DOES NOT KEEP PACE: %.0f slides/h against %.0f arriving (%.0f%% short)", slidesPerHour,
                     arrivalSlidesPerHour, -headroom * 100)) + ", on the " + slideDescription
        let used = decodeRoutes.first { $0.used }?.title ?? decodeRoute
        func gain(_ value: Double, _ reference: Double?) -> String {
            guard let reference, reference > 0 else { return "" }
            return String(format: "  fp32 %8.1f, x%.2f", reference, value / reference)
        }
        let routes = decodeRoutes.map { rate -> String in
            let name = rate.title.padding(toLength: 30, withPad: " ", startingAt: 0)
            guard let tiles = rate.tilesPerSecond else { return "  \(name)  not possible: \(rate.unavailable ?? "")" }
            return "  \(name)" + String(format: "%8.1f tiles/s  %7.1f MP/s of the stored level", tiles, rate.levelMegapixelsPerSecond ?? 0)
                + (rate.used ? "  <- used" : "")
        }
        let head: [String] = [
            "model \(model) (\(precision)), \(threads) threads; \(slideDescription)",
        ] + (precisionAuto.map { ["precision auto: \($0)"] } ?? []) + [
            "slide \(slideWidth) x \(slideHeight) px, " + String(format: "%.0f tissue tiles", tissueTilesPerSlide),
            "decode routes (8-bit patches, all cores):",
        ]
        let stages: [String] = [
            "stage                      rate",
            "-------------------------  ------------------",
            String(format: "decode                     %8.1f MP/s  (%@)", decodeMegapixelsPerSecond, used as NSString),
            String(format: "tiling (decode+normalise)  %8.1f tiles/s", tilingTilesPerSecond),
            String(format: "engine                     %8.1f tiles/s", engineTilesPerSecond) + gain(engineTilesPerSecond, fp32EngineTilesPerSecond),
            String(format: "end to end                 %8.1f tiles/s  (%.1f s/slide, CPU %.0f%%)", endToEndTilesPerSecond,
                   secondsPerSlide, cpuUtilisation * 100) + gain(endToEndTilesPerSecond, fp32EndToEndTilesPerSecond),
            String(format: "slides per hour            %8.1f", slidesPerHour) + gain(slidesPerHour, fp32SlidesPerHour),
            String(format: "arrival                    %8.1f slides/h  (%@)", arrivalSlidesPerHour, arrivalSource as NSString),
            String(format: "peak RSS                   %8.1f MiB", Double(peakRSSBytes) / 1_048_576),
            "bottleneck                 \(bottleneck)",
            verdict,
        ]
        return (head + routes + stages).joined(separator: "\n")
    }
}

/// Measures each stage separately and together on this machine and compares with the arrival rate.
public enum ThroughputCheck {
    public static func run(_ options: ThroughputOptions, stage: (String) -> Void = { _ in }) throws -> ThroughputReport {
        let reference = try ModelCatalog.resolve(options.model, in: options.modelsDirectory)
        let card = reference.card
        guard let asked = Precision(rawValue: options.precision.lowercased()), [.fp32, .bf16, .int8, .auto].contains(asked) else {
            throw ModelCatalogError(description: "--precision \(options.precision): use fp32, bf16, int8 or auto")
        }
        let choice = asked == .auto ? try PrecisionChoice.resolve(modelFile: reference.path) : nil
        let precision = choice?.precision ?? asked
        let arrival: Double
        let source: String
        if let explicit = options.arrivalPerHour {
            (arrival, source) = (explicit, "given with --arrival")
        } else if let preset = ScannerPreset.all.first(where: { $0.name == options.scanner.lowercased() }) {
            (arrival, source) = (preset.slidesPerHour, preset.source)
        } else {
            throw ModelCatalogError(description: "unknown scanner '\(options.scanner)'; known: "
                                    + ScannerPreset.all.map(\.name).joined(separator: ", ") + ", or give --arrival N")
        }
        var slides = options.slides
        let preset = ScannerPreset.all.first { $0.name == options.scanner.lowercased() } ?? ScannerPreset.all[0]
        let slideDescription: String
        if slides.isEmpty {
            stage("generating a \(preset.name.uppercased())-like test slide (cached)")
            slides = [try generatedSlide(options, preset: preset)]
            slideDescription = "generated \(preset.name.uppercased())-like slide (\(preset.slideKind), "
                + String(format: "%g x %g mm, %.0f%% tissue)", options.slideArea.width, options.slideArea.height,
                         options.tissueFraction * 100)
        } else {
            slideDescription = "given slide" + (slides.count == 1 ? "" : "s") + " ("
                + slides.map { ($0 as NSString).lastPathComponent }.joined(separator: ", ") + ")"
        }
        let budget = max(2, options.durationSeconds / 3)
        // Decode and tiling on the first slide, all cores.
        stage("decode and tiling")
        let slide = try Slide.open(path: slides[0], mppOverride: options.slideMPP)
        let plan = try slide.plan(targetMPP: card.input.mpp ?? 0.5)
        let grid = try TileGrid(plan: plan, tileSize: card.input.size, mask: try slide.detectTissue(), minimumTissue: 0.5)
        /// Patches per second through `route` (nil: the reader's choice) and the route it read with.
        func readRate(_ format: PatchFormat, route: DecodeRoute? = nil,
                      seconds: Double = budget) throws -> (rate: Double, route: DecodeRoute) {
            let reader = try PatchReader(slide: slide, grid: grid, threads: options.threads, route: route)
            guard !grid.tiles.isEmpty else { return (0, reader.route) }
            let batch = PatchBatch(capacity: 64, tileSize: grid.tileSize, format: format)
            let clock = Stopwatch()
            var count = 0
            while clock.seconds < seconds, try reader.next(into: batch) { count += batch.count }
            return (Double(count) / max(clock.seconds, 1e-9), reader.route)
        }
        // The analysis reads the way PatchReader chooses; every other route is measured beside it.
        let (decodeTiles, used) = try readRate(.rgb8)
        let levelPixelsPerTile = pow(Double(grid.tileSize) / plan.scale, 2)
        var routes: [DecodeRouteRate] = []
        for route in DecodeRoute.allCases {
            var rate = DecodeRouteRate(route: route.rawValue, title: route.title, used: route == used)
            if route == used {
                rate.tilesPerSecond = decodeTiles
            } else if route == .storedLevel {
                let stored = slide.properties.levels.map { level in
                    slide.properties.mppX.map { String(format: "%g", $0 * level.downsample) } ?? "?"
                }
                rate.unavailable = String(format: "no stored level at %g um/px (levels: %@ um/px; a coarser one would lose detail)",
                                          plan.mpp ?? 0, stored.joined(separator: ", ") as NSString)
            } else {
                do {
                    rate.tilesPerSecond = try readRate(.rgb8, route: route, seconds: budget / 2).rate
                } catch let error as SlideError {
                    if case .invalidArgument(let reason) = error { rate.unavailable = reason } else { throw error }
                }
            }
            rate.levelMegapixelsPerSecond = rate.tilesPerSecond.map { $0 * levelPixelsPerTile / 1e6 }
            routes.append(rate)
        }
        let tiling = try readRate(.floatNCHW(card.normalisation)).rate
        func engineRate(_ precision: Precision) throws -> Double {
            var bench = ModelBenchOptions(model: reference.path, batch: 64, threads: options.threads, repeats: 10, warmup: 2,
                                          budgetSeconds: budget)
            bench.engine.precision = precision
            return try ModelBench.run(bench).images_per_second
        }
        stage("engine (\(precision.rawValue))")
        let engine = try engineRate(precision)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-throughput-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var logger = Logger(label: "tessera.throughput")
        logger.logLevel = .error
        func endToEnd(_ precision: Precision) throws -> (reports: [RunReport], seconds: Double, cpu: Double) {
            var run = RunOptions()
            run.model = reference.identifier
            run.modelsDirectory = options.modelsDirectory
            run.outputDirectory = scratch + "/out-\(precision.rawValue)"
            run.dataDirectory = scratch + "/data"
            run.queue = options.queue
            run.parameters.run = options.queue == nil ? nil : UUID().uuidString
            run.parameters.precision = precision == .fp32 ? nil : precision.rawValue
            run.parameters.slideMPP = options.slideMPP
            run.threads = options.threads
            let cpuBefore = ResourceUsage.cpuSeconds
            let clock = Stopwatch()
            let reports = try SlideRun.run(paths: slides, options: run, logger: logger)
            let seconds = clock.seconds
            if let failed = reports.first(where: { $0.state != "done" }) {
                throw ModelCatalogError(description: "end-to-end run failed on \(failed.slide): \(failed.error ?? failed.state)")
            }
            return (reports, seconds, (ResourceUsage.cpuSeconds - cpuBefore) / max(seconds * Double(options.threads), 1e-9))
        }
        stage("end to end (\(precision.rawValue))")
        let (reports, seconds, cpu) = try endToEnd(precision)
        // A reduced precision is judged against fp32 measured here and now, stage by stage.
        var fp32: (engine: Double, endToEnd: Double, slidesPerHour: Double)?
        if precision != .fp32 {
            stage("engine (fp32, for comparison)")
            let engine32 = try engineRate(.fp32)
            stage("end to end (fp32, for comparison)")
            let run32 = try endToEnd(.fp32)
            let tiles32 = run32.reports.reduce(0) { $0 + ($1.tilesTissue ?? 0) }
            fp32 = (engine32, Double(tiles32) / run32.seconds, Double(slides.count) / run32.seconds * 3600)
        }
        let tiles = reports.reduce(0) { $0 + ($1.tilesTissue ?? 0) }
        let slidesPerHour = Double(slides.count) / seconds * 3600
        // Reading and inference share the cores: each stage's share of a tile's time names the bottleneck.
        let readShare = tiling > 0 ? 1 / tiling : 0, engineShare = engine > 0 ? 1 / engine : 0
        let ideal = readShare + engineShare > 0 ? 1 / (readShare + engineShare) : 0
        let endToEnd = Double(tiles) / seconds
        var bottleneck = engineShare >= readShare ? "engine" : "tiling (decode + normalise)"
        if ideal > 0 && endToEnd < 0.6 * ideal { bottleneck = "pipeline overhead (tissue detection, queue, outputs)" }
        return ThroughputReport(
            model: reference.name, threads: options.threads, slides: slides.map { ($0 as NSString).lastPathComponent },
            slideWidth: slide.properties.width, slideHeight: slide.properties.height,
            tissueTilesPerSlide: Double(tiles) / Double(slides.count),
            decodeMegapixelsPerSecond: decodeTiles * Double(grid.tileSize * grid.tileSize) / 1e6,
            tilingTilesPerSecond: tiling, engineTilesPerSecond: engine, endToEndTilesPerSecond: endToEnd,
            secondsPerSlide: seconds / Double(slides.count), slidesPerHour: slidesPerHour, arrivalSlidesPerHour: arrival,
            arrivalSource: source, keepsPace: slidesPerHour >= arrival, headroom: slidesPerHour / arrival - 1,
            bottleneck: bottleneck, cpuUtilisation: cpu, peakRSSBytes: ResourceUsage.peakResidentBytes,
            precision: precision.rawValue, fp32EngineTilesPerSecond: fp32?.engine, fp32EndToEndTilesPerSecond: fp32?.endToEnd,
            fp32SlidesPerHour: fp32?.slidesPerHour, slideDescription: slideDescription, decodeRoute: used.rawValue,
            decodeRoutes: routes, precisionAuto: choice?.reason)
    }

    /// A slide as the scanner makes them (an Aperio-style SVS at its magnification, pixel size and
    /// pyramid) of the given area, tissue cut from a real slide when `../shared/data` is present,
    /// white margins around tissue islands; cached between runs.
    static func generatedSlide(_ options: ThroughputOptions, preset: ScannerPreset) throws -> String {
        let width = Int(options.slideArea.width * 1000 / preset.mpp), height = Int(options.slideArea.height * 1000 / preset.mpp)
        let cache = options.cacheDirectory
            ?? (ProcessInfo.processInfo.environment["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/tessera"
        let path = cache + "/throughput-\(preset.name)-\(width)x\(height)-t\(Int(options.tissueFraction * 100)).svs"
        if !FileManager.default.fileExists(atPath: path) {
            try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
            try SyntheticSlide.writeAperio(to: path, width: width, height: height, texturePath: TileBenchmark.realTexturePath(),
                                           mpp: preset.mpp, magnification: preset.magnification, downsamples: preset.downsamples,
                                           tissueFraction: options.tissueFraction, quality: 85)
        }
        return path
    }
}
