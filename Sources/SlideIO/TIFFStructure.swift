import Foundation

/// The structure of a TIFF file (classic or BigTIFF) as its directories describe it: every page's
/// size and where its tiles or strips lie, read from the header, the directories and the offset
/// tables only (never pixel data). Memory stays small whatever the file: tables are streamed.
public struct TIFFStructure: Sendable, Equatable {
    /// One image file directory (a pyramid level, a SubIFD level, a label or macro image).
    public struct Page: Sendable, Equatable {
        /// Position in reading order: the main chain first, each page's SubIFDs right after it.
        public var index: Int
        /// Byte offset of the directory.
        public var offset: UInt64
        public var width: UInt64
        public var length: UInt64
        public var samplesPerPixel: UInt64
        /// Bits per sample (the first sample's; TIFF pages of slides use one depth for all).
        public var bitsPerSample: UInt64
        /// TIFF Compression tag (1 none, 5 LZW, 7 JPEG, 8 deflate, 33003/33005 JPEG 2000, ...).
        public var compression: UInt64
        /// Whether the pixels are in tiles (else strips).
        public var tiled: Bool
        /// Tile width and length, or image width and rows per strip.
        public var chunkWidth: UInt64
        public var chunkLength: UInt64
        /// Tiles or strips the image needs, from its size.
        public var chunksNeeded: UInt64
        /// Entries in the offset table (and the byte count table: the smaller of the two).
        public var entries: UInt64
        /// Entries whose offset and byte count are both non-zero (the rest are sparse: legal, read as empty).
        public var present: UInt64
        /// Bytes of the present tiles or strips.
        public var presentBytes: UInt64
        /// Present tiles or strips that end beyond the end of the file.
        public var beyondEnd: UInt64
        /// The furthest byte the tables point at (offset + byte count), 0 when none.
        public var tablesEnd: UInt64
        /// Whether it is a SubIFD of another page.
        public var isSubIFD: Bool
        /// The first bytes of a few present tiles or strips inside the file (about 16 spread over
        /// the table, and the last one), to tell data from space a writer reserved but has not filled.
        public var heads: [ChunkHead] = []

        /// `tile` or `strip`.
        public var chunkName: String { tiled ? "tile" : "strip" }
        /// Declared pixels (width x length), saturating.
        public var pixels: UInt64 { width.multipliedReportingOverflow(by: length).overflow ? .max : width * length }
    }

    /// The first bytes of one tile or strip.
    public struct ChunkHead: Sendable, Equatable {
        /// Its index in the table.
        public var index: UInt64
        /// Up to 4 bytes.
        public var bytes: [UInt8]
    }

    public var bigTIFF: Bool
    public var littleEndian: Bool
    public var fileSize: UInt64
    public var pages: [Page]
}

/// Why a TIFF's structure is not whole.
public enum TIFFStructureError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Something the file points at lies beyond its end: the file was cut short (or is still being written).
    case truncated(String)
    /// The structure contradicts itself.
    case damaged(String)
    /// A page declares more pixels than allowed (checked before its tables are read).
    case tooManyPixels(page: Int, width: UInt64, length: UInt64)

    public var description: String {
        switch self {
        case .truncated(let text): return "truncated: " + text
        case .damaged(let text): return "damaged: " + text
        case .tooManyPixels(let page, let width, let length): return "page \(page) declares \(width) x \(length) px"
        }
    }
}

extension TIFFStructure {
    /// Whether the bytes begin like a TIFF (`II*\0`, `MM\0*`, or BigTIFF's `II+\0`, `MM\0+`).
    public static func isTIFF(header bytes: Data) -> Bool {
        let b = [UInt8](bytes.prefix(4))
        return b.count == 4 && (b == [0x49, 0x49, 0x2A, 0x00] || b == [0x4D, 0x4D, 0x00, 0x2A]
                                || b == [0x49, 0x49, 0x2B, 0x00] || b == [0x4D, 0x4D, 0x00, 0x2B])
    }

