import Foundation
import SlideIO

/// The per-pixel result of a segmentation model over a slide, at the model's resolution (the
/// read plan's pixel space): a class map on disk and what was counted while it was written.
public struct SegmentationMap: Sendable {
    /// Headerless file of `width` x `height` bytes: class index + 1, 0 = not analysed.
    public var rawPath: String
    public var width: Int
    public var height: Int
    /// Microns per map pixel (the plan's), when the slide has a pixel size.
    public var mpp: Double?
    /// Level-0 pixels per map pixel.
    public var downsample: Double
    /// Map pixels per class (index = class).
    public var classPixels: [Int]
    /// How the blended outputs became classes.
    public var rule: SegmentationRule
    /// The map reduced to `cell` x `cell` blocks (the most frequent value of each; 0 = not
    /// analysed), for region outlines: `cellsWide` x `cellsHigh` bytes.
    public var cell: Int
    public var cellsWide: Int
    public var cellsHigh: Int
    public var cells: [UInt8]
}

/// How blended outputs become classes (the card's `segmentation` block).
public struct SegmentationRule: Sendable {
    var sigmoid: Bool
    /// The card's `segmentation.threshold`, as written and as compared.
    var stated: Double?
    var threshold: Float?
    var background: Int?
    /// The card's name for the activation.
    var activation: String { sigmoid ? "sigmoid" : "softmax" }

    init(card: ModelCard, classes: Int) throws {
        let spec = card.segmentation ?? .init()
        switch spec.activation ?? "softmax" {
        case "softmax": sigmoid = false
        case "sigmoid": sigmoid = true
        case let other:
            throw ModelCatalogError(description: "model \(card.name): segmentation.activation '\(other)' is not softmax or sigmoid")
        }
        stated = spec.threshold
        threshold = spec.threshold.map(Float.init)
        if let name = spec.background {
            guard let index = card.classes.firstIndex(of: name), index < classes else {
                throw ModelCatalogError(description: "model \(card.name): segmentation.background '\(name)' is not one of its classes "
                                        + card.classes.joined(separator: ", "))
            }
            background = index
        } else {
            background = card.classes.firstIndex(of: "background")
        }
    }

    /// The class of one pixel from its (blended) model outputs, `stride` apart.
    @inline(__always)
    func decide(_ values: UnsafePointer<Float>, stride: Int, classes: Int, scale: Float) -> Int {
        var best = 0
        var top = -Float.infinity
        var total: Float = 0
        for c in 0..<classes {
            let v = values[c * stride] * scale
            if v > top { top = v; best = c }
        }
        guard let threshold, let background, best != background else { return best }
        let probability: Float
        if sigmoid {
            probability = 1 / (1 + exp(-top))
        } else {
            for c in 0..<classes { total += exp(values[c * stride] * scale - top) }
            probability = 1 / total
        }
        return probability > threshold ? best : background
    }
}

/// Blends the model outputs of overlapping tiles, in grid (row-major) order, into a class map
/// streamed to disk. Each tile's outputs are weighted by a Gaussian centred on the tile (sigma
/// 1/8 of its side, as MONAI's sliding-window inference does) so tile borders, where the model
/// sees the least context, count least. Memory: a band one tile high across the map (classes + 1
/// floats per pixel) and one row of block counts, whatever the slide's height.
final class SegmentationCanvas {
    let width: Int, height: Int, classes: Int, tile: Int
    let rule: SegmentationRule
    let cell: Int
    private let weights: [Float]
    /// The first map row the band holds; rows above it are written.
    private(set) var top = 0
    private var sums: [Float]
    private var weight: [Float]
    private let file: FileHandle
    let rawPath: String
    private(set) var classPixels: [Int]
    private var votes: [Int32]
    private(set) var cells: [UInt8] = []
    let cellsWide: Int

    init(width: Int, height: Int, classes: Int, tile: Int, rule: SegmentationRule, directory: String) throws {
        self.width = width
        self.height = height
        self.classes = classes
        self.tile = tile
        self.rule = rule
        // Region outlines are traced on blocks: about 2,048 blocks across the longest side at most.
        cell = max(4, (max(width, height) + 2047) / 2048)
        cellsWide = (width + cell - 1) / cell
        let sigma = 0.125 * Double(tile)
        let centre = Double(tile - 1) / 2
        let profile = (0..<tile).map { exp(-pow(Double($0) - centre, 2) / (2 * sigma * sigma)) }
        var w = [Float](repeating: 0, count: tile * tile)
        for y in 0..<tile { for x in 0..<tile { w[y * tile + x] = Float(max(profile[y] * profile[x], 1e-3)) } }
        weights = w
        sums = [Float](repeating: 0, count: classes * tile * width)
        weight = [Float](repeating: 0, count: tile * width)
        classPixels = [Int](repeating: 0, count: classes)
        votes = [Int32](repeating: 0, count: cellsWide * (classes + 1))
        rawPath = directory + "/classmap-\(UUID().uuidString.prefix(8)).raw"
        guard FileManager.default.createFile(atPath: rawPath, contents: nil), let handle = FileHandle(forWritingAtPath: rawPath) else {
            throw SlideError.writeFailed(path: rawPath, reason: "cannot create the class map file")
        }
        file = handle
    }

