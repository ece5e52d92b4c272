import CVipsShims
import CVips
import Foundation

/// A picture for people: packed 8-bit RGB pixels that callers draw rectangles into, plus text
/// that libvips renders (`vips_text`, needs fonts) and composites on save.
public struct Picture: Sendable {
    /// One piece of text to paint.
    public struct Text: Sendable {
        public var text: String
        public var x: Int
        public var y: Int
        public var colour: (UInt8, UInt8, UInt8)
        /// A Pango font description, e.g. `DejaVu Sans Bold 14` (size in pixels at 72 dpi).
        public var font: String
        /// Wrap at this many pixels; 0 = one line.
        public var wrap: Int

        public init(_ text: String, x: Int, y: Int, colour: (UInt8, UInt8, UInt8) = (20, 20, 20),
                    font: String = Picture.font, wrap: Int = 0) {
            self.text = text
            self.x = x
            self.y = y
            self.colour = colour
            self.font = font
            self.wrap = wrap
        }

        /// The text as Pango markup.
        var markup: String { Picture.markup(text) }
    }

    /// vips_text reads Pango markup: the text with `&`, `<` and `>` escaped, so names show as they are.
    static func markup(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }

    /// The default font: DejaVu Sans (Debian's `fonts-dejavu-core`), 13 px.
    public static let font = "DejaVu Sans 13"

    public let width: Int
    public let height: Int
    /// width * height * 3 bytes, row-major RGB.
    public var pixels: [UInt8]
    public private(set) var texts: [Text] = []

    /// A picture filled with one colour.
    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (255, 255, 255)) {
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: fill.0, count: width * height * 3)
        if fill.0 != fill.1 || fill.0 != fill.2 { self.fill(x: 0, y: 0, width: width, height: height, colour: fill) }
    }

    /// Copies packed RGB `source` (sourceWidth x sourceHeight) with its top left at (x, y).
    public mutating func paste(_ source: [UInt8], width sourceWidth: Int, height sourceHeight: Int, x: Int, y: Int) {
        for row in 0..<sourceHeight where y + row >= 0 && y + row < height {
            let columns = max(0, min(sourceWidth, width - x))
            guard x >= 0, columns > 0 else { continue }
            let from = 3 * row * sourceWidth, to = 3 * ((y + row) * width + x)
            pixels.replaceSubrange(to..<(to + 3 * columns), with: source[from..<(from + 3 * columns)])
        }
    }

    /// Fills a rectangle (clipped to the picture).
    public mutating func fill(x: Int, y: Int, width w: Int, height h: Int, colour: (UInt8, UInt8, UInt8)) {
        let columns = max(0, x)..<min(width, x + w)
        guard !columns.isEmpty else { return }
        let width = self.width
        pixels.withUnsafeMutableBufferPointer { buffer in
            for row in max(0, y)..<min(height, y + h) {
                var index = 3 * (row * width + columns.lowerBound)
                for _ in columns {
                    buffer[index] = colour.0
                    buffer[index + 1] = colour.1
                    buffer[index + 2] = colour.2
                    index += 3
                }
            }
        }
    }

    /// Adds text, painted when the picture is saved.
    public mutating func add(_ text: Text) { texts.append(text) }

    /// The size `text` takes when rendered.
    public static func size(of text: Text) throws(SlideError) -> (width: Int, height: Int) {
        try VipsRuntime.ensure()
        guard let mask = tessera_vips_text(text.markup, text.font, Int32(text.wrap)) else {
            throw .invalidArgument("cannot render text: \(VipsRuntime.takeError() ?? "vips_text failed")")
        }
        let image = VipsImageRef(taking: mask)
        return (image.width, image.height)
    }

    /// Paints the texts through libvips (leaving out any libvips cannot render) and saves the
    /// picture as PNG.
    public func writePNG(to path: String) throws(SlideError) {
        try VipsRuntime.ensure()
        guard width > 0, height > 0, var image = VipsImageRef.fromPixels(pixels, width: width, height: height, bands: 3) else {
            throw .writeFailed(path: path, reason: "empty picture")
        }
        for text in texts where !text.text.isEmpty {
            // Without a usable font the picture is still worth having: the text is left out.
            guard let mask = tessera_vips_text(text.markup, text.font, Int32(text.wrap)).map(VipsImageRef.init(taking:)) else {
                _ = VipsRuntime.takeError()
                continue
            }
            guard let painted = tessera_vips_paint_mask(image.pointer, mask.pointer, Int32(text.x), Int32(text.y),
                                                        Double(text.colour.0), Double(text.colour.1),
                                                        Double(text.colour.2)) else {
                throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "text rendering failed")
            }
            image = VipsImageRef(taking: painted)
        }
        guard image.savePNG(to: path) else {
            throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "PNG encoding failed")
        }
    }

    /// Reads a PNG (or any image libvips opens) back as packed RGB, for checks.
    public static func readRGB(path: String) throws(SlideError) -> Picture {
        try VipsRuntime.ensure()
        guard let image = VipsImageRef.file(path: path), let pixels = image.renderRGB() else {
            throw .unreadable(path: path, reason: VipsRuntime.takeError() ?? "libvips could not open it")
        }
        var picture = Picture(width: image.width, height: image.height)
        picture.pixels = pixels
        return picture
    }

    /// The pixel at (x, y).
    public func pixel(_ x: Int, _ y: Int) -> (UInt8, UInt8, UInt8) {
        let index = 3 * (y * width + x)
        return (pixels[index], pixels[index + 1], pixels[index + 2])
    }
}

