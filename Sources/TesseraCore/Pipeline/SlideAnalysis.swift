import Engine
import Foundation
import JobStore
import SlideIO

/// One slide scored by one model: slide -> level for the model's MPP -> tissue mask -> tile grid
/// -> patches (a reader thread) -> engine (overlapping with reading) -> per-tile scores.
///
/// Knows no queue: a job runner resumes it from the tiles it already has and keeps what it
/// reports through `checkpoint`; a measurement runs it from scratch and keeps nothing.
public struct SlideAnalysis {
    /// What the analysis produced: everything the output files are made from.
    public struct Result {
        public var grid: TileGrid
        public var mask: TissueMask
        /// Scores of every tissue tile, in grid order.
        public var scores: [[Float]]
        /// Per-tile embeddings when asked for.
        public var embeddings: [[Float]]?
        /// `mask_seconds`, `tiles_seconds`, `total_seconds`.
        public var timings: [String: Double]
        public var slideWidth: Int
        public var slideHeight: Int
        /// Where the slide's microns per pixel came from (metadata or the stated fallback).
        public var mppSource: String
        /// The slide's level-0 microns per pixel (metadata or the stated fallback).
        public var slideMPP: Double?
        /// A segmentation model's class map (nil for classifiers).
        public var segmentation: SegmentationMap? = nil
        /// The slide's stain estimate, for a model with `input.colour_transform: eho`.
        public var colourTransform: StainTransform? = nil
        /// How the stored pixels became patches (`DecodeRoute`); nil when every tile came from a checkpoint.
        public var decodeRoute: DecodeRoute? = nil
    }

    /// Calls made while the analysis runs; each may throw to end it (a lost lease, a stop).
    public struct Events {
        /// The tissue tile count, once the grid is laid.
        public var planned: (Int) throws -> Void = { _ in }
        /// Tiles scored since the last checkpoint, and tiles done in all.
        public var checkpoint: ([TileResult], Int) throws -> Void = { _, _ in }
        /// Tiles done and total, after every batch.
        public var progress: (Int, Int) -> Void = { _, _ in }
        /// Asked before every batch: throw to stop.
        public var check: () throws -> Void = {}
        /// What the analysis is doing now ("opening the slide", "finding tissue", ...), for
        /// progress and for saying where a budget ran out.
        public var stage: (String) -> Void = { _ in }
        public init() {}
    }

    public var slidePath: String
    public var parameters: AnalysisParameters
    public var card: ModelCard
    public var session: Session
    /// Cores: the reader gets half of them, the engine's session has its own.
    public var threads: Int
    public var batchSize: Int
    /// Tiles per checkpoint (whole batches).
    public var checkpointTiles: Int
    /// Seconds after which the next batch boundary checkpoints even with fewer tiles, so small
    /// slides and slow models keep their work across a crash too.
    public var checkpointSeconds: Double
    /// The slide is checked against these (structure, pixel limit) when it is opened.
    public var limits = SlideLimits()

    public init(slidePath: String, parameters: AnalysisParameters, card: ModelCard, session: Session, threads: Int,
                batchSize: Int = 64, checkpointTiles: Int = 512, checkpointSeconds: Double = 5) {
        self.slidePath = slidePath
        self.parameters = parameters
        self.card = card
        self.session = session
        self.threads = max(1, threads)
        self.batchSize = max(1, batchSize)
        self.checkpointTiles = max(1, checkpointTiles / self.batchSize) * self.batchSize
        self.checkpointSeconds = checkpointSeconds
    }