    /// Reads the structure of the TIFF at `path`, or nil when the file is not a TIFF.
    /// - Parameters:
    ///   - maxPixels: a page declaring more pixels than this stops the reading (its tables are never read).
    ///   - followTables: false reads directories only (for files whose tables this reader cannot
    ///     interpret, such as NDPI beyond 4 GiB).
    /// - Throws: `TIFFStructureError`; a file that cannot be opened gives `.damaged`.
    public static func read(path: String, maxPixels: UInt64 = .max, followTables: Bool = true) throws(TIFFStructureError) -> TIFFStructure? {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw .damaged("cannot open the file") }
        defer { try? handle.close() }
        let size: UInt64
        do {
            size = try handle.seekToEnd()
        } catch {
            throw .damaged("cannot read the file size")
        }
        var reader = TIFFReader(handle: handle, fileSize: size)
        return try reader.structure(maxPixels: maxPixels, followTables: followTables)
    }
}

/// Reads one TIFF file's header, directories and tables through a file handle, a little at a time.
struct TIFFReader {
    let handle: FileHandle
    let fileSize: UInt64
    var little = true
    var big = false

    init(handle: FileHandle, fileSize: UInt64) {
        self.handle = handle
        self.fileSize = fileSize
    }

    /// Most directory entries accepted (real directories have a few dozen).
    static let maxEntries: UInt64 = 4096
    /// Most pages (directories) followed.
    static let maxPages = 10_000
    /// Table entries read per block while streaming.
    static let block: UInt64 = 16_384

    /// A directory entry: tag, type, count and the raw value field (inline value or offset).
    struct Entry {
        var tag: UInt16
        var type: UInt16
        var count: UInt64
        var field: [UInt8]
    }

    /// How a tag is named in messages.
    static func tagName(_ tag: UInt16) -> String {
        switch tag {
        case 273: return "the strip offset table"
        case 279: return "the strip byte count table"
        case 324: return "the tile offset table"
        case 325: return "the tile byte count table"
        case 270: return "the image description"
        default: return "the value of tag \(tag)"
        }
    }

    static func typeSize(_ type: UInt16) -> UInt64? {
        switch type {
        case 1, 2, 6, 7: return 1
        case 3, 8: return 2
        case 4, 9, 11, 13: return 4
        case 5, 10, 12, 16, 17, 18: return 8
        default: return nil
        }
    }

    func read(at offset: UInt64, count: Int) throws(TIFFStructureError) -> [UInt8] {
        guard count > 0 else { return [] }
        do {
            try handle.seek(toOffset: offset)
            let data = try handle.read(upToCount: count) ?? Data()
            return [UInt8](data)
        } catch {
            throw .damaged("cannot read \(count) bytes at offset \(offset)")
        }
    }

    func integer(_ bytes: [UInt8], at start: Int, size: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<size {
            let byte = UInt64(bytes[start + (little ? size - 1 - i : i)])
            value = (value << 8) | byte
        }
        return value
    }

    mutating func structure(maxPixels: UInt64, followTables: Bool) throws(TIFFStructureError) -> TIFFStructure? {
        guard let first = try header() else { return nil }
        var pages: [TIFFStructure.Page] = []
        var visited = Set<UInt64>()
        // A stack of directories still to read: each page is followed by its SubIFDs (and their
        // chains), then by the next page of its own chain.
        var work: [(offset: UInt64, isSubIFD: Bool)] = [(first, false)]
        while let (offset, isSub) = work.popLast() {
            guard pages.count < Self.maxPages else { throw .damaged("more than \(Self.maxPages) image directories") }
            guard visited.insert(offset).inserted else { throw .damaged("the directory chain loops back to offset \(offset)") }
            let (page, next, subIFDs) = try directory(at: offset, index: pages.count, isSubIFD: isSub,
                                                      maxPixels: maxPixels, followTables: followTables)
            pages.append(page)
            if next != 0 { work.append((next, isSub)) }
            work.append(contentsOf: subIFDs.reversed().map { ($0, true) })
        }
        return TIFFStructure(bigTIFF: big, littleEndian: little, fileSize: fileSize, pages: pages)
    }

