import Foundation
import Testing
@testable import SlideIO

/// The TIFF structure reader and the completeness and size checks built on it.
@Suite("TIFF structure and slide checks")
struct TIFFStructureTests {
    func write(_ tiff: TestTIFF, name: String = "t.tif") throws -> String {
        let url = TestData.temporaryDirectory().appendingPathComponent(name)
        try tiff.build().write(to: url)
        return url.path
    }

    func cut(_ path: String, to length: Int) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let url = TestData.temporaryDirectory().appendingPathComponent("cut-\(length)-" + (path as NSString).lastPathComponent)
        try data.prefix(length).write(to: url)
        return url.path
    }

    /// Expects `check` to throw `.incomplete` and returns its reason.
    func incompleteReason(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) -> String {
        do {
            try SlideCheck.check(path: path)
            Issue.record("\(path) passed the completeness check", sourceLocation: sourceLocation)
        } catch .incomplete(_, let reason) {
            return reason
        } catch {
            Issue.record("expected incomplete, got \(error)", sourceLocation: sourceLocation)
        }
        return ""
    }

    @Test(arguments: [(false, true), (false, false), (true, true), (true, false)])
    func tiledPagesReadInEveryLayout(big: Bool, little: Bool) throws {
        for directoriesFirst in [true, false] {
            var page = TestTIFF.Page(width: 1000, height: 700, chunk: 256)
            page.chunkBytes = { 100 + $0 }
            let tiff = TestTIFF(big: big, littleEndian: little, directoriesFirst: directoriesFirst,
                                pages: [page, TestTIFF.Page(width: 500, height: 350, chunk: 256)])
            let path = try write(tiff)
            let structure = try #require(try TIFFStructure.read(path: path))
            #expect(structure.bigTIFF == big && structure.littleEndian == little)
            #expect(structure.pages.count == 2)
            let first = structure.pages[0]
            #expect(first.width == 1000 && first.length == 700 && first.tiled && first.chunkWidth == 256)
            #expect(first.chunksNeeded == 12 && first.entries == 12 && first.present == 12)
            #expect(first.presentBytes == UInt64((0..<12).map { 100 + $0 }.reduce(0, +)))
            #expect(first.beyondEnd == 0 && first.tablesEnd <= structure.fileSize)
            #expect(first.compression == 7 && first.samplesPerPixel == 3 && first.bitsPerSample == 8)
            #expect(structure.pages[1].width == 500 && structure.pages[1].chunksNeeded == 4)
            try SlideCheck.check(path: path)
        }
    }

    @Test(arguments: [false, true])
    func stripsAreRead(big: Bool) throws {
        let page = TestTIFF.Page(width: 600, height: 410, tiled: false, chunk: 16, compression: 5, samples: 3)
        let path = try write(TestTIFF(big: big, pages: [page]))
        let structure = try #require(try TIFFStructure.read(path: path))
        let strips = structure.pages[0]
        #expect(!strips.tiled && strips.chunkLength == 16 && strips.chunksNeeded == 26)
        #expect(strips.entries == 26 && strips.present == 26 && strips.presentBytes == 26 * 300)
        try SlideCheck.check(path: path)
        // One strip of one byte holding a whole uncompressed page is not plausible.
        var single = TestTIFF.Page(width: 600, height: 410, tiled: false, chunk: 410, compression: 1)
        single.chunkBytes = { _ in 1000 }
        #expect(throws: SlideError.self) { try SlideCheck.check(path: try write(TestTIFF(big: big, pages: [single]))) }
    }

    @Test func subIFDsAreFollowed() throws {
        var main = TestTIFF.Page(width: 2048, height: 2048, chunk: 256)
        main.subIFDs = [TestTIFF.Page(width: 1024, height: 1024, chunk: 256), TestTIFF.Page(width: 512, height: 512, chunk: 256)]
        let label = TestTIFF.Page(width: 300, height: 200, tiled: false, chunk: 200)
        for big in [false, true] {
            let structure = try #require(try TIFFStructure.read(path: try write(TestTIFF(big: big, pages: [main, label]))))
            #expect(structure.pages.map(\.width) == [2048, 1024, 512, 300])
            #expect(structure.pages.map(\.isSubIFD) == [false, true, true, false])
        }
    }

    @Test func sparseTilesAreLegal() throws {
        var page = TestTIFF.Page(width: 2048, height: 1024, chunk: 256)
        page.chunkBytes = { $0 % 3 == 0 ? 0 : 500 }
        let path = try write(TestTIFF(pages: [page]))
        let first = try #require(try TIFFStructure.read(path: path)).pages[0]
        #expect(first.entries == 32 && first.present == 21)
        try SlideCheck.check(path: path)
    }

    @Test func tilesBeyondTheEndAreCountedAndNamed() throws {
        // Directories first, then the tiles: a file cut in its tile data keeps every table.
        var page = TestTIFF.Page(width: 2560, height: 2560, chunk: 256)
        page.chunkBytes = { _ in 1000 }
        let path = try write(TestTIFF(directoriesFirst: true, pages: [page]))
        let full = try Data(contentsOf: URL(fileURLWithPath: path)).count
        // Exactly the last 37 tiles are cut off.
        let reason = incompleteReason(try cut(path, to: full - 37 * 1000))
        #expect(reason.hasPrefix("truncated: 37 of 100 tiles of page 0 (2560 x 2560 px) lie beyond the end of the file"), "\(reason)")
        #expect(reason.contains("tables need \(ByteSize(UInt64(full)))"), "\(reason)")
        // One byte short is still truncated.
        #expect(incompleteReason(try cut(path, to: full - 1)).hasPrefix("truncated: 1 of 100 tiles"))
    }

    @Test func reservedButUnwrittenTilesAreIncomplete() throws {
        // A writer that puts the tables first and fills the tiles later: the size is final early.
        var page = TestTIFF.Page(width: 2560, height: 2560, chunk: 256)
        page.chunkBytes = { _ in 1000 }
        page.unwritten = Set(90..<100)
        let reason = incompleteReason(try write(TestTIFF(pages: [page])))
        #expect(reason == "not fully written: tile 90 of 100 of page 0 (2560 x 2560 px) holds no JPEG data (it begins 00 00 00 00)",
                "\(reason)")
        page.unwritten = []
        try SlideCheck.check(path: try write(TestTIFF(pages: [page])))
        var deflate = TestTIFF.Page(width: 1024, height: 1024, chunk: 256, compression: 8)
        try SlideCheck.check(path: try write(TestTIFF(big: true, pages: [deflate])))
        deflate.unwritten = [15]
        #expect(incompleteReason(try write(TestTIFF(big: true, pages: [deflate]))).contains("holds no deflate data"))
    }

    @Test func generatedPyramidWithAZeroedTileIsIncomplete() throws {
        let path = TestData.temporaryDirectory().appendingPathComponent("pyramid.tif").path
        try SyntheticSlide.write(to: path, width: 3000, height: 2000, seed: 4)
        let structure = try #require(try TIFFStructure.read(path: path))
        let last = try #require(structure.pages[0].heads.last)
        #expect(last.bytes.starts(with: [0xFF, 0xD8]) && last.index == structure.pages[0].entries - 1)
        // Zero the first bytes of level 0's last tile, as a preallocated file not yet filled would be.
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        let tileOffset = try tileOffsets(of: path, page: 0).last!
        data.replaceSubrange(Int(tileOffset)..<Int(tileOffset) + 4, with: [0, 0, 0, 0])
        let url = TestData.temporaryDirectory().appendingPathComponent("zeroed.tif")
        try data.write(to: url)
        #expect(incompleteReason(url.path).hasPrefix("not fully written: tile \(last.index) of"))
    }

    /// Page `page`'s tile offsets of a little-endian classic TIFF, read from its bytes.
    func tileOffsets(of path: String, page: Int) throws -> [UInt64] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let bytes = [UInt8](data)
        func u(_ at: Int, _ size: Int) -> Int { (0..<size).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } }
        var ifd = u(4, 4)
        for _ in 0..<page { ifd = u(ifd + 2 + u(ifd, 2) * 12, 4) }
        for i in 0..<u(ifd, 2) {
            let entry = ifd + 2 + i * 12
            if u(entry, 2) == 324 {
                let count = u(entry + 4, 4), at = u(entry + 8, 4)
                return (0..<count).map { UInt64(u(at + 4 * $0, 4)) }
            }
        }
        return []
    }

    @Test(.needsSharedData) func garbageInsideATileIsAReadErrorNotBackground() throws {
        // The structure is whole, the entropy data of one tile is not: decoding must fail, not yield grey.
        var data = try Data(contentsOf: URL(fileURLWithPath: TestData.slide("CMU-1-Small-Region.svs")))
        let offsets = try tileOffsets(of: TestData.slide("CMU-1-Small-Region.svs"), page: 0)
        var random = SplitMix(seed: 9)
        let start = Int(offsets[60]) + 3000
        for i in start..<(start + 2000) { data[i] = UInt8(truncatingIfNeeded: random.next()) }
        let url = TestData.temporaryDirectory().appendingPathComponent("garbage.svs")
        try data.write(to: url)
        try SlideCheck.check(path: url.path)
        do {
            let slide = try Slide.open(path: url.path)
            let grid = try TileGrid(plan: try slide.plan(targetMPP: nil), tileSize: 240, mask: nil, minimumTissue: 0)
            let reader = try PatchReader(slide: slide, grid: grid, threads: 2)
            let batch = PatchBatch(capacity: 16, tileSize: 240, format: .rgb8)
            while try reader.next(into: batch) {}
            Issue.record("every tile decoded, the damaged one too")
        } catch .readFailed(_, let reason) {
            #expect(reason.contains("JPEG"), "\(reason)")
        } catch {
            Issue.record("expected readFailed, got \(error)")
        }
    }

    @Test func cutDirectoriesAreTruncated() throws {
        // Data first, then the directories (libtiff's order): a cut loses directories or tables.
        let pages = [TestTIFF.Page(width: 1024, height: 1024, chunk: 256), TestTIFF.Page(width: 512, height: 512, chunk: 256)]
        for big in [false, true] {
            let path = try write(TestTIFF(big: big, directoriesFirst: false, pages: pages))
            let full = try Data(contentsOf: URL(fileURLWithPath: path)).count
            for length in [4, 7, 15, 100, full / 2, full - 200, full - 60, full - 9, full - 1] {
                let reason = incompleteReason(try cut(path, to: length))
                #expect(reason.hasPrefix("truncated") || reason.hasPrefix("damaged"), "cut at \(length): \(reason)")
            }
            try SlideCheck.check(path: path)
        }
    }

    @Test func aHugeDeclaredSizeIsRefusedWithoutReadingTables() throws {
        // 10^6 x 10^6 px: the size alone refuses it, before any table is read.
        var page = TestTIFF.Page(width: 1_000_000, height: 1_000_000, chunk: 65_520)
        page.chunkBytes = { _ in 1 }
        let path = try write(TestTIFF(pages: [page]))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)).count < 10_000)
        let error = #expect(throws: SlideError.self) { try SlideCheck.check(path: path) }
        guard case .tooLarge(_, let reason) = error else {
            Issue.record("expected tooLarge, got \(String(describing: error))")
            return
        }
        #expect(reason == "declares 1000000 x 1000000 px, over the 40000000000-pixel limit (--max-slide-pixels)")
        // Its tables cut off too: the size is still what is named (the header's promise comes first).
        let header = #expect(throws: SlideError.self) { try SlideCheck.check(path: try cut(path, to: 300)) }
        if case .tooLarge = header {} else { Issue.record("expected tooLarge, got \(String(describing: header))") }
        // The limit is the caller's.
        let small = try write(TestTIFF(pages: [TestTIFF.Page(width: 4000, height: 3000, chunk: 256)]))
        try SlideCheck.check(path: small)
        #expect(throws: SlideError.self) { try SlideCheck.check(path: small, limits: SlideLimits(maxPixels: 10_000_000)) }
        // Under the limit but far more pixels than bytes: 1.6 x 10^9 px of JPEG in 100 one-byte tiles.
        var bomb = TestTIFF.Page(width: 40_000, height: 40_000, chunk: 4096)
        bomb.chunkBytes = { _ in 1 }
        let implausible = #expect(throws: SlideError.self) { try SlideCheck.check(path: try write(TestTIFF(pages: [bomb]))) }
        guard case .tooLarge(_, let text) = implausible else {
            Issue.record("expected tooLarge, got \(String(describing: implausible))")
            return
        }
        #expect(text.contains("page 0 (40000 x 40000 px)") && text.contains("real slides compress less than 10000:1"), "\(text)")
    }

    @Test func loopsAndNonsenseAreDamagedNotHangs() throws {
        var data = try TestTIFF(pages: [TestTIFF.Page(width: 256, height: 256, chunk: 256)]).build()
        // Point the directory's `next` back at itself.
        let first = Int(data[4]) | Int(data[5]) << 8
        let entries = Int(data[first]) | Int(data[first + 1]) << 8
        let next = first + 2 + entries * 12
        data.replaceSubrange(next..<(next + 4), with: [data[4], data[5], data[6], data[7]])
        let url = TestData.temporaryDirectory().appendingPathComponent("loop.tif")
        try data.write(to: url)
        #expect(incompleteReason(url.path).contains("loops"))
        // Not a TIFF at all: not this check's business.
        let text = TestData.temporaryDirectory().appendingPathComponent("notes.tif")
        try Data("hello".utf8).write(to: text)
        #expect(try TIFFStructure.read(path: text.path) == nil)
        try SlideCheck.check(path: text.path)
    }

    @Test func mutatedHeadersNeverCrashOrHang() throws {
        // Random bytes written over the header and directories of small classic and BigTIFF files:
        // every result is a structure or a one-line error, never a trap (overflow, out of range) or a hang.
        var main = TestTIFF.Page(width: 1024, height: 768, chunk: 256)
        main.subIFDs = [TestTIFF.Page(width: 512, height: 384, chunk: 256)]
        let strips = TestTIFF.Page(width: 300, height: 200, tiled: false, chunk: 32, compression: 8)
        var random = SplitMix(seed: 77)
        let folder = TestData.temporaryDirectory()
        for big in [false, true] {
            let original = [UInt8](try TestTIFF(big: big, pages: [main, strips]).build())
            // The directories come first, then the tile data (300 bytes a tile or strip).
            let directories = original.count - (main.chunkCount + main.subIFDs[0].chunkCount + strips.chunkCount) * 300
            for round in 0..<400 {
                var bytes = original
                for _ in 0..<(1 + Int(random.next() % 6)) {
                    let at = Int(random.next() % UInt64(directories))
                    bytes[at] = random.next() % 4 == 0 ? 0xFF : UInt8(truncatingIfNeeded: random.next())
                }
                let url = folder.appendingPathComponent("m-\(big)-\(round).tif")
                try Data(bytes).write(to: url)
                do {
                    try SlideCheck.check(path: url.path)
                } catch {
                    #expect(!error.description.contains("\n"))
                }
                try? FileManager.default.removeItem(at: url)
            }
        }
    }

    @Test(.needsSharedData) func realSlidesPass() throws {
        let cmu = try #require(try TIFFStructure.read(path: TestData.slide("CMU-1-Small-Region.svs")))
        #expect(cmu.pages.count == 4 && !cmu.bigTIFF)
        #expect(cmu.pages[0].width == 2220 && cmu.pages[0].length == 2967 && cmu.pages[0].chunkWidth == 240)
        #expect(cmu.pages[0].entries == 130 && cmu.pages[0].present == 130 && cmu.pages[0].beyondEnd == 0)
        let pyramid = try #require(try TIFFStructure.read(path: TestData.slide("CMU-1-Small-Region-pyramid-jpeg.tif")))
        #expect(pyramid.pages.map(\.width) == [2220, 1110, 555, 277, 138])
        for name in ["CMU-1-Small-Region.svs", "CMU-1-Small-Region-pyramid-jpeg.tif", "tcga-cr-7395-01a-01-ts1.svs",
                     "test3-DAPI-2-387.ndpi", "test3-TRITC-2-560.ndpi"] {
            try SlideCheck.check(path: TestData.slide(name))
        }
        for name in ["boxes.tiff", "kidney-48-5.tif", "pathml_small_HE_levels.tiff", "pathml_small_vectra.qptiff", "small.svs"] {
            try SlideCheck.check(path: TestData.odd(name))
        }
    }

    @Test func generatedPyramidPassesAndMatchesLibvips() throws {
        let path = TestData.temporaryDirectory().appendingPathComponent("pyramid.tif").path
        try SyntheticSlide.write(to: path, width: 3000, height: 2000, seed: 3)
        let structure = try #require(try TIFFStructure.read(path: path))
        let slide = try Slide.open(path: path)
        #expect(structure.pages.count == slide.levelCount)
        #expect(structure.pages.map { Int($0.width) } == slide.properties.levels.map(\.width))
        #expect(structure.pages.allSatisfy { $0.tiled && $0.present == $0.chunksNeeded && $0.beyondEnd == 0 })
        // Cut anywhere, it is never taken for whole.
        let size = try Data(contentsOf: URL(fileURLWithPath: path)).count
        for fraction in [0.1, 0.5, 0.7, 0.9, 0.99] {
            let cut = try cut(path, to: Int(Double(size) * fraction))
            #expect(throws: SlideError.self) { try Slide.open(path: cut) }
            _ = incompleteReason(cut)
        }
    }
}
