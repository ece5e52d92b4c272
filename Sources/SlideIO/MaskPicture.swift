/// Renders a tissue mask for people: the thumbnail with tissue tinted green, kept tiles outlined
/// in blue, saved as PNG.
public enum MaskPicture {
    /// Writes the picture to `path`.
    public static func write(mask: TissueMask, grid: TileGrid?, to path: String) throws(SlideError) {
        try VipsRuntime.ensure()
        var pixels = mask.thumbnail
        for index in 0..<(mask.width * mask.height) where mask.pixels[index] == 1 {
            pixels[3 * index] = UInt8((Int(pixels[3 * index]) * 3) / 4)
            pixels[3 * index + 1] = UInt8((Int(pixels[3 * index + 1]) * 3 + 255) / 4)
            pixels[3 * index + 2] = UInt8((Int(pixels[3 * index + 2]) * 3) / 4)
        }
        // Outline of the tissue in dark green.
        for y in 1..<max(1, mask.height - 1) {
            for x in 1..<max(1, mask.width - 1) where mask.pixels[y * mask.width + x] == 1 {
                let edge = mask.pixels[y * mask.width + x - 1] == 0 || mask.pixels[y * mask.width + x + 1] == 0
                    || mask.pixels[(y - 1) * mask.width + x] == 0 || mask.pixels[(y + 1) * mask.width + x] == 0
                if edge { set(&pixels, mask.width, x, y, (0, 110, 0)) }
            }
        }
        if let grid {
            for tile in grid.tiles {
                let rect = grid.levelZeroRect(of: tile)
                let x0 = Int(rect.x / mask.downsampleX), y0 = Int(rect.y / mask.downsampleY)
                let x1 = min(mask.width - 1, Int((rect.x + rect.width) / mask.downsampleX))
                let y1 = min(mask.height - 1, Int((rect.y + rect.height) / mask.downsampleY))
                guard x0 <= x1, y0 <= y1 else { continue }
                for x in x0...x1 {
                    set(&pixels, mask.width, x, y0, (30, 60, 220))
                    set(&pixels, mask.width, x, y1, (30, 60, 220))
                }
                for y in y0...y1 {
                    set(&pixels, mask.width, x0, y, (30, 60, 220))
                    set(&pixels, mask.width, x1, y, (30, 60, 220))
                }
            }
        }
        guard let image = VipsImageRef.fromPixels(pixels, width: mask.width, height: mask.height, bands: 3),
              image.savePNG(to: path) else {
            throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "PNG encoding failed")
        }
    }

    private static func set(_ pixels: inout [UInt8], _ width: Int, _ x: Int, _ y: Int, _ colour: (UInt8, UInt8, UInt8)) {
        let index = 3 * (y * width + x)
        guard index >= 0, index + 2 < pixels.count else { return }
        pixels[index] = colour.0
        pixels[index + 1] = colour.1
        pixels[index + 2] = colour.2
    }
}

/// Writes packed 8-bit RGB pixels as a PNG file.
public enum PNGFile {
    /// Encodes `pixels` (width * height * 3 bytes) to `path` through libvips.
    public static func write(rgb pixels: [UInt8], width: Int, height: Int, to path: String) throws(SlideError) {
        try VipsRuntime.ensure()
        guard width > 0, height > 0, pixels.count == width * height * 3 else {
            throw .invalidArgument("PNG of \(width) x \(height) needs \(width * height * 3) bytes, got \(pixels.count)")
        }
        guard let image = VipsImageRef.fromPixels(pixels, width: width, height: height, bands: 3),
              image.savePNG(to: path) else {
            throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "PNG encoding failed")
        }
    }
}