    /// Reads the header (byte order, classic or BigTIFF) and returns the first directory's offset;
    /// nil when the file is not a TIFF.
    mutating func header() throws(TIFFStructureError) -> UInt64? {
        let header = try read(at: 0, count: 16)
        guard TIFFStructure.isTIFF(header: Data(header)) else { return nil }
        little = header[0] == 0x49
        big = integer(header, at: 2, size: 2) == 43
        let first: UInt64
        if big {
            guard header.count >= 16 else { throw .truncated("the BigTIFF header is cut short (file \(ByteSize(fileSize)))") }
            guard integer(header, at: 4, size: 2) == 8 else { throw .damaged("BigTIFF offsets are not 8 bytes") }
            first = integer(header, at: 8, size: 8)
        } else {
            guard header.count >= 8 else { throw .truncated("the TIFF header is cut short (file \(ByteSize(fileSize)))") }
            first = integer(header, at: 4, size: 4)
        }
        guard first != 0 else {
            throw .truncated("the header points at no image directory yet (file \(ByteSize(fileSize)); still being written?)")
        }
        return first
    }

    /// One directory: its page, the next directory's offset and its SubIFD offsets.
    mutating func directory(at offset: UInt64, index: Int, isSubIFD: Bool, maxPixels: UInt64,
                            followTables: Bool) throws(TIFFStructureError) -> (TIFFStructure.Page, UInt64, [UInt64]) {
        let countSize = big ? 8 : 2, entrySize = big ? 20 : 12, offsetSize = big ? 8 : 4
        let what = index == 0 ? "the first image directory" : "image directory \(index)"
        guard offset >= 8 else { throw .damaged("\(what) is at offset \(offset), inside the header") }
        guard offset <= fileSize, fileSize - offset >= UInt64(countSize) else {
            throw .truncated("\(what) lies beyond the end of the file (file \(ByteSize(fileSize)), directory at \(ByteSize(offset)))")
        }
        let countBytes = try read(at: offset, count: countSize)
        let count = integer(countBytes, at: 0, size: countSize)
        guard count > 0, count <= Self.maxEntries else { throw .damaged("\(what) claims \(count) entries") }
        let length = UInt64(countSize) + count * UInt64(entrySize) + UInt64(offsetSize)
        guard fileSize - offset >= length else {
            throw .truncated("\(what) runs past the end of the file (file \(ByteSize(fileSize)), directory needs \(ByteSize(offset + length)))")
        }
        let body = try read(at: offset + UInt64(countSize), count: Int(count) * entrySize + offsetSize)
        let entries = parseEntries(body, count: Int(count))
        func first(_ tag: UInt16) throws(TIFFStructureError) -> UInt64? {
            guard let entry = entries[tag], entry.count > 0 else { return nil }
            return try values(entry, from: 0, count: 1).first
        }
        // The declared size first: a header promising too many pixels is that, whatever else is wrong.
        let width = try first(256) ?? 0
        let height = try first(257) ?? 0
        if width.multipliedReportingOverflow(by: height).overflow || width * height > maxPixels {
            throw .tooManyPixels(page: index, width: width, length: height)
        }
        // Out-of-line values (strings, tables, XMP...) must lie inside the file.
        for entry in entries.values.sorted(by: { $0.tag < $1.tag }) {
            guard let unit = Self.typeSize(entry.type) else { continue }
            let (bytes, tooMany) = entry.count.multipliedReportingOverflow(by: unit)
            if tooMany { throw .damaged("tag \(entry.tag) of page \(index) claims \(entry.count) values") }
            guard bytes > UInt64(offsetSize) else { continue }
            let at = integer(entry.field, at: 0, size: offsetSize)
            let (end, overflow) = at.addingReportingOverflow(bytes)
            if overflow || end > fileSize {
                throw .truncated("\(Self.tagName(entry.tag)) of page \(index) lies beyond the end of the file "
                                 + "(file \(ByteSize(fileSize)), tag needs \(overflow ? "more than 16 EB" : ByteSize(end).description))")
            }
        }
        let next = integer(body, at: Int(count) * entrySize, size: offsetSize)
        if next != 0, next > fileSize || fileSize - next < UInt64(countSize) {
            throw .truncated("page \(index + 1)'s directory lies beyond the end of the file "
                             + "(file \(ByteSize(fileSize)), directory at \(ByteSize(next)))")
        }
        let samples = try first(277) ?? 1
        let bits = try first(258) ?? 1
        let compression = try first(259) ?? 1
        let planar = try first(284) ?? 1
        let tiled = entries[324] != nil || entries[322] != nil
        var chunkWidth = width, chunkLength = height
        if tiled {
            chunkWidth = try first(322) ?? 0
            chunkLength = try first(323) ?? 0
            guard chunkWidth > 0, chunkLength > 0 else { throw .damaged("page \(index) is tiled but its tile size is 0") }
        } else {
            chunkLength = min(try first(278) ?? UInt64(UInt32.max), max(1, height))
            if chunkLength == 0 { chunkLength = max(1, height) }
        }
        let planes = planar == 2 ? max(1, samples) : 1
        func chunks(_ size: UInt64, _ chunk: UInt64) -> UInt64 { chunk == 0 ? 0 : size / chunk + (size % chunk == 0 ? 0 : 1) }
        let (perPlane, wide) = chunks(width, chunkWidth).multipliedReportingOverflow(by: chunks(height, chunkLength))
        let (all, deep) = perPlane.multipliedReportingOverflow(by: planes)
        let needed = wide || deep ? UInt64.max : all
        var page = TIFFStructure.Page(
            index: index, offset: offset, width: width, length: height, samplesPerPixel: samples, bitsPerSample: bits,
            compression: compression, tiled: tiled, chunkWidth: chunkWidth, chunkLength: chunkLength, chunksNeeded: needed,
            entries: 0, present: 0, presentBytes: 0, beyondEnd: 0, tablesEnd: 0, isSubIFD: isSubIFD)
        let offsetsTag: UInt16 = tiled ? 324 : 273, countsTag: UInt16 = tiled ? 325 : 279
        if followTables, let offsets = entries[offsetsTag], width > 0, height > 0 {
            guard let counts = entries[countsTag] else {
                throw .damaged("page \(index) has \(page.chunkName) offsets but no byte counts")
            }
            try scan(offsets: offsets, counts: counts, into: &page)
        }
        var subIFDs: [UInt64] = []
        if let sub = entries[330], sub.count > 0, sub.count <= 64 {
            subIFDs = try values(sub, from: 0, count: sub.count).filter { $0 != 0 }
        }
        return (page, next, subIFDs)
    }

