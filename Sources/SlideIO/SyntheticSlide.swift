import CVipsShims
import Foundation

/// Writes realistic-looking test slides: a tissue texture (real tissue cut from a slide, or a
/// generated H&E-like texture) tiled over a large canvas inside a few tissue islands with white
/// margins, saved as a tiled pyramidal JPEG TIFF at a given MPP. libvips streams the whole
/// pipeline, so memory stays small whatever the size.
public enum SyntheticSlide {
    /// Writes a `width` x `height` slide to `path`.
    /// - Parameters:
    ///   - texturePath: a slide whose level 0 (up to 4096 px square from its centre) gives the texture;
    ///     nil generates one.
    ///   - mpp: microns per pixel recorded in the TIFF resolution tags.
    ///   - tissueFraction: approximate share of the canvas covered by tissue islands.
    public static func write(to path: String, width: Int, height: Int, texturePath: String? = nil,
                             mpp: Double = 0.5, tissueFraction: Double = 0.45, seed: UInt64 = 1,
                             quality: Int = 85) throws(SlideError) {
        let (texture, maskImage) = try ingredients(path: path, width: width, height: height, texturePath: texturePath,
                                                   tissueFraction: tissueFraction, seed: seed)
        let temporary = path + ".partial.tif"
        let status = tessera_vips_write_synthetic_slide(texture.pointer, maskImage.pointer, Int32(width), Int32(height),
                                                        1000 / mpp, temporary, Int32(quality), 1)
        guard status == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "tiffsave failed")
        }
        try replace(path, with: temporary)
    }

    /// Writes the same kind of slide as an Aperio-style SVS, as a scanner would: JPEG tiles of
    /// 256 px, pyramid levels at `downsamples` of the full size (Aperio scanners store 1, 4, 16),
    /// and an Aperio description carrying `magnification` (AppMag) and `mpp` (MPP), which is where
    /// OpenSlide finds the pixel size.
    public static func writeAperio(to path: String, width: Int, height: Int, texturePath: String? = nil,
                                   mpp: Double = 0.25, magnification: Int = 40, downsamples: [Int] = [1, 4, 16],
                                   tissueFraction: Double = 0.45, seed: UInt64 = 1, quality: Int = 85) throws(SlideError) {
        guard downsamples.first == 1, zip(downsamples, downsamples.dropFirst()).allSatisfy({ $0 < $1 && $1 % $0 == 0 }) else {
            throw .invalidArgument("pyramid downsamples must start at 1 and each divide the next")
        }
        let (texture, maskImage) = try ingredients(path: path, width: width, height: height, texturePath: texturePath,
                                                   tissueFraction: tissueFraction, seed: seed)
        let pages = downsamples.map { path + ".partial-\($0).tif" }
        defer { for page in pages { try? FileManager.default.removeItem(atPath: page) } }
        // Level 0 from the texture; each coarser level shrunk from the one before (decoding is cheaper than recomputing).
        for index in pages.indices where width / downsamples[index] >= 1 && height / downsamples[index] >= 1 {
            let status = index == 0
                ? tessera_vips_write_synthetic_slide(texture.pointer, maskImage.pointer, Int32(width), Int32(height),
                                                     1000 / mpp, pages[0], Int32(quality), 0)
                : tessera_vips_shrink_tiff(pages[index - 1], Int32(downsamples[index] / downsamples[index - 1]), pages[index],
                                           Int32(quality))
            guard status == 0 else { throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "tiffsave failed") }
        }
        let description = "Aperio Image Library (Tessera synthetic slide)\r\n\(width)x\(height) (256x256) JPEG/RGB Q=\(quality)"
            + "|AppMag = \(magnification)|MPP = \(mpp)|ScanScope ID = tessera-synthetic"
        let temporary = path + ".partial.svs"
        do {
            try SVSAssembler.assemble(levels: pages.filter { FileManager.default.fileExists(atPath: $0) },
                                      description: description, to: temporary)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        try replace(path, with: temporary)
    }

    /// The texture and the tissue-island mask of a slide.
    private static func ingredients(path: String, width: Int, height: Int, texturePath: String?, tissueFraction: Double,
                                    seed: UInt64) throws(SlideError) -> (VipsImageRef, VipsImageRef) {
        try VipsRuntime.ensure()
        guard width >= 64, height >= 64 else { throw .invalidArgument("synthetic slides are at least 64 x 64") }
        let texture = try makeTexture(from: texturePath, seed: seed)
        let maskSide = 256
        let mask = islands(width: maskSide, height: maskSide * height / width + 1, fraction: tissueFraction, seed: seed)
        guard let maskImage = VipsImageRef.fromPixels(mask.pixels, width: mask.width, height: mask.height, bands: 1) else {
            throw .writeFailed(path: path, reason: VipsRuntime.takeError() ?? "mask")
        }
        return (texture, maskImage)
    }

    private static func replace(_ path: String, with temporary: String) throws(SlideError) {
        do {
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(atPath: temporary, toPath: path)
        } catch {
            throw .writeFailed(path: path, reason: "\(error)")
        }
    }

    private static func makeTexture(from texturePath: String?, seed: UInt64) throws(SlideError) -> VipsImageRef {
        if let texturePath {
            let slide = try Slide.open(path: texturePath)
            let image = try slide.openLevel(0)
            // The most tissue-rich window of the source, found on its tissue mask.
            let mask = try slide.detectTissue()
            let w = min(1024, image.width), h = min(1024, image.height)
            var best = (fraction: -1.0, x: 0, y: 0)
            for y in stride(from: 0, through: image.height - h, by: max(1, h / 8)) {
                for x in stride(from: 0, through: image.width - w, by: max(1, w / 8)) {
                    let fraction = mask.fraction(x: Double(x), y: Double(y), width: Double(w), height: Double(h))
                    if fraction > best.fraction { best = (fraction, x, y) }
                }
            }
            let left = best.x, top = best.y
            guard let region = VipsRegionRef(image: image) else {
                throw .readFailed(path: texturePath, reason: VipsRuntime.takeError() ?? "region")
            }
            var pixels = [UInt8](repeating: 0, count: w * h * 3)
            let ok = pixels.withUnsafeMutableBufferPointer {
                region.readRGB(x: left, y: top, width: w, height: h, into: $0.baseAddress!)
            }
            guard ok, let texture = VipsImageRef.fromPixels(pixels, width: w, height: h, bands: 3) else {
                throw .readFailed(path: texturePath, reason: VipsRuntime.takeError() ?? "texture")
            }
            return texture
        }
        let side = 1024
        let pixels = generatedTissue(side: side, seed: seed)
        guard let texture = VipsImageRef.fromPixels(pixels, width: side, height: side, bands: 3) else {
            throw .writeFailed(path: "texture", reason: VipsRuntime.takeError() ?? "texture")
        }
        return texture
    }

    /// An H&E-like texture: pink stroma with fibres, purple nuclei, a few pale gaps. Tileable.
    static func generatedTissue(side: Int, seed: UInt64) -> [UInt8] {
        var random = SplitMix(seed: seed)
        var pixels = [UInt8](repeating: 0, count: side * side * 3)
        for y in 0..<side {
            for x in 0..<side {
                let fibre = sin(Double(x + 2 * y) * 0.05) * 0.5 + sin(Double(3 * x - y) * 0.021) * 0.5
                let noise = Double(random.next() % 24)
                let index = 3 * (y * side + x)
                pixels[index] = UInt8(clamping: Int(228 + 14 * fibre - noise))
                pixels[index + 1] = UInt8(clamping: Int(150 + 30 * fibre - noise))
                pixels[index + 2] = UInt8(clamping: Int(190 + 16 * fibre - noise))
            }
        }
        func disc(_ cx: Int, _ cy: Int, _ radius: Int, _ colour: (Int, Int, Int)) {
            for dy in -radius...radius {
                for dx in -radius...radius where dx * dx + dy * dy <= radius * radius {
                    let x = (cx + dx + side) % side, y = (cy + dy + side) % side
                    let index = 3 * (y * side + x)
                    let shade = Int(random.next() % 20)
                    pixels[index] = UInt8(clamping: colour.0 + shade)
                    pixels[index + 1] = UInt8(clamping: colour.1 + shade)
                    pixels[index + 2] = UInt8(clamping: colour.2 + shade)
                }
            }
        }
        for _ in 0..<(side * side / 3000) {
            disc(Int(random.next() % UInt64(side)), Int(random.next() % UInt64(side)), 10 + Int(random.next() % 14),
                 (246, 236, 244))
        }
        for _ in 0..<(side * side / 160) {
            disc(Int(random.next() % UInt64(side)), Int(random.next() % UInt64(side)), 3 + Int(random.next() % 4),
                 (88, 52, 140))
        }
        return pixels
    }

    /// A small mask (255 = tissue) of a few elliptical islands covering about `fraction` of it.
    static func islands(width: Int, height: Int, fraction: Double, seed: UInt64) -> (pixels: [UInt8], width: Int, height: Int) {
        var random = SplitMix(seed: seed ^ 0x5EED)
        var pixels = [UInt8](repeating: 0, count: width * height)
        let count = 3
        let target = fraction * Double(width * height) / Double(count)
        for island in 0..<count {
            let rx = sqrt(target / Double.pi * 1.4), ry = sqrt(target / Double.pi / 1.4)
            let cx = Double(width) * (Double(island) + 0.5) / Double(count) + Double(Int(random.next() % 9) - 4)
            let cy = Double(height) * (0.35 + 0.3 * Double(random.next() % 100) / 100)
            for y in 0..<height {
                for x in 0..<width {
                    let dx = (Double(x) - cx) / rx, dy = (Double(y) - cy) / ry
                    let wobble = 1 + 0.12 * sin(atan2(dy, dx) * 5 + Double(island))
                    if dx * dx + dy * dy <= wobble * wobble { pixels[y * width + x] = 255 }
                }
            }
        }
        return (pixels, width, height)
    }
}

/// Small deterministic generator (SplitMix64): the same seed gives the same sequence everywhere.
public struct SplitMix: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
