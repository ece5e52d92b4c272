import Dispatch
import Foundation

/// Per-channel normalisation applied to 8-bit pixels: `(p / 255 - mean) / std`.
public struct Normalisation: Sendable, Equatable, Codable {
    /// Channel means in 0...1 units.
    public var mean: [Float]
    /// Channel standard deviations in 0...1 units.
    public var std: [Float]

    public init(mean: [Float], std: [Float]) {
        precondition(mean.count == 3 && std.count == 3 && std.allSatisfy { $0 > 0 })
        self.mean = mean
        self.std = std
    }

    /// Pixels scaled to 0...1.
    public static let unit = Normalisation(mean: [0, 0, 0], std: [1, 1, 1])
    /// ImageNet statistics.
    public static let imageNet = Normalisation(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
}

/// How patches are laid out in a batch.
public enum PatchFormat: Sendable, Equatable {
    /// Packed 8-bit RGB, N x H x W x 3.
    case rgb8
    /// Normalised floats, N x 3 x H x W.
    case floatNCHW(Normalisation)
    /// Normalised floats, N x H x W x 3.
    case floatNHWC(Normalisation)
}

/// A reusable batch of patches: buffers are allocated once for `capacity` patches.
public final class PatchBatch {
    /// Most patches the batch holds.
    public let capacity: Int
    /// Patch side in pixels.
    public let tileSize: Int
    /// Pixel format.
    public let format: PatchFormat
    /// Tiles in the batch, in grid order.
    public internal(set) var tiles: [Tile] = []
    /// Pixels for `.rgb8` (capacity x tileSize² x 3).
    public internal(set) var bytes: [UInt8]
    /// Pixels for the float formats (capacity x 3 x tileSize²).
    public internal(set) var floats: [Float]

    public init(capacity: Int, tileSize: Int, format: PatchFormat) {
        precondition(capacity > 0 && tileSize > 0)
        self.capacity = capacity
        self.tileSize = tileSize
        self.format = format
        let elements = capacity * tileSize * tileSize * 3
        if case .rgb8 = format {
            bytes = [UInt8](repeating: 0, count: elements)
            floats = []
        } else {
            bytes = []
            floats = [Float](repeating: 0, count: elements)
        }
        tiles.reserveCapacity(capacity)
    }

    /// Patches currently in the batch.
    public var count: Int { tiles.count }
    /// Values per patch.
    public var elementsPerPatch: Int { tileSize * tileSize * 3 }
}

/// Streams a tile grid's patches in storage order into reusable batches, reading in parallel
/// with one libvips region per worker. Memory is the batch plus libvips' per-image tile cache
/// (a few rows of the source tiles), whatever the slide size.
public final class PatchReader {
    /// The grid being read.
    public let grid: TileGrid
    /// Parallel readers.
    public let threads: Int
    private let path: String
    private let sources: [SourceImage]
    private let bandWidth: Int
    private var position = 0
    /// Where the reader chose the reduced-size route itself: the slide and plan to re-read a patch
    /// through libvips when libjpeg refuses one of its tiles (a decoder that tolerates what libjpeg
    /// alone reports, such as a tile whose JPEG header size differs from the TIFF's).
    private let fallback: Slide?
    private let fallbackCount = FallbackCount()
    /// Patches the reduced-size route could not decode and libvips read instead.
    public var fallbackPatches: Int { fallbackCount.value }

    /// How stored pixels become patches (see `DecodeRoute`).
    public let route: DecodeRoute