    /// The entries of a directory body (`count` entries as read after the entry count).
    func parseEntries(_ body: [UInt8], count: Int) -> [UInt16: Entry] {
        let entrySize = big ? 20 : 12
        var entries: [UInt16: Entry] = [:]
        for i in 0..<count where (i + 1) * entrySize <= body.count {
            let base = i * entrySize
            let tag = UInt16(integer(body, at: base, size: 2))
            let type = UInt16(integer(body, at: base + 2, size: 2))
            let n = integer(body, at: base + 4, size: big ? 8 : 4)
            let field = Array(body[(base + (big ? 12 : 8))..<(base + entrySize)])
            entries[tag] = Entry(tag: tag, type: type, count: n, field: field)
        }
        return entries
    }

    /// The entries of the directory at `offset` (after `structure` has checked the file) and the next directory's offset.
    func entries(at offset: UInt64) throws(TIFFStructureError) -> (entries: [UInt16: Entry], next: UInt64) {
        let countSize = big ? 8 : 2, entrySize = big ? 20 : 12, offsetSize = big ? 8 : 4
        let count = integer(try read(at: offset, count: countSize), at: 0, size: countSize)
        guard count > 0, count <= Self.maxEntries else { throw .damaged("the directory at \(offset) claims \(count) entries") }
        let body = try read(at: offset + UInt64(countSize), count: Int(count) * entrySize + offsetSize)
        guard body.count == Int(count) * entrySize + offsetSize else { throw .truncated("the directory at \(offset) is cut short") }
        return (parseEntries(body, count: Int(count)), integer(body, at: Int(count) * entrySize, size: offsetSize))
    }

    /// An entry's value bytes as stored (inline or out of line), in the file's byte order.
    func valueBytes(_ entry: Entry) throws(TIFFStructureError) -> [UInt8] {
        guard let unit = Self.typeSize(entry.type) else { throw .damaged("tag \(entry.tag) has unknown type \(entry.type)") }
        let (total, overflow) = entry.count.multipliedReportingOverflow(by: unit)
        guard !overflow, total < 1 << 30 else { throw .damaged("tag \(entry.tag) claims \(entry.count) values") }
        let offsetSize = big ? 8 : 4
        if total <= UInt64(offsetSize) { return Array(entry.field.prefix(Int(total))) }
        let bytes = try read(at: integer(entry.field, at: 0, size: offsetSize), count: Int(total))
        guard bytes.count == Int(total) else { throw .truncated("\(Self.tagName(entry.tag)) is cut short") }
        return bytes
    }

