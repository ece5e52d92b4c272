import Foundation

/// Assembles an Aperio-style SVS (a classic little-endian TIFF) from single-page tiled TIFFs, one
/// per pyramid level, finest first, by copying their compressed tiles and tags: level 0 carries the
/// Aperio ImageDescription (which OpenSlide reads: `AppMag`, `MPP`), the others are marked
/// reduced-resolution (NewSubfileType 1), as Aperio scanners write them. Nothing is re-encoded.
enum SVSAssembler {
    /// Tags not copied from the sources: rewritten here (subfile type, description, tile tables) or meaningless in the result.
    /// Exif, GPS and interoperability directories (34665, 34853, 40965) point into their source file: dropped.
    private static let rewritten: Set<UInt16> = [254, 270, 273, 279, 324, 325, 330, 34665, 34853, 40965]

    static func assemble(levels: [String], description: String, to path: String) throws(SlideError) {
        guard FileManager.default.createFile(atPath: path, contents: nil), let output = FileHandle(forWritingAtPath: path) else {
            throw .writeFailed(path: path, reason: "cannot create the file")
        }
        defer { try? output.close() }
        var writer = Writer(handle: output, path: path)
        try writer.append([0x49, 0x49, 42, 0, 0, 0, 0, 0])  // "II", 42, first directory patched at the end
        var directories: [[(tag: UInt16, type: UInt16, count: UInt32, value: [UInt8])]] = []
        for (index, level) in levels.enumerated() {
            guard let input = FileHandle(forReadingAtPath: level) else { throw .writeFailed(path: path, reason: "cannot read \(level)") }
            defer { try? input.close() }
            do {
                var reader = TIFFReader(handle: input, fileSize: try input.seekToEnd())
                guard let first = try reader.header(), reader.little, !reader.big else {
                    throw SlideError.writeFailed(path: path, reason: "\(level) is not a classic little-endian TIFF")
                }
                let (entries, _) = try reader.entries(at: first)
                guard let offsetsEntry = entries[324], let countsEntry = entries[325] else {
                    throw SlideError.writeFailed(path: path, reason: "\(level) is not tiled")
                }
                let offsets = try reader.values(offsetsEntry, from: 0, count: offsetsEntry.count)
                let counts = try reader.values(countsEntry, from: 0, count: countsEntry.count)
                var placed: [UInt32] = []
                placed.reserveCapacity(offsets.count)
                for (offset, count) in zip(offsets, counts) {
                    placed.append(try writer.position32())
                    let tile = try reader.read(at: offset, count: Int(count))
                    guard tile.count == Int(count) else {
                        throw SlideError.writeFailed(path: path, reason: "\(level): a tile is cut short (\(tile.count) of \(count) bytes)")
                    }
                    try writer.append(tile)
                }
                var directory: [(tag: UInt16, type: UInt16, count: UInt32, value: [UInt8])] = []
                for entry in entries.values.sorted(by: { $0.tag < $1.tag }) where !rewritten.contains(entry.tag) {
                    directory.append((entry.tag, entry.type, UInt32(entry.count), try reader.valueBytes(entry)))
                }
                directory.append((254, 4, 1, le32(index == 0 ? 0 : 1)))
                if index == 0 {
                    let text = Array(description.utf8) + [0]
                    directory.append((270, 2, UInt32(text.count), text))
                }
                directory.append((324, 4, UInt32(placed.count), placed.flatMap(le32)))
                directory.append((325, 4, UInt32(counts.count), counts.flatMap { le32(UInt32($0)) }))
                // Values longer than 4 bytes go out of line, on word boundaries; the entry keeps their offset.
                for i in directory.indices where directory[i].value.count > 4 {
                    if try writer.position32() % 2 == 1 { try writer.append([0]) }
                    let at = try writer.position32()
                    try writer.append(directory[i].value)
                    directory[i].value = le32(at)
                }
                directories.append(directory.sorted { $0.tag < $1.tag })
            } catch let error as SlideError {
                throw error
            } catch {
                throw .writeFailed(path: path, reason: "\(level): \(error)")
            }
        }
        // The directories, chained, at the end.
        if try writer.position32() % 2 == 1 { try writer.append([0]) }
        var at = try writer.position32()
        let firstDirectory = at
        for (index, directory) in directories.enumerated() {
            let size = UInt32(2 + 12 * directory.count + 4)
            var bytes = [UInt8(directory.count & 0xFF), UInt8(directory.count >> 8)]
            for entry in directory {
                bytes += [UInt8(entry.tag & 0xFF), UInt8(entry.tag >> 8), UInt8(entry.type & 0xFF), UInt8(entry.type >> 8)]
                bytes += le32(entry.count)
                bytes += entry.value + [UInt8](repeating: 0, count: 4 - entry.value.count)
            }
            bytes += le32(index == directories.count - 1 ? 0 : at + size)
            try writer.append(bytes)
            at += size
        }
        try writer.flush()
        do {
            try output.seek(toOffset: 4)
            try output.write(contentsOf: le32(firstDirectory))
        } catch {
            throw .writeFailed(path: path, reason: "\(error)")
        }
    }

    private static func le32(_ value: UInt32) -> [UInt8] {
        [UInt8(value & 0xFF), UInt8((value >> 8) & 0xFF), UInt8((value >> 16) & 0xFF), UInt8(value >> 24)]
    }

    /// Buffered sequential writes that know their position; a classic TIFF stays under 4 GiB.
    private struct Writer {
        let handle: FileHandle
        let path: String
        var written: UInt64 = 0
        var buffer: [UInt8] = []

        init(handle: FileHandle, path: String) {
            self.handle = handle
            self.path = path
            buffer.reserveCapacity(1 << 22)
        }

        func position32() throws(SlideError) -> UInt32 {
            let position = written + UInt64(buffer.count)
            guard position < UInt64(UInt32.max) - (1 << 20) else {
                throw .writeFailed(path: path, reason: "the slide would pass 4 GiB, more than a classic TIFF holds; use a smaller area")
            }
            return UInt32(position)
        }

        mutating func append(_ bytes: [UInt8]) throws(SlideError) {
            buffer += bytes
            if buffer.count >= 1 << 22 { try flush() }
        }

        mutating func flush() throws(SlideError) {
            guard !buffer.isEmpty else { return }
            do {
                try handle.write(contentsOf: buffer)
            } catch {
                throw .writeFailed(path: path, reason: "\(error)")
            }
            written += UInt64(buffer.count)
            buffer.removeAll(keepingCapacity: true)
        }
    }
}