    /// Runs the analysis. `resume` holds tiles scored earlier (indices from 0, in order); the
    /// analysis starts at the last whole batch among them. `resumeTiles` is the tile count the
    /// earlier attempt planned: when this grid has another count (the reader's plan changed between
    /// versions), the earlier tiles belong to another grid and the analysis starts again.
    public func run(resume: [TileResult] = [], resumeTiles: Int? = nil, events: Events = Events()) throws -> Result {
        let total = Stopwatch()
        events.stage("opening the slide")
        // Opening checks the file's structure again: it may have been cut or replaced since intake.
        let slide = try Slide.open(path: slidePath, mppOverride: parameters.slideMPP, limits: limits)
        let plan = try slide.plan(targetMPP: parameters.mpp ?? card.input.mpp ?? 0.5)
        let maskClock = Stopwatch()
        events.stage("finding tissue")
        let mask = try slide.detectTissue()
        let maskSeconds = maskClock.seconds
        let stain = card.input.colourTransform == "eho" ? try StainTransform.estimate(from: mask) : nil
        let segmenting = card.isSegmentation
        // A segmentation model's tiles overlap by its card's margin (a quarter tile by default).
        let overlap = segmenting && parameters.overlap == 0
            ? min(card.input.size - 1, max(0, card.segmentation?.overlap ?? card.input.size / 4)) : parameters.overlap
        // Segmentation covers the slide to its edges and keeps tiles with a little tissue (at most
        // 5% is asked for: a gland at a tile's border must not fall out of the map).
        let grid = try TileGrid(plan: plan, tileSize: card.input.size, overlap: overlap, mask: mask,
                                minimumTissue: segmenting ? min(parameters.minTissue, 0.05) : parameters.minTissue,
                                coverEdges: segmenting)
        try events.planned(grid.tiles.count)
        // The class map is blended in one pass over the tiles: a segmentation job starts again
        // from its first tile (its checkpoints carry progress, not the map).
        let sameGrid = resumeTiles.map { $0 == grid.tiles.count } ?? true
        var kept = (segmenting || !sameGrid ? [] : resume).prefix { $0.index < grid.tiles.count }
        kept = kept.prefix((min(kept.count, grid.tiles.count) / batchSize) * batchSize)
        for (offset, result) in kept.enumerated() where result.index != offset {
            throw SlideError.readFailed(path: slidePath, reason: "checkpointed tiles are out of order at tile \(offset)")
        }
        var scores = kept.map(\.scores)
        events.progress(scores.count, grid.tiles.count)
        var embeddings: [[Float]]? = parameters.embeddings ? kept.map { $0.embedding ?? [] } : nil
        let tileClock = Stopwatch()
        var canvas: SegmentationCanvas? = nil
        if segmenting {
            let classes = max(1, card.classes.count)
            canvas = try SegmentationCanvas(width: plan.width, height: plan.height, classes: classes, tile: grid.tileSize,
                                            rule: SegmentationRule(card: card, classes: classes),
                                            directory: FileManager.default.temporaryDirectory.path)
        }
        var route: DecodeRoute? = nil
        if scores.count < grid.tiles.count {
            events.stage(segmenting ? "reading and segmenting tiles at level \(plan.level)"
                         : "reading and scoring tiles at level \(plan.level)")
            route = try infer(slide: slide, grid: grid, from: scores.count, events: events, canvas: canvas, stain: stain) { result in
                scores.append(result.scores)
                if embeddings != nil { embeddings?.append(result.embedding ?? []) }
            }
        }
        var map: SegmentationMap? = nil
        if let canvas { map = try canvas.finish(mpp: plan.mpp, downsample: plan.downsample) }
        guard scores.count == grid.tiles.count else {
            if let map { try? FileManager.default.removeItem(atPath: map.rawPath) }
            throw SlideError.readFailed(path: slidePath, reason: "results incomplete (\(scores.count) of \(grid.tiles.count) tiles)")
        }
        return Result(grid: grid, mask: mask, scores: scores, embeddings: embeddings,
                      timings: ["mask_seconds": maskSeconds, "tiles_seconds": tileClock.seconds, "total_seconds": total.seconds],
                      slideWidth: slide.properties.width, slideHeight: slide.properties.height,
                      mppSource: slide.properties.mppSource.rawValue, slideMPP: slide.properties.mppX,
                      segmentation: map, colourTransform: stain, decodeRoute: route)
    }

