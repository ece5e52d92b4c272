import CJPEGShims
import CVipsShims
import Foundation

/// How a reader turns stored pixels into patches at the model's pixel size.
public enum DecodeRoute: String, Sendable, Codable, CaseIterable {
    /// A stored level at the model's pixel size, read as is.
    case storedLevel = "stored-level"
    /// A finer stored level decoded in full, then shrunk by libvips (`vips_resize`).
    case resize = "resize"
    /// The finer level's JPEG tiles decoded at 1/2, 1/4 or 1/8 of their size by libjpeg's DCT
    /// scaling: the smaller image is never decoded in full.
    case reducedJPEG = "reduced-jpeg"

    /// For people.
    public var title: String {
        switch self {
        case .storedLevel: return "stored level as is"
        case .resize: return "full decode + libvips shrink"
        case .reducedJPEG: return "reduced-size JPEG decode"
        }
    }
}

/// Where one JPEG-compressed tiled TIFF page keeps its tiles, read from its directory.
struct JPEGTileLayout: Sendable {
    var width: Int
    var height: Int
    var tileWidth: Int
    var tileHeight: Int
    var offsets: [UInt64]
    var counts: [UInt64]
    /// The page's JPEGTables (quantisation and Huffman tables shared by its tiles); empty when each tile carries its own.
    var tables: [UInt8]
    /// Components stored as R, G, B (photometric RGB) rather than YCbCr.
    var rgbComponents: Bool

    var columns: Int { (width + tileWidth - 1) / tileWidth }
    var rows: Int { (height + tileHeight - 1) / tileHeight }

    /// The main-chain page of `path` that is `width` x `height`, when it is a tiled 8-bit RGB JPEG page;
    /// otherwise the reason it is not.
    static func find(path: String, width: Int, height: Int) -> Result<JPEGTileLayout, ScaledJPEGLevel.Unavailable> {
        guard let handle = FileHandle(forReadingAtPath: path) else { return .failure(.init("cannot open the file")) }
        defer { try? handle.close() }
        do {
            let size = try handle.seekToEnd()
            var reader = TIFFReader(handle: handle, fileSize: size)
            guard var offset = try reader.header() else { return .failure(.init("not a TIFF file")) }
            var visited = Set<UInt64>()
            while offset != 0, visited.insert(offset).inserted, visited.count < 256 {
                let (entries, next) = try reader.entries(at: offset)
                offset = next
                func first(_ tag: UInt16) throws(TIFFStructureError) -> UInt64? {
                    guard let entry = entries[tag], entry.count > 0 else { return nil }
                    return try reader.values(entry, from: 0, count: 1).first
                }
                guard try first(256) == UInt64(width), try first(257) == UInt64(height) else { continue }
                guard let offsetsEntry = entries[324], let countsEntry = entries[325],
                      let tileWidth = try first(322), let tileHeight = try first(323), tileWidth > 0, tileHeight > 0 else {
                    return .failure(.init("the level is stored in strips, not tiles"))
                }
                guard try first(259) == 7 else { return .failure(.init("the level's tiles are not JPEG (TIFF compression \(try first(259) ?? 1))")) }
                guard try first(277) == 3, try first(258) ?? 8 == 8, try first(284) ?? 1 == 1 else {
                    return .failure(.init("the level is not 8-bit interleaved RGB"))
                }
                let photometric = try first(262) ?? 6
                guard photometric == 2 || photometric == 6 else {
                    return .failure(.init("the level's photometric interpretation \(photometric) is neither RGB nor YCbCr"))
                }
                var layout = JPEGTileLayout(width: width, height: height, tileWidth: Int(tileWidth), tileHeight: Int(tileHeight),
                                            offsets: [], counts: [], tables: [], rgbComponents: photometric == 2)
                let tiles = UInt64(layout.columns * layout.rows)
                guard offsetsEntry.count >= tiles, countsEntry.count >= tiles else {
                    return .failure(.init("the tile tables hold fewer entries than the level has tiles"))
                }
                layout.offsets = try reader.values(offsetsEntry, from: 0, count: tiles)
                layout.counts = try reader.values(countsEntry, from: 0, count: tiles)
                if let tables = entries[347] { layout.tables = try reader.valueBytes(tables) }
                return .success(layout)
            }
            return .failure(.init("no TIFF page of \(width) x \(height)"))
        } catch {
            return .failure(.init("\(error)"))
        }
    }
}

