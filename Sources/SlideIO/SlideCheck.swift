import Foundation

/// Limits a slide must keep before any pixel is decoded.
public struct SlideLimits: Sendable, Equatable {
    /// Most pixels a page (level, associated image) may declare: width x height. The default,
    /// 200,000 x 200,000, is several times a large 40x slide (about 100,000 x 80,000 px).
    public var maxPixels: Int64

    public static let defaultMaxPixels: Int64 = 40_000_000_000

    public init(maxPixels: Int64 = SlideLimits.defaultMaxPixels) {
        self.maxPixels = max(1, maxPixels)
    }
}

/// The cheap checks of a slide file before libvips or OpenSlide decode anything: for TIFF-family
/// files (TIFF, BigTIFF, SVS, NDPI under 4 GiB, SCN, BIF, QPTIFF, OME-TIFF) every directory and
/// every tile or strip table is read (never the pixels); the tables must point inside the file, and
/// every page's declared size must be under the pixel limit and plausible against the bytes that
/// hold it.
public enum SlideCheck {
    /// Highest compression ratio a page of real slide pixels reaches with each codec, even on blank
    /// glass, with a margin: deflate cannot go past about 1032:1, LZW about 1400:1, baseline JPEG
    /// and JPEG 2000 stay well below that (every 8x8 block or code-block costs bits). Codecs
    /// without such a ceiling (zstd, WebP, JPEG XL, unknown ones) only get a loose bound.
    static func maxRatio(compression: UInt64) -> Double {
        switch compression {
        case 1: return 2  // uncompressed: the bytes are the pixels (edge strips may be short)
        case 32773: return 200  // PackBits: at most 128 bytes from 2
        case 5, 6, 7, 8, 32946, 33003, 33004, 33005, 34712: return 10_000
        default: return 1_000_000
        }
    }

    /// Checks the file at `path`. Files that are not TIFF-family pass untouched (their size is
    /// checked after opening, from what the loader reports).
    /// - Throws: `SlideError.incomplete` (truncated or inconsistent tables) or `.tooLarge`
    ///   (over the pixel limit, or far more pixels than the file can hold).
    public static func check(path: String, limits: SlideLimits = SlideLimits()) throws(SlideError) {
        let ext = (path as NSString).pathExtension.lowercased()
        let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value ?? 0
        // NDPI past 4 GiB keeps 32-bit TIFF offsets with the high bits elsewhere: this reader would
        // misread its directories, so such files are left to OpenSlide (which knows the layout).
        if ext == "ndpi" && size >= 1 << 32 { return }
        let structure: TIFFStructure?
        do {
            structure = try TIFFStructure.read(path: path, maxPixels: UInt64(limits.maxPixels))
        } catch .tooManyPixels(let page, let width, let length) {
            throw .tooLarge(path: path, reason: overLimit(width: width, length: length, page: page, limits: limits))
        } catch {
            throw .incomplete(path: path, reason: error.description)
        }
        guard let structure else { return }
        try check(structure, path: path)
    }

    /// Whether a tile or strip begins as its codec's data does: JPEG with SOI (FF D8), JPEG 2000
    /// with SOC (FF 4F) or the JP2 signature box, deflate with a zlib header. Other codecs are not judged.
    static func looksWritten(_ head: [UInt8], compression: UInt64) -> Bool {
        guard head.count >= 2 else { return false }
        switch compression {
        case 7: return head[0] == 0xFF && head[1] == 0xD8
        case 33003, 33005: return (head[0] == 0xFF && head[1] == 0x4F) || head.starts(with: [0x00, 0x00, 0x00, 0x0C])
        case 8, 32946: return head[0] & 0x0F == 8 && (UInt16(head[0]) << 8 | UInt16(head[1])) % 31 == 0
        default: return true
        }
    }

    static func codecName(_ compression: UInt64) -> String {
        switch compression {
        case 7: return "JPEG"
        case 33003, 33005: return "JPEG 2000"
        case 8, 32946: return "deflate"
        default: return "compressed"
        }
    }

    /// The message of a page over the pixel limit.
    static func overLimit(width: UInt64, length: UInt64, page: Int, limits: SlideLimits) -> String {
        "declares \(width) x \(length) px\(page > 0 ? " (page \(page))" : ""), over the \(limits.maxPixels)-pixel limit (--max-slide-pixels)"
    }

    /// The table checks of a read structure.
    static func check(_ structure: TIFFStructure, path: String) throws(SlideError) {
        let file = ByteSize(structure.fileSize)
        for page in structure.pages where page.width > 0 && page.length > 0 && page.entries > 0 {
            let name = "page \(page.index) (\(page.width) x \(page.length) px)"
            let chunks = page.chunkName + "s"
            if page.beyondEnd > 0 {
                throw .incomplete(path: path, reason: "truncated: \(page.beyondEnd) of \(page.present) \(chunks) of \(name) "
                                  + "lie beyond the end of the file (file \(file), tables need \(ByteSize(page.tablesEnd)))")
            }
            if page.entries < page.chunksNeeded {
                throw .incomplete(path: path, reason: "damaged: the \(page.chunkName) table of \(name) has \(page.entries) entries, "
                                  + "the image needs \(page.chunksNeeded)")
            }
            guard page.present > 0 else { continue }
            // Uncompressed bytes of the present tiles or strips (sparse ones hold nothing to decode).
            let pixelBytes = Double(page.width) * Double(page.length) * Double(max(1, page.samplesPerPixel))
                * Double(max(1, page.bitsPerSample)) / 8
            let presentShare = Double(page.present) / Double(max(page.present, page.chunksNeeded))
            // Chunks that share bytes (all strips pointing at one row) hold no more than the file.
            let stored = min(page.presentBytes, structure.fileSize)
            let ratio = pixelBytes * presentShare / Double(max(1, stored))
            let limit = maxRatio(compression: page.compression)
            if ratio > limit {
                throw .tooLarge(path: path, reason: "\(name) declares \(ByteSize(UInt64(min(pixelBytes, 1.8e19)))) of pixels "
                                + "in \(ByteSize(stored)) of \(page.chunkName) data (\(Int(ratio.rounded())):1); "
                                + "real slides compress less than \(Int(limit)):1 with this codec (compression \(page.compression))")
            }
            // Space a writer reserved (the tables written first) but has not filled yet holds no codec data.
            for head in page.heads where !looksWritten(head.bytes, compression: page.compression) {
                let bytes = head.bytes.map { String(format: "%02X", $0) }.joined(separator: " ")
                throw .incomplete(path: path, reason: "not fully written: \(page.chunkName) \(head.index) of \(page.entries) of \(name) "
                                  + "holds no \(codecName(page.compression)) data (it begins \(bytes))")
            }
        }
    }
}