    /// The read/infer loop with a two-slot queue between the reader thread and the engine.
    private func infer(slide: Slide, grid: TileGrid, from start: Int, events: Events, canvas: SegmentationCanvas?,
                       stain: StainTransform?, keep: (TileResult) -> Void) throws -> DecodeRoute {
        let reader = try PatchReader(slide: slide, grid: grid, threads: max(1, threads / 2))
        reader.seek(toTile: start)
        // EHO models: RGB in 0...1 from the reader, the stain transform, then the card's mean/std.
        let format = PatchFormat.floatNCHW(stain == nil ? card.normalisation : .unit)
        let pipe = BatchPipe(batches: (0..<2).map { _ in PatchBatch(capacity: batchSize, tileSize: grid.tileSize, format: format) })
        let owned = ReaderBox(reader)
        let producer = Thread {
            let reader = owned.reader
            while let batch = pipe.takeFree() {
                do {
                    if try reader.next(into: batch) {
                        pipe.putFilled(batch)
                    } else {
                        pipe.finish(error: nil)
                        return
                    }
                } catch {
                    pipe.finish(error: error)
                    return
                }
            }
        }
        producer.stackSize = 1 << 20
        producer.start()
        defer { pipe.abort() }
        var done = start
        var pending: [TileResult] = []
        var lastCheckpoint = Stopwatch()
        while let batch = try pipe.takeFilled() {
            try events.check()
            let count = batch.count
            let per = batch.elementsPerPatch
            var input = count == batch.capacity ? batch.floats : Array(batch.floats.prefix(count * per))
            if let stain {
                input.withUnsafeMutableBufferPointer { stain.apply(to: $0.baseAddress!, count: count, side: grid.tileSize,
                                                                   normalisation: card.normalisation) }
            }
            let result = try session.run(Tensor(shape: [count, 3, grid.tileSize, grid.tileSize], data: input),
                                         embedding: parameters.embeddings)
            let tiles = batch.tiles
            pipe.putFree(batch)
            let output = result.outputs[0]
            var results: [TileResult] = []
            if let canvas {
                let side = grid.tileSize, plane = side * side
                guard output.shape == [count, canvas.classes, side, side] else {
                    throw ModelCatalogError(description: "model \(card.name) is a segmentation model (task: segmentation) but its output "
                                            + "\(output.shape) is not [N, \(canvas.classes) classes, \(side), \(side)]")
                }
                try output.data.withUnsafeBufferPointer { values in
                    for n in 0..<count {
                        let base = values.baseAddress! + n * canvas.classes * plane
                        try canvas.add(x: tiles[n].x, y: tiles[n].y, outputs: base)
                        // The tile's own class shares (before blending), for tiles.csv and progress.
                        var counts = [Int](repeating: 0, count: canvas.classes)
                        for i in 0..<plane { counts[canvas.rule.decide(base + i, stride: plane, classes: canvas.classes, scale: 1)] += 1 }
                        results.append(TileResult(index: done + n, scores: counts.map { Float($0) / Float(plane) }, embedding: nil))
                    }
                }
            } else {
                let classes = output.count / max(1, count)
                let features = result.embedding
                let dims = features.map { $0.count / max(1, count) } ?? 0
                for n in 0..<count {
                    let scores = card.probabilities(fromOutput: Array(output.data[(n * classes)..<((n + 1) * classes)]))
                    let embedding = features.map { Array($0.data[(n * dims)..<((n + 1) * dims)]) }
                    results.append(TileResult(index: done + n, scores: scores, embedding: embedding))
                }
            }
            for tile in results {
                pending.append(tile)
                keep(tile)
            }
            done += count
            if pending.count >= checkpointTiles || done == grid.tiles.count || lastCheckpoint.seconds >= checkpointSeconds {
                try events.checkpoint(pending, done)
                pending.removeAll(keepingCapacity: true)
                lastCheckpoint = Stopwatch()
            }
            events.progress(done, grid.tiles.count)
        }
        if !pending.isEmpty { try events.checkpoint(pending, done) }
        return reader.route
    }
}

/// Hands the patch reader to the producer thread, its only user from then on.
private final class ReaderBox: @unchecked Sendable {
    let reader: PatchReader
    init(_ reader: PatchReader) { self.reader = reader }
}