/// Reads one JPEG-tiled TIFF level at 1/`denominator` of its size: each tile's compressed bytes
/// are read from the file and decoded by libjpeg at the reduced size (DCT scaling), which costs a
/// fraction of a full decode followed by a shrink. One instance per reader thread (own file
/// descriptor, decoder and cache of decoded tiles: memory is the cache, whatever the slide).
final class ScaledJPEGLevel: @unchecked Sendable {
    /// Why the route does not apply to a level.
    struct Unavailable: Error, Sendable, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    let layout: JPEGTileLayout
    let denominator: Int
    /// Decoded tile size.
    let tileWidth: Int
    let tileHeight: Int
    private let path: String
    private let descriptor: Int32
    private let decoder: OpaquePointer
    private var compressed: [UInt8] = []
    private var slots: [[UInt8]]
    private var keys: [Int]
    private var slotOf: [Int: Int] = [:]
    private var lastUse: [UInt64]
    private var clock: UInt64 = 0
    /// Why the last read failed.
    private(set) var failure: String?

    /// - Parameter cacheTiles: decoded tiles kept (the rows of tiles neighbouring patches share).
    init(path: String, layout: JPEGTileLayout, denominator: Int, cacheTiles: Int) throws(SlideError) {
        precondition(ReadPlan.shrinkDenominators.contains(denominator) && layout.tileWidth % denominator == 0 && layout.tileHeight % denominator == 0)
        self.path = path
        self.layout = layout
        self.denominator = denominator
        tileWidth = layout.tileWidth / denominator
        tileHeight = layout.tileHeight / denominator
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
        guard let decoder = tessera_jpeg_new() else {
            close(fd)
            throw .readFailed(path: path, reason: "out of memory for a JPEG decoder")
        }
        descriptor = fd
        self.decoder = decoder
        let capacity = max(8, cacheTiles)
        slots = Array(repeating: [], count: capacity)
        keys = Array(repeating: -1, count: capacity)
        lastUse = Array(repeating: 0, count: capacity)
        if !layout.tables.isEmpty {
            let status = layout.tables.withUnsafeBufferPointer { tessera_jpeg_load_tables(decoder, $0.baseAddress, $0.count) }
            // Every property is set: deinit frees the decoder and closes the file when this throws.
            guard status == 0 else { throw .unreadable(path: path, reason: "JPEG tables: " + String(cString: tessera_jpeg_error(decoder))) }
        }
    }

    deinit {
        tessera_jpeg_free(decoder)
        close(descriptor)
    }

    /// Width and height of the reduced image.
    var width: Int { (layout.width + denominator - 1) / denominator }
    var height: Int { (layout.height + denominator - 1) / denominator }