    /// Streams a page's offset and byte count tables: entries, present chunks, their bytes, how many end beyond the file.
    func scan(offsets: Entry, counts: Entry, into page: inout TIFFStructure.Page) throws(TIFFStructureError) {
        // Only as many entries as the image needs are read: extra ones are never used by a reader.
        let total = min(offsets.count, counts.count, page.chunksNeeded)
        page.entries = min(offsets.count, counts.count)
        var start: UInt64 = 0
        let spacing = max(1, total / 16)
        var samples: [(index: UInt64, offset: UInt64)] = []
        var last: (index: UInt64, offset: UInt64)?
        while start < total {
            let n = min(Self.block, total - start)
            let o = try values(offsets, from: start, count: n)
            let c = try values(counts, from: start, count: n)
            for i in 0..<Int(n) where o[i] != 0 && c[i] != 0 {
                page.present += 1
                page.presentBytes &+= c[i]
                let (end, overflow) = o[i].addingReportingOverflow(c[i])
                page.tablesEnd = max(page.tablesEnd, overflow ? .max : end)
                if overflow || end > fileSize {
                    page.beyondEnd += 1
                    continue
                }
                let index = start + UInt64(i)
                if index % spacing == 0 { samples.append((index, o[i])) }
                last = (index, o[i])
            }
            start += n
        }
        if let last, samples.last?.index != last.index { samples.append(last) }
        for sample in samples {
            page.heads.append(TIFFStructure.ChunkHead(index: sample.index, bytes: try read(at: sample.offset, count: 4)))
        }
    }

    /// `count` values of an entry from index `from` (SHORT, LONG, LONG8 or IFD types), inline or out of line.
    func values(_ entry: Entry, from: UInt64, count: UInt64) throws(TIFFStructureError) -> [UInt64] {
        guard count > 0 else { return [] }
        let unit: UInt64
        switch entry.type {
        case 1, 6, 7: unit = 1
        case 3, 8: unit = 2
        case 4, 9, 13: unit = 4
        case 16, 17, 18: unit = 8
        default: throw .damaged("tag \(entry.tag) has type \(entry.type), not an integer")
        }
        let offsetSize: UInt64 = big ? 8 : 4
        let (total, overflow) = entry.count.multipliedReportingOverflow(by: unit)
        guard !overflow, from <= entry.count, count <= entry.count - from else {
            throw .damaged("tag \(entry.tag) claims \(entry.count) values")
        }
        let bytes: [UInt8]
        if total <= offsetSize {
            bytes = Array(entry.field.prefix(Int(entry.count * unit)))
        } else {
            let (at, past) = integer(entry.field, at: 0, size: Int(offsetSize)).addingReportingOverflow(from * unit)
            if past { throw .damaged("tag \(entry.tag) points past any file") }
            bytes = try read(at: at, count: Int(count * unit))
        }
        let available = UInt64(bytes.count) / unit
        let start = total <= offsetSize ? from : 0
        guard available >= start + count else {
            throw .truncated("\(Self.tagName(entry.tag)) lies beyond the end of the file (file \(ByteSize(fileSize)))")
        }
        return (0..<Int(count)).map { integer(bytes, at: Int((start + UInt64($0)) * unit), size: Int(unit)) }
    }
}

/// A byte count as people read it: `61.2 MB` (decimal units, one decimal).
public struct ByteSize: CustomStringConvertible, Sendable {
    public var bytes: UInt64
    public init(_ bytes: UInt64) { self.bytes = bytes }
    public var description: String {
        let value = Double(bytes)
        if bytes < 1000 { return "\(bytes) bytes" }
        for (unit, scale) in [("kB", 1e3), ("MB", 1e6), ("GB", 1e9)] where value < scale * 999.95 {
            return String(format: "%.1f", value / scale) + " " + unit
        }
        return String(format: "%.1f", value / 1e12) + " TB"
    }
}