/// Map images at slide geometry: one byte per pixel and band (class indices, probabilities),
/// saved by libvips as tiled pyramidal TIFFs with their pixel size, and read back.
public struct MapImage: Sendable {
    public let width: Int
    public let height: Int
    public let bands: Int
    /// width * height * bands bytes, interleaved.
    public var pixels: [UInt8]
    /// Microns per pixel (the TIFF resolution).
    public var mpp: Double?
    /// Pages in the file (pyramid levels), when read back.
    public var pages: Int = 1

    public init(width: Int, height: Int, bands: Int, mpp: Double?) {
        self.width = width
        self.height = height
        self.bands = bands
        self.mpp = mpp
        pixels = [UInt8](repeating: 0, count: width * height * bands)
    }

    /// Saves as a tiled pyramidal deflate TIFF; `nearest` keeps classes whole in the pyramid.
    public func writeTIFF(to path: String, nearest: Bool) throws(SlideError) {
        try VipsRuntime.ensure()
        guard width > 0, height > 0, let image = VipsImageRef.fromPixels(pixels, width: width, height: height, bands: bands) else {
            throw .writeFailed(path: path, reason: "empty map")
        }
        try Self.save(image, mpp: mpp, to: path, nearest: nearest)
    }

    /// The map TIFF of an image: pixel size in the resolution tags, pyramid, tiles, deflate.
    private static func save(_ image: VipsImageRef, mpp: Double?, to path: String, nearest: Bool) throws(SlideError) {
        let perMM = mpp.map { 1000 / $0 } ?? 1
        guard tessera_vips_tiffsave_map(image.pointer, path, perMM, perMM, nearest ? 1 : 0) == 0 else {
            throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "TIFF encoding failed")
        }
    }

    /// Saves as PNG (any band count: 4 bands is RGBA).
    public func writePNG(to path: String) throws(SlideError) {
        try VipsRuntime.ensure()
        guard width > 0, height > 0, let image = VipsImageRef.fromPixels(pixels, width: width, height: height, bands: bands),
              image.savePNG(to: path) else {
            throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "PNG encoding failed")
        }
    }

    /// Saves a headerless one-byte-per-pixel file (`width` x `height` x `bands`, row after row)
    /// as a map TIFF like ``writeTIFF(to:nearest:)``, streaming it from disk: the map is never
    /// held in memory whole.
    public static func writeTIFF(rawFile: String, width: Int, height: Int, bands: Int, mpp: Double?,
                                 to path: String, nearest: Bool) throws(SlideError) {
        try VipsRuntime.ensure()
        guard width > 0, height > 0, let raw = tessera_vips_rawload(rawFile, Int32(width), Int32(height), Int32(bands)) else {
            throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "empty map")
        }
        try save(VipsImageRef(taking: raw), mpp: mpp, to: path, nearest: nearest)
    }

    /// Reads page 0 of a map TIFF back with its resolution and page count.
    public static func read(path: String) throws(SlideError) -> MapImage {
        try VipsRuntime.ensure()
        guard let image = VipsImageRef.tiffPage(path: path, page: 0) else {
            throw .unreadable(path: path, reason: VipsRuntime.takeError() ?? "libvips could not open it")
        }
        var map = MapImage(width: image.width, height: image.height, bands: image.bands,
                           mpp: image.xres > 0 ? 1000 / image.xres : nil)
        guard let bytes = image.renderBytes() else {
            throw .readFailed(path: path, reason: VipsRuntime.takeError() ?? "decode failed")
        }
        map.pixels = bytes
        map.pages = image.int("n-pages") ?? 1
        return map
    }
}

