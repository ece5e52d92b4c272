import Foundation

extension Slide {
    /// Opens through OpenSlide: levels, MPP, vendor, objective and associated image names
    /// come from the `openslide.*` properties.
    static func openOpenSlide(path: String) throws(SlideError) -> Slide {
        guard let image = VipsImageRef.openSlideLevel(path: path, level: 0) else {
            throw .unreadable(path: path, reason: VipsRuntime.takeError() ?? "OpenSlide could not open it")
        }
        let count = Int(image.double("openslide.level-count") ?? 1)
        var levels: [SlideLevel] = []
        for index in 0..<max(1, count) {
            let prefix = "openslide.level[\(index)]"
            guard let width = image.double("\(prefix).width"), let height = image.double("\(prefix).height") else {
                break
            }
            let downsample = image.double("\(prefix).downsample") ?? (Double(image.width) / width)
            levels.append(SlideLevel(width: Int(width), height: Int(height), downsample: downsample))
        }
        if levels.isEmpty {
            levels = [SlideLevel(width: image.width, height: image.height, downsample: 1)]
        }
        var mppX = image.double("openslide.mpp-x").flatMap(plausibleMPP)
        var mppY = image.double("openslide.mpp-y").flatMap(plausibleMPP)
        var source: MPPSource = mppX != nil ? .openslide : .unknown
        if mppX == nil, let (x, y) = resolutionMPP(image) {
            (mppX, mppY, source) = (x, y, .tiffResolution)
        }
        let associated = (image.string("slide-associated-images") ?? "")
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let properties = SlideProperties(
            path: path, loader: "openslideload",
            vendor: image.string("openslide.vendor") ?? "unknown",
            levels: levels, mppX: mppX, mppY: mppY ?? mppX, mppSource: source,
            objectivePower: image.double("openslide.objective-power"),
            associatedImages: associated)
        return Slide(properties: properties, backend: .openslide)
    }

    /// Opens a TIFF that OpenSlide does not claim (generic pyramidal TIFF, OME-TIFF, plain TIFF):
    /// consecutive pages that shrink form the pyramid; resolution tags or an Aperio
    /// description give the MPP.
    static func openTIFF(path: String) throws(SlideError) -> Slide {
        guard let first = VipsImageRef.tiffPage(path: path, page: 0) else {
            throw .unreadable(path: path, reason: VipsRuntime.takeError() ?? "not a readable TIFF")
        }
        let pageCount = Int(first.double("n-pages") ?? 1)
        var levels = [SlideLevel(width: first.width, height: first.height, downsample: 1)]
        var pages = [0]
        var previous = (first.width, first.height)
        if pageCount > 1 {
            for page in 1..<pageCount {
                guard let image = VipsImageRef.tiffPage(path: path, page: page) else {
                    _ = VipsRuntime.takeError()
                    break
                }
                // A pyramid level is smaller than the one before and keeps the aspect ratio.
                let smaller = image.width < previous.0 && image.height < previous.1
                let ratioX = Double(first.width) / Double(image.width)
                let ratioY = Double(first.height) / Double(image.height)
                guard smaller, abs(ratioX - ratioY) / ratioX < 0.05, image.bands == first.bands else { break }
                levels.append(SlideLevel(width: image.width, height: image.height, downsample: (ratioX + ratioY) / 2))
                pages.append(page)
                previous = (image.width, image.height)
            }
        }
        let description = first.string("image-description") ?? ""
        var vendor = "generic-tiff"
        if description.hasPrefix("Aperio") {
            vendor = "aperio"
        } else if description.contains("<OME") {
            vendor = "ome-tiff"
        }
        var mppX: Double?, mppY: Double?
        var source = MPPSource.unknown
        if let aperio = AperioDescription(description), let mpp = aperio.mpp.flatMap(plausibleMPP) {
            (mppX, mppY, source) = (mpp, mpp, .aperioDescription)
        } else if let (x, y) = resolutionMPP(first) {
            (mppX, mppY, source) = (x, y, .tiffResolution)
        }
        let properties = SlideProperties(
            path: path, loader: "tiffload", vendor: vendor, levels: levels,
            mppX: mppX, mppY: mppY, mppSource: source,
            objectivePower: AperioDescription(description)?.appMag,
            associatedImages: [])
        return Slide(properties: properties, backend: .tiffPages(pages))
    }

    /// Opens any other format libvips reads as a one-level slide.
    static func openSingle(path: String, loader: String) throws(SlideError) -> Slide {
        guard let image = VipsImageRef.file(path: path) else {
            throw .unreadable(path: path, reason: VipsRuntime.takeError() ?? "\(loader) could not open it")
        }
        let resolution = resolutionMPP(image)
        let vendor = loader.hasSuffix("load") ? String(loader.dropLast(4)) : loader
        let properties = SlideProperties(
            path: path, loader: loader, vendor: vendor,
            levels: [SlideLevel(width: image.width, height: image.height, downsample: 1)],
            mppX: resolution?.0, mppY: resolution?.1,
            mppSource: resolution == nil ? .unknown : .tiffResolution,
            objectivePower: nil, associatedImages: [])
        return Slide(properties: properties, backend: .single)
    }

    /// MPP from resolution metadata, only when a physical unit was recorded and the value is plausible
    /// (libvips reports 1 px/mm, or 72 dpi, when a file has no real resolution).
    private static func resolutionMPP(_ image: VipsImageRef) -> (Double, Double)? {
        guard image.hasField("resolution-unit"), image.xres > 0, image.yres > 0 else { return nil }
        guard let x = plausibleMPP(1000 / image.xres), let y = plausibleMPP(1000 / image.yres) else { return nil }
        return (x, y)
    }

    /// Whole-slide pixel sizes lie between 0.05 and 50 um; anything else is a placeholder.
    private static func plausibleMPP(_ value: Double) -> Double? {
        value.isFinite && value >= 0.05 && value <= 50 ? value : nil
    }
}

/// The few numeric fields of an Aperio ImageDescription that Tessera uses. The rest of
/// the description (which can name patients) is never kept.
struct AperioDescription {
    var mpp: Double?
    var appMag: Double?

    init?(_ text: String) {
        guard text.hasPrefix("Aperio") else { return nil }
        for field in text.split(separator: "|") {
            let parts = field.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "MPP": mpp = Double(parts[1])
            case "AppMag": appMag = Double(parts[1])
            default: break
            }
        }
    }
}

/// Names what a file is when libvips has no loader for it, for the error message.
enum FileSniffer {
    static func describe(path: String) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "unreadable file" }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 256)) ?? Data()
        if head.isEmpty { return "the file is empty" }
        if head.count >= 132, head[128..<132] == Data("DICM".utf8) {
            return "DICOM; this build's OpenSlide 3.4.1 has no DICOM support"
        }
        let bytes = [UInt8](head.prefix(4))
        if bytes.starts(with: [0x49, 0x49, 0x2A, 0x00]) || bytes.starts(with: [0x4D, 0x4D, 0x00, 0x2A])
            || bytes.starts(with: [0x49, 0x49, 0x2B, 0x00]) || bytes.starts(with: [0x4D, 0x4D, 0x00, 0x2B]) {
            return "a TIFF header but no readable image directory (truncated or corrupt?)"
        }
        if bytes.starts(with: [0xFF, 0xD8]) { return "a JPEG that libvips cannot decode" }
        let printable = head.allSatisfy { $0 == 9 || $0 == 10 || $0 == 13 || (32...126).contains($0) }
        return printable ? "a text file, not an image" : "unrecognised format"
    }
}
