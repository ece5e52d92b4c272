import Foundation

/// Builds small TIFF files byte by byte for structure tests: classic or BigTIFF, either byte
/// order, tiled or stripped pages with SubIFDs, tiles of chosen sizes (0 = sparse), directories
/// before the pixel data (as scanners that reserve their tables write) or after it (as libtiff does).
/// The pixel bytes are filler: only the structure is real.
struct TestTIFF {
    struct Page {
        var width: Int
        var height: Int
        var tiled = true
        /// Tile side, or rows per strip.
        var chunk = 64
        var compression = 7
        var samples = 3
        /// Bytes stored for chunk `i`; 0 makes it sparse (offset and byte count 0).
        var chunkBytes: @Sendable (Int) -> Int = { _ in 300 }
        var subIFDs: [Page] = []
        /// Chunks whose space is reserved but left zero (a writer that fills the tables first).
        var unwritten: Set<Int> = []

        var chunkCount: Int {
            if tiled { return ((width + chunk - 1) / chunk) * ((height + chunk - 1) / chunk) }
            return (height + chunk - 1) / chunk
        }
    }

    var big = false
    var littleEndian = true
    var directoriesFirst = true
    var pages: [Page]

    /// A directory to write: the page, whether its `next` links to the following main page.
    private struct Directory {
        var page: Page
        var next: Int?  // index into the directory list
        var subs: [Int] = []
    }

    func build() -> Data {
        // Flatten: each main page, then its SubIFDs.
        var dirs: [Directory] = []
        var mainIndices: [Int] = []
        for page in pages {
            let index = dirs.count
            mainIndices.append(index)
            dirs.append(Directory(page: page, next: nil))
            for sub in page.subIFDs {
                dirs[index].subs.append(dirs.count)
                dirs.append(Directory(page: sub, next: nil))
            }
        }
        for (n, index) in mainIndices.enumerated() where n + 1 < mainIndices.count { dirs[index].next = mainIndices[n + 1] }

        let word = big ? 8 : 4
        let header = big ? 16 : 8
        // Sizes: each directory's block is the IFD and its out-of-line arrays.
        func entryCount(_ d: Directory) -> Int { (d.page.tiled ? 11 : 10) + (d.subs.isEmpty ? 0 : 1) }
        func arrayBytes(_ count: Int) -> Int { count * word > word ? count * word : 0 }
        func blockSize(_ d: Directory) -> Int {
            let ifd = (big ? 8 : 2) + entryCount(d) * (big ? 20 : 12) + word
            return ifd + 2 * arrayBytes(d.page.chunkCount) + arrayBytes(d.subs.count)
        }
        let dataSizes = dirs.map { d in (0..<d.page.chunkCount).map { d.page.chunkBytes($0) } }
        let totalData = dataSizes.joined().reduce(0, +)
        let totalDirs = dirs.map(blockSize).reduce(0, +)
        let dirStart = directoriesFirst ? header : header + totalData
        let dataStart = directoriesFirst ? header + totalDirs : header
        var dirOffsets: [Int] = []
        var position = dirStart
        for d in dirs {
            dirOffsets.append(position)
            position += blockSize(d)
        }
        var chunkOffsets: [[Int]] = []
        position = dataStart
        for sizes in dataSizes {
            chunkOffsets.append(sizes.map { size in
                defer { position += size }
                return size == 0 ? 0 : position
            })
        }

        var out = Writer(little: littleEndian)
        out.bytes += littleEndian ? [0x49, 0x49] : [0x4D, 0x4D]
        if big {
            out.int(43, 2); out.int(8, 2); out.int(0, 2); out.int(dirOffsets[0], 8)
        } else {
            out.int(42, 2); out.int(dirOffsets[0], 4)
        }
        func writeDirectories() {
            for (i, d) in dirs.enumerated() {
                precondition(out.bytes.count == dirOffsets[i])
                let p = d.page
                let counts = dataSizes[i], offsets = chunkOffsets[i]
                let arraysAt = dirOffsets[i] + (big ? 8 : 2) + entryCount(d) * (big ? 20 : 12) + word
                var extra = arraysAt
                var entries: [(tag: Int, type: Int, values: [Int])] = [
                    (256, 4, [p.width]), (257, 4, [p.height]), (258, 3, [8]), (259, 3, [p.compression]), (262, 3, [2]),
                ]
                let longType = big ? 16 : 4
                if p.tiled {
                    entries += [(277, 3, [p.samples]), (322, 3, [p.chunk]), (323, 3, [p.chunk]),
                                (324, longType, offsets), (325, longType, counts)]
                } else {
                    entries += [(273, longType, offsets), (277, 3, [p.samples]), (278, 4, [p.chunk]), (279, longType, counts)]
                }
                entries.append((284, 3, [1]))
                if !d.subs.isEmpty { entries.append((330, longType, d.subs.map { dirOffsets[$0] })) }
                entries.sort { $0.tag < $1.tag }
                out.int(entries.count, big ? 8 : 2)
                var pending: [(Int, [Int], Int)] = []  // (unit, values, at)
                for entry in entries {
                    let unit = entry.type == 3 ? 2 : (entry.type == 16 ? 8 : 4)
                    out.int(entry.tag, 2); out.int(entry.type, 2); out.int(entry.values.count, word)
                    if entry.values.count * unit <= word {
                        var field = Writer(little: littleEndian)
                        for v in entry.values { field.int(v, unit) }
                        out.bytes += field.bytes + [UInt8](repeating: 0, count: word - field.bytes.count)
                    } else {
                        out.int(extra, word)
                        pending.append((unit, entry.values, extra))
                        extra += entry.values.count * unit
                    }
                }
                out.int(d.next.map { dirOffsets[$0] } ?? 0, word)
                for (unit, values, at) in pending {
                    precondition(out.bytes.count == at)
                    for v in values { out.int(v, unit) }
                }
                // Pad to the block size computed above (arrays of SHORT values are smaller than words).
                let end = dirOffsets[i] + blockSize(d)
                out.bytes += [UInt8](repeating: 0, count: max(0, end - out.bytes.count))
            }
        }
        func writeData() {
            var filler: UInt8 = 1
            for (d, sizes) in zip(dirs, dataSizes) {
                // Each tile begins as its codec's data does (JPEG SOI, a zlib header), then filler.
                let head: [UInt8] = d.page.compression == 7 ? [0xFF, 0xD8] : d.page.compression == 8 ? [0x78, 0x9C] : []
                for (index, size) in sizes.enumerated() {
                    let unwritten = d.page.unwritten.contains(index)
                    let start = unwritten ? [] : Array(head.prefix(size))
                    out.bytes += start + [UInt8](repeating: unwritten ? 0 : filler, count: size - start.count)
                    filler = filler == 255 ? 1 : filler + 1
                }
            }
        }
        if directoriesFirst {
            writeDirectories(); writeData()
        } else {
            writeData(); writeDirectories()
        }
        return Data(out.bytes)
    }

    struct Writer {
        var little: Bool
        var bytes: [UInt8] = []
        mutating func int(_ value: Int, _ size: Int) {
            let v = UInt64(value)
            for i in 0..<size {
                let shift = UInt64(8 * (little ? i : size - 1 - i))
                bytes.append(UInt8((v >> shift) & 0xFF))
            }
        }
    }
}