/// Deep-zoom tiles of a slide for the browser viewer: level `maxLevel` is full resolution,
/// each level below halves it, tiles are `tileSize` squares (edge tiles padded white) encoded
/// as JPEG. Each tile is read from the coarsest pyramid level that still has the detail.
public struct DeepZoom: Sendable {
    public let slide: Slide
    public let tileSize: Int
    public let quality: Int

    public init(slide: Slide, tileSize: Int = 256, quality: Int = 80) {
        self.slide = slide
        self.tileSize = tileSize
        self.quality = quality
    }

    /// The full-resolution level: ceil(log2(max side)).
    public var maxLevel: Int {
        let side = max(slide.properties.width, slide.properties.height)
        var level = 0
        while (1 << level) < side { level += 1 }
        return level
    }

    /// Tile columns and rows at a deep-zoom level.
    public func grid(level: Int) -> (columns: Int, rows: Int) {
        let scale = Double(1 << (maxLevel - level))
        let width = (Double(slide.properties.width) / scale).rounded(.up)
        let height = (Double(slide.properties.height) / scale).rounded(.up)
        return (Int((width / Double(tileSize)).rounded(.up)), Int((height / Double(tileSize)).rounded(.up)))
    }

    /// The JPEG of one tile.
    /// - Throws: `SlideError.invalidArgument` for a tile outside the image.
    public func tile(level: Int, column: Int, row: Int) throws(SlideError) -> Data {
        guard level >= 0, level <= maxLevel, column >= 0, row >= 0 else {
            throw .invalidArgument("no deep-zoom tile \(level)/\(column)/\(row)")
        }
        let (columns, rows) = grid(level: level)
        guard column < columns, row < rows else { throw .invalidArgument("no deep-zoom tile \(level)/\(column)/\(row)") }
        let factor = Double(1 << (maxLevel - level))
        // Level-0 rectangle of the tile, clipped to the slide.
        let x0 = Double(column * tileSize) * factor, y0 = Double(row * tileSize) * factor
        let x1 = min(Double(slide.properties.width), x0 + Double(tileSize) * factor)
        let y1 = min(Double(slide.properties.height), y0 + Double(tileSize) * factor)
        var chosen = 0
        for (index, candidate) in slide.properties.levels.enumerated()
        where candidate.downsample <= factor * 1.01 && candidate.downsample > slide.properties.levels[chosen].downsample {
            chosen = index
        }
        let source = slide.properties.levels[chosen]
        let image = try slide.openLevel(chosen)
        let left = min(source.width - 1, Int(x0 / source.downsample))
        let top = min(source.height - 1, Int(y0 / source.downsample))
        let width = max(1, min(source.width - left, Int((x1 / source.downsample).rounded(.up)) - left))
        let height = max(1, min(source.height - top, Int((y1 / source.downsample).rounded(.up)) - top))
        let outWidth = max(1, min(tileSize, Int(((x1 - x0) / factor).rounded())))
        let outHeight = max(1, min(tileSize, Int(((y1 - y0) / factor).rounded())))
        var buffer: UnsafeMutableRawPointer?
        var length = 0
        guard tessera_vips_render_tile(image.pointer, Int32(left), Int32(top), Int32(width), Int32(height),
                                       Int32(outWidth), Int32(outHeight), Int32(tileSize), Int32(quality),
                                       &buffer, &length) == 0, let buffer else {
            throw .readFailed(path: slide.properties.path, reason: VipsRuntime.takeError() ?? "tile rendering failed")
        }
        defer { tessera_free(buffer) }
        return Data(bytes: buffer, count: length)
    }
}

extension VipsImageRef {
    /// All pixels as bytes, bands interleaved (`vips_image_write_to_memory`). Only for small images.
    func renderBytes() -> [UInt8]? {
        var size = 0
        guard let memory = vips_image_write_to_memory(pointer, &size) else { return nil }
        defer { tessera_free(memory) }
        return [UInt8](UnsafeRawBufferPointer(start: memory, count: size))
    }

    /// An integer metadata field (`vips_image_get_int`), or nil when absent.
    func int(_ name: String) -> Int? {
        guard hasField(name) else { return nil }
        var value: Int32 = 0
        return vips_image_get_int(pointer, name, &value) == 0 ? Int(value) : nil
    }
}