    /// Opens the plan's level once per worker thread: each worker decodes through its own file
    /// handle, so decoders do not queue on one lock. Where the plan shrinks a JPEG-tiled TIFF level
    /// by 2, 4 or 8, tiles are decoded at the reduced size (`DecodeRoute.reducedJPEG`) unless
    /// `route` asks for another way; otherwise libvips decodes the level and shrinks it.
    /// - Throws: `SlideError.invalidArgument` when `route` cannot read this plan (with the reason).
    public init(slide: Slide, grid: TileGrid, threads: Int, route: DecodeRoute? = nil) throws(SlideError) {
        self.grid = grid
        self.threads = max(1, threads)
        self.path = slide.properties.path
        // Columns are dealt to workers in bands, so each worker keeps reading the same source
        // tiles row after row (its own tile cache serves the rows that neighbouring patches share).
        let bandWidth = max(1, min(8, (grid.columns + self.threads - 1) / self.threads))
        self.bandWidth = bandWidth
        let plan = grid.plan
        var jpeg: (layout: JPEGTileLayout, denominator: Int)?
        switch (route, plan.isResampled) {
        case (.storedLevel, true):
            throw .invalidArgument("no stored level is at \(plan.mpp.map { String(format: "%.3g", $0) } ?? "the target") um/px; "
                                   + "the reader shrinks level \(plan.level)")
        case (.resize, false), (.reducedJPEG, false):
            throw .invalidArgument("level \(plan.level) is read as is: there is nothing to shrink")
        case (nil, true), (.reducedJPEG, true):
            switch slide.reducedJPEGLayout(for: plan) {
            case .success(let found): jpeg = found
            case .failure(let reason) where route == .reducedJPEG:
                throw .invalidArgument("reduced-size JPEG decode does not apply: \(reason)")
            case .failure: break
            }
        default: break
        }
        self.route = !plan.isResampled ? .storedLevel : jpeg == nil ? .resize : .reducedJPEG
        // Enough decoded tiles for a worker's share of a row of patches (its bands) and the tiles
        // that row shares with the next: memory grows with the slide's width only.
        let workers = self.threads
        let cacheTiles = jpeg.map { jpeg in
            let share = ((grid.columns + bandWidth - 1) / bandWidth + workers - 1) / workers
            let across = share * ((bandWidth * grid.tileSize) / (jpeg.layout.tileWidth / jpeg.denominator) + 2)
            return min(4096, across * (grid.tileSize / (jpeg.layout.tileHeight / jpeg.denominator) + 2))
        } ?? 0
        var sources: [SourceImage] = []
        for _ in 0..<self.threads {
            if let jpeg {
                sources.append(SourceImage(.jpeg(try ScaledJPEGLevel(path: path, layout: jpeg.layout, denominator: jpeg.denominator,
                                                                     cacheTiles: cacheTiles))))
                continue
            }
            let image = try slide.openLevel(plan.level)
            var source = image
            if plan.isResampled {
                guard let resized = image.resized(horizontal: plan.scale, vertical: plan.scale) else {
                    throw .readFailed(path: path, reason: VipsRuntime.takeError() ?? "resize failed")
                }
                source = resized
            }
            sources.append(SourceImage(.vips(source)))
        }
        self.sources = sources
        fallback = route == nil && jpeg != nil ? slide : nil
    }

    /// Tiles not yet read.
    public var remaining: Int { grid.tiles.count - position }

    /// Moves the read position (e.g. to resume a job from a checkpoint).
    public func seek(toTile index: Int) {
        position = max(0, min(grid.tiles.count, index))
    }