    private var finished = false

    /// A canvas dropped before ``finish(mpp:downsample:)`` (the analysis failed or stopped) takes
    /// its partial map file with it.
    deinit {
        try? file.close()
        if !finished { try? FileManager.default.removeItem(atPath: rawPath) }
    }

    /// Adds one tile's outputs (`classes` planes of `tile` x `tile`) with its top-left corner at
    /// (x, y) of the map. Tiles come in row-major order: rows above `y` are final and written.
    func add(x: Int, y: Int, outputs: UnsafePointer<Float>) throws {
        precondition(y >= top, "segmentation tiles out of order")
        if y > top { try flush(to: y) }
        let (classes, tile, width, top) = (self.classes, self.tile, self.width, self.top)
        let plane = tile * tile
        let columns = min(tile, width - x), rows = min(tile, height - y)
        guard columns > 0, rows > 0 else { return }
        weights.withUnsafeBufferPointer { w in
            weight.withUnsafeMutableBufferPointer { acc in
                for ty in 0..<rows {
                    let wrow = w.baseAddress! + ty * tile, dst = acc.baseAddress! + (y - top + ty) * width + x
                    for tx in 0..<columns { dst[tx] += wrow[tx] }
                }
            }
            sums.withUnsafeMutableBufferPointer { acc in
                for c in 0..<classes {
                    for ty in 0..<rows {
                        let wrow = w.baseAddress! + ty * tile, src = outputs + c * plane + ty * tile
                        let dst = acc.baseAddress! + (c * tile + y - top + ty) * width + x
                        for tx in 0..<columns { dst[tx] += src[tx] * wrow[tx] }
                    }
                }
            }
        }
    }

    /// Writes every remaining row; returns the finished map.
    func finish(mpp: Double?, downsample: Double) throws -> SegmentationMap {
        try flush(to: height)
        if height % cell != 0 { closeCellRow() }
        try file.close()
        finished = true
        return SegmentationMap(rawPath: rawPath, width: width, height: height, mpp: mpp, downsample: downsample,
                               classPixels: classPixels, rule: rule, cell: cell, cellsWide: cellsWide,
                               cellsHigh: cells.count / max(1, cellsWide), cells: cells)
    }

    /// Decides and writes rows `top..<end`, then moves the band down.
    private func flush(to end: Int) throws {
        let end = min(end, height)
        guard end > top else { return }
        var bytes = [UInt8](repeating: 0, count: width)
        var row = top
        while row < end {
            let band = row - top
            if band < tile {
                sums.withUnsafeBufferPointer { s in weight.withUnsafeBufferPointer { w in
                    let wr = w.baseAddress! + band * width
                    for x in 0..<width where wr[x] > 0 {
                        let label = rule.decide(s.baseAddress! + band * width + x, stride: tile * width, classes: classes,
                                                scale: 1 / wr[x])
                        bytes[x] = UInt8(label + 1)
                        classPixels[label] += 1
                    }
                } }
            }
            try file.write(contentsOf: bytes)
            vote(bytes, row: row)
            for x in 0..<width { bytes[x] = 0 }
            row += 1
        }
        // Keep the rows still open (end..<top + tile) at the top of the band, zero the rest.
        let shift = min(end - top, tile)
        if shift > 0 {
            let keep = tile - shift
            for c in 0..<classes {
                let base = c * tile * width
                if keep > 0 {
                    sums.withUnsafeMutableBufferPointer { p in
                        let b = p.baseAddress! + base
                        b.update(from: b + shift * width, count: keep * width)
                    }
                }
                for i in (base + keep * width)..<(base + tile * width) { sums[i] = 0 }
            }
            if keep > 0 {
                weight.withUnsafeMutableBufferPointer { p in
                    p.baseAddress!.update(from: p.baseAddress! + shift * width, count: keep * width)
                }
            }
            for i in (keep * width)..<(tile * width) { weight[i] = 0 }
        }
        top = end
    }

    /// Counts one written row into its block row; a full block row becomes one row of `cells`.
    private func vote(_ bytes: [UInt8], row: Int) {
        let k = classes + 1
        for x in 0..<width { votes[(x / cell) * k + Int(bytes[x])] += 1 }
        if (row + 1) % cell == 0 { closeCellRow() }
    }

    private func closeCellRow() {
        let k = classes + 1
        for b in 0..<cellsWide {
            var best = 0
            for v in 1..<k where votes[b * k + v] > votes[b * k + best] { best = v }
            cells.append(UInt8(best))
        }
        for i in votes.indices { votes[i] = 0 }
    }
}