    /// The decoded tile at (column, row), from the cache or decoded now; nil (and `failure`) when it does not decode.
    private func tile(column: Int, row: Int) -> Int? {
        let key = row * layout.columns + column
        clock += 1
        if let slot = slotOf[key] {
            lastUse[slot] = clock
            return slot
        }
        var slot = 0
        for index in 1..<keys.count where lastUse[index] < lastUse[slot] { slot = index }
        if keys[slot] >= 0 { slotOf[keys[slot]] = nil }
        keys[slot] = -1
        let count = Int(layout.counts[key]), offset = layout.offsets[key]
        let pixels = tileWidth * tileHeight * 3
        if slots[slot].count != pixels { slots[slot] = [UInt8](repeating: 0, count: pixels) }
        guard count > 0, offset > 0 else {
            // A sparse tile (legal in TIFF): what readers show there is white.
            slots[slot].withUnsafeMutableBufferPointer { $0.update(repeating: 255) }
            keys[slot] = key
            slotOf[key] = slot
            lastUse[slot] = clock
            return slot
        }
        if compressed.count < count { compressed = [UInt8](repeating: 0, count: count) }
        let got = compressed.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, count, off_t(offset)) }
        guard got == count else {
            failure = "tile \(column),\(row): read \(max(0, got)) of \(count) bytes"
            return nil
        }
        let (w, h, d, rgbComponents) = (tileWidth, tileHeight, denominator, layout.rgbComponents)
        let status = compressed.withUnsafeBufferPointer { source in
            slots[slot].withUnsafeMutableBufferPointer { target in
                tessera_jpeg_decode(decoder, source.baseAddress, count, Int32(d), rgbComponents ? 1 : 0,
                                    target.baseAddress, w * 3, Int32(w), Int32(h))
            }
        }
        guard status == 0 else {
            failure = "tile \(column),\(row): " + String(cString: tessera_jpeg_error(decoder))
            return nil
        }
        keys[slot] = key
        slotOf[key] = slot
        lastUse[slot] = clock
        return slot
    }

    /// Calls `body(row pixels, line, left, count)` for each run of a row of the rectangle
    /// (reduced-image coordinates, inside the image) that one decoded tile holds.
    private func segments(x: Int, y: Int, width: Int, height: Int,
                          _ body: (UnsafePointer<UInt8>, Int, Int, Int) -> Void) -> Bool {
        guard x >= 0, y >= 0, width > 0, height > 0, x + width <= self.width, y + height <= self.height else {
            failure = "rectangle \(x),\(y) \(width)x\(height) outside the \(self.width)x\(self.height) image"
            return false
        }
        for row in (y / tileHeight)...((y + height - 1) / tileHeight) {
            let top = max(y, row * tileHeight), bottom = min(y + height, (row + 1) * tileHeight)
            for column in (x / tileWidth)...((x + width - 1) / tileWidth) {
                guard let slot = tile(column: column, row: row) else { return false }
                let left = max(x, column * tileWidth), right = min(x + width, (column + 1) * tileWidth)
                slots[slot].withUnsafeBufferPointer { source in
                    for line in top..<bottom {
                        body(source.baseAddress! + ((line - row * tileHeight) * tileWidth + (left - column * tileWidth)) * 3,
                             line, left, right - left)
                    }
                }
            }
        }
        return true
    }

    /// Copies the rectangle (reduced-image coordinates, inside the image) as packed RGB.
    func readRGB(x: Int, y: Int, width: Int, height: Int, into destination: UnsafeMutablePointer<UInt8>) -> Bool {
        segments(x: x, y: y, width: width, height: height) { source, line, left, count in
            (destination + ((line - y) * width + (left - x)) * 3).update(from: source, count: count * 3)
        }
    }

    /// As `readRGB`, as normalised floats `(p / 255 - mean) / std`, planar (CHW) or interleaved (HWC).
    func readFloat(x: Int, y: Int, width: Int, height: Int, mean: [Float], std: [Float], planar: Bool,
                   into destination: UnsafeMutablePointer<Float>) -> Bool {
        let scale = (0..<3).map { 1 / (255 * std[$0]) }, bias = (0..<3).map { -mean[$0] / std[$0] }
        let plane = width * height
        return scale.withUnsafeBufferPointer { s in
            bias.withUnsafeBufferPointer { b in
                segments(x: x, y: y, width: width, height: height) { source, line, left, count in
                    let offset = (line - y) * width + (left - x)
                    tessera_rgb8_row_f32(source, Int32(count), s.baseAddress, b.baseAddress, planar ? 1 : 0, plane,
                                         destination + (planar ? offset : 3 * offset))
                }
            }
        }
    }
}

extension Slide {
    /// Whether the reduced-size JPEG route can read `plan`'s level at its scale, and the layout if so.
    func reducedJPEGLayout(for plan: ReadPlan) -> Result<(layout: JPEGTileLayout, denominator: Int), ScaledJPEGLevel.Unavailable> {
        guard let denominator = plan.shrinkDenominator else {
            return .failure(.init(String(format: "the scale %.3f is not 1/2, 1/4 or 1/8", plan.scale)))
        }
        switch backend {
        case .tiffPages: break
        case .openslide where ["aperio", "generic-tiff"].contains(properties.vendor): break
        default: return .failure(.init("\(properties.vendor) slides are not read tile by tile from their TIFF pages"))
        }
        let level = properties.levels[plan.level]
        switch JPEGTileLayout.find(path: properties.path, width: level.width, height: level.height) {
        case .failure(let reason): return .failure(reason)
        case .success(let layout):
            guard layout.tileWidth % denominator == 0, layout.tileHeight % denominator == 0 else {
                return .failure(.init("tiles of \(layout.tileWidth) x \(layout.tileHeight) px do not divide by \(denominator)"))
            }
            return .success((layout, denominator))
        }
    }
}