    /// Fills `batch` with the next tiles; returns false when the grid is exhausted.
    /// - Throws: `SlideError.readFailed` if a patch cannot be decoded.
    public func next(into batch: PatchBatch) throws(SlideError) -> Bool {
        precondition(batch.tileSize == grid.tileSize, "batch tile size differs from the grid's")
        let count = min(batch.capacity, remaining)
        batch.tiles.removeAll(keepingCapacity: true)
        guard count > 0 else { return false }
        batch.tiles.append(contentsOf: grid.tiles[position..<(position + count)])
        position += count
        let side = grid.tileSize
        let perPatch = batch.elementsPerPatch
        let tiles = batch.tiles
        let failures = FailureBox()
        let format = batch.format
        let sources = self.sources
        var assignment = [[Int]](repeating: [], count: threads)
        for (index, tile) in tiles.enumerated() {
            assignment[(tile.column / bandWidth) % threads].append(index)
        }
        let work = assignment
        // A libvips region belongs to the thread that made it, so each worker makes its own.
        let messages = FailureMessages()
        let fallback = self.fallback, fallbackCount = self.fallbackCount, plan = grid.plan
        func run(_ body: @Sendable (any PatchPixels, Tile, Int) -> Bool) {
            DispatchQueue.concurrentPerform(iterations: work.count) { worker in
                guard !work[worker].isEmpty else { return }
                let pixels: any PatchPixels
                switch sources[worker].source {
                case .jpeg(let level): pixels = level
                case .vips(let image):
                    guard let region = VipsRegionRef(image: image) else {
                        failures.fail(at: work[worker][0])
                        return
                    }
                    pixels = region
                }
                var rescue: VipsRegionRef?
                for index in work[worker] where !failures.failed {
                    if body(pixels, tiles[index], index) { continue }
                    if let fallback {
                        if rescue == nil, let image = try? fallback.openLevel(plan.level),
                           let resized = image.resized(horizontal: plan.scale, vertical: plan.scale) {
                            rescue = VipsRegionRef(image: resized)
                        }
                        if let rescue, body(rescue, tiles[index], index) {
                            fallbackCount.add()
                            continue
                        }
                    }
                    failures.fail(at: index)
                    messages.record(index, pixels.failureReason)
                }
            }
        }
        switch format {
        case .rgb8:
            batch.bytes.withUnsafeMutableBufferPointer { buffer in
                let base = SendablePointer(buffer.baseAddress!)
                run { region, tile, index in
                    region.readRGB(x: tile.x, y: tile.y, width: side, height: side,
                                                 into: base.pointer + index * perPatch)
                }
            }
        case .floatNCHW(let norm), .floatNHWC(let norm):
            let planar: Bool
            if case .floatNCHW = format { planar = true } else { planar = false }
            batch.floats.withUnsafeMutableBufferPointer { buffer in
                let base = SendablePointer(buffer.baseAddress!)
                run { region, tile, index in
                    region.readFloat(x: tile.x, y: tile.y, width: side, height: side,
                                                   mean: norm.mean, std: norm.std, planar: planar,
                                                   into: base.pointer + index * perPatch)
                }
            }
        }
        if let index = failures.firstFailure {
            let tile = tiles[index]
            throw .readFailed(path: path, reason: "tile at (\(tile.x), \(tile.y)): "
                              + (messages.message(index) ?? VipsRuntime.takeError() ?? "decode failed"))
        }
        return true
    }

    /// What patches are read from. libvips images are safe to read from many threads at once
    /// (each through its own region); a scaled JPEG level belongs to one worker. The reference is
    /// only released when the reader goes.
    private final class SourceImage: @unchecked Sendable {
        enum Source {
            case vips(VipsImageRef)
            case jpeg(ScaledJPEGLevel)
        }
        let source: Source
        init(_ source: Source) { self.source = source }
    }
}

/// Reads rectangles of one source as packed RGB or normalised floats (one thread at a time).
protocol PatchPixels {
    func readRGB(x: Int, y: Int, width: Int, height: Int, into destination: UnsafeMutablePointer<UInt8>) -> Bool
    func readFloat(x: Int, y: Int, width: Int, height: Int, mean: [Float], std: [Float], planar: Bool,
                   into destination: UnsafeMutablePointer<Float>) -> Bool
    /// Why the last read failed, when the source keeps its own reason.
    var failureReason: String? { get }
}

extension VipsRegionRef: PatchPixels {
    /// libvips keeps its reasons in its global error buffer.
    var failureReason: String? { nil }
}

extension ScaledJPEGLevel: PatchPixels {
    var failureReason: String? { failure }
}

/// Patches read through the fallback, across reader threads.
private final class FallbackCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func add() { lock.withLock { count += 1 } }
}

/// The reason of the first failed patch, by index.
private final class FailureMessages: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [Int: String] = [:]
    func record(_ index: Int, _ message: String?) { if let message { lock.withLock { messages[index] = message } } }
    func message(_ index: Int) -> String? { lock.withLock { messages[index] } }
}

/// A raw buffer pointer handed to `concurrentPerform` iterations that write disjoint ranges.
private struct SendablePointer<Element>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Element>
    init(_ pointer: UnsafeMutablePointer<Element>) { self.pointer = pointer }
}

/// Records the first failed patch across reader threads.
private final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private var first: Int?
    var failed: Bool { lock.withLock { first != nil } }
    var firstFailure: Int? { lock.withLock { first } }
    func fail(at index: Int) { lock.withLock { if first == nil || index < first! { first = index } } }
}
