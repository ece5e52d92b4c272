import Foundation

/// One pyramid level of a slide.
public struct SlideLevel: Sendable, Equatable, Codable {
    /// Width in pixels.
    public var width: Int
    /// Height in pixels.
    public var height: Int
    /// Level-0 pixels per pixel of this level.
    public var downsample: Double

    public init(width: Int, height: Int, downsample: Double) {
        self.width = width
        self.height = height
        self.downsample = downsample
    }
}

/// Where a slide's microns-per-pixel came from.
public enum MPPSource: String, Sendable, Codable {
    /// OpenSlide's `openslide.mpp-x` / `mpp-y` properties.
    case openslide
    /// TIFF XResolution / YResolution with a centimetre or inch unit.
    case tiffResolution = "tiff-resolution"
    /// The `MPP = ...` field of an Aperio ImageDescription.
    case aperioDescription = "aperio-description"
    /// Given by the user.
    case override
    /// Not known.
    case unknown
}

/// What a slide is: size, pyramid, pixel size, scanner facts. Never includes free-text
/// descriptions or label/macro pixels (they can carry patient identifiers), only names.
public struct SlideProperties: Sendable, Equatable {
    /// The path the slide was opened from.
    public var path: String
    /// The libvips loader that reads it (`openslideload`, `tiffload`, ...).
    public var loader: String
    /// Scanner vendor or container format (`aperio`, `hamamatsu`, `generic-tiff`, ...).
    public var vendor: String
    /// Level-0 width in pixels.
    public var width: Int { levels[0].width }
    /// Level-0 height in pixels.
    public var height: Int { levels[0].height }
    /// Pyramid levels, finest first; level 0 is full resolution.
    public var levels: [SlideLevel]
    /// Microns per pixel at level 0, horizontally; nil when unknown.
    public var mppX: Double?
    /// Microns per pixel at level 0, vertically; nil when unknown.
    public var mppY: Double?
    /// Where the MPP came from.
    public var mppSource: MPPSource
    /// Scanner objective magnification (e.g. 20), when recorded.
    public var objectivePower: Double?
    /// Names of associated images (label, macro, thumbnail...): names only, never pixels.
    public var associatedImages: [String]
}

/// An opened whole-slide image. Immutable and Sendable: pixel access opens its own
/// libvips handles per reader, so a `Slide` can be shared across threads.
public final class Slide: Sendable {
    /// The slide's properties.
    public let properties: SlideProperties
    let backend: Backend

    enum Backend: Sendable, Equatable {
        /// OpenSlide levels 0..<n.
        case openslide
        /// TIFF pages that form the pyramid, finest first.
        case tiffPages([Int])
        /// Any other single-image format libvips reads.
        case single
    }

    init(properties: SlideProperties, backend: Backend) {
        self.properties = properties
        self.backend = backend
    }

    /// Opens a slide and reads its properties. `mppOverride` replaces (or supplies) the pixel size.
    /// The file's structure is checked first (`SlideCheck`): a truncated TIFF-family file, or one
    /// declaring more pixels than `limits` allow, is refused before any decoder sees it.
    /// - Throws: `SlideError` with a one-line reason.
    public static func open(path: String, mppOverride: Double? = nil, limits: SlideLimits = SlideLimits()) throws(SlideError) -> Slide {
        try VipsRuntime.ensure()
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw .notFound(path: path)
        }
        if let override = mppOverride, !(override > 0 && override.isFinite) {
            throw .invalidArgument("--slide-mpp must be a positive number of microns per pixel")
        }
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw .unreadable(path: path, reason: "permission denied")
        }
        try SlideCheck.check(path: path, limits: limits)
        // ImageMagick is blocked for untrusted input: treat what only it would read as unsupported.
        guard let loader = VipsRuntime.loaderName(for: path), loader != "magickload" else {
            throw .unsupportedFormat(path: path, reason: FileSniffer.describe(path: path))
        }
        var slide: Slide
        switch loader {
        case "openslideload":
            slide = try openOpenSlide(path: path)
        case "tiffload":
            slide = try openTIFF(path: path)
        default:
            slide = try openSingle(path: path, loader: loader)
        }
        // Formats the structure check does not read (MIRAX, plain images) are held to the limit by
        // the size their loader reports, before any pixel is decoded.
        let level0 = slide.properties.levels[0]
        if Int64(level0.width) * Int64(level0.height) > limits.maxPixels {
            throw .tooLarge(path: path, reason: SlideCheck.overLimit(width: UInt64(level0.width), length: UInt64(level0.height),
                                                                     page: 0, limits: limits))
        }
        if let override = mppOverride {
            var properties = slide.properties
            properties.mppX = override
            properties.mppY = override
            properties.mppSource = .override
            slide = Slide(properties: properties, backend: slide.backend)
        }
        try slide.validatePixels()
        return slide
    }

    /// Number of pyramid levels.
    public var levelCount: Int { properties.levels.count }

    /// Opens a fresh libvips handle on a level (each reader thread opens its own).
    func openLevel(_ level: Int) throws(SlideError) -> VipsImageRef {
        precondition(level >= 0 && level < levelCount, "level out of range")
        let path = properties.path
        let opened: VipsImageRef?
        switch backend {
        case .openslide:
            opened = VipsImageRef.openSlideLevel(path: path, level: level)
        case .tiffPages(let pages):
            opened = VipsImageRef.tiffPage(path: path, page: pages[level])
        case .single:
            opened = VipsImageRef.file(path: path)
        }
        guard let image = opened else {
            throw .unreadable(path: path, reason: VipsRuntime.takeError() ?? "libvips could not open level \(level)")
        }
        guard image.isUChar else {
            throw .unsupportedFormat(path: path, reason: "pixels are not 8-bit (\(image.bands) bands); "
                                     + "Tessera reads 8-bit RGB or greyscale slides")
        }
        return image
    }

    /// Reads one small patch of the coarsest level so a broken slide fails at open, not mid-job.
    private func validatePixels() throws(SlideError) {
        let level = levelCount - 1
        // Only where it is cheap: a single huge level (a strip TIFF) would be decoded whole to be
        // read at random; its job finds out in its contained analysis process instead.
        guard properties.levels[level].width * properties.levels[level].height <= 1 << 26 else { return }
        let image = try openLevel(level)
        guard let region = VipsRegionRef(image: image) else {
            throw .unreadable(path: properties.path, reason: VipsRuntime.takeError() ?? "no region")
        }
        let width = min(16, image.width), height = min(16, image.height)
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        let ok = pixels.withUnsafeMutableBufferPointer {
            region.readRGB(x: 0, y: 0, width: width, height: height, into: $0.baseAddress!)
        }
        if !ok {
            throw .readFailed(path: properties.path, reason: VipsRuntime.takeError() ?? "decode failed")
        }
    }
}
