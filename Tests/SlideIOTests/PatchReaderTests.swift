import Foundation
import Testing
@testable import SlideIO

@Suite("Patch reader")
struct PatchReaderTests {
    /// A lossless image whose pixels encode their own coordinates.
    static func coordinateSlide() throws -> Slide {
        let url = TestData.temporaryDirectory().appendingPathComponent("coordinates.ppm")
        try TestData.writeCoordinatePPM(width: 700, height: 500, to: url)
        return try Slide.open(path: url.path, mppOverride: 0.5)
    }

    @Test func rgbPatchesHoldTheRightPixels() throws {
        let slide = try Self.coordinateSlide()
        let grid = try TileGrid(plan: try slide.plan(targetMPP: 0.5), tileSize: 100, overlap: 30, mask: nil, minimumTissue: 0)
        #expect(grid.columns == 9 && grid.rows == 6)
        for threads in [1, 2, 3] {
            let reader = try PatchReader(slide: slide, grid: grid, threads: threads)
            let batch = PatchBatch(capacity: 7, tileSize: 100, format: .rgb8)
            var seen = 0
            while try reader.next(into: batch) {
                for (slot, tile) in batch.tiles.enumerated() {
                    let base = slot * batch.elementsPerPatch
                    for (dx, dy) in [(0, 0), (99, 0), (0, 99), (57, 31), (99, 99)] {
                        let x = tile.x + dx, y = tile.y + dy
                        let i = base + 3 * (dy * 100 + dx)
                        #expect(batch.bytes[i] == UInt8(x % 256) && batch.bytes[i + 1] == UInt8(y % 256)
                                && batch.bytes[i + 2] == UInt8((x / 256 + 7 * (y / 256)) % 256))
                    }
                }
                seen += batch.count
            }
            #expect(seen == grid.tiles.count)
        }
    }

    @Test func floatLayoutsMatchNormalisedBytes() throws {
        let slide = try Self.coordinateSlide()
        let grid = try TileGrid(plan: try slide.plan(targetMPP: 0.5), tileSize: 64, mask: nil, minimumTissue: 0)
        let norm = Normalisation.imageNet
        let bytes = PatchBatch(capacity: 16, tileSize: 64, format: .rgb8)
        let planar = PatchBatch(capacity: 16, tileSize: 64, format: .floatNCHW(norm))
        let interleaved = PatchBatch(capacity: 16, tileSize: 64, format: .floatNHWC(norm))
        let readers = try (0..<3).map { _ in try PatchReader(slide: slide, grid: grid, threads: 2) }
        var batches = 0
        while try readers[0].next(into: bytes) {
            #expect(try readers[1].next(into: planar))
            #expect(try readers[2].next(into: interleaved))
            #expect(bytes.tiles == planar.tiles && bytes.tiles == interleaved.tiles)
            let plane = 64 * 64
            var worst: Float = 0
            for patch in 0..<bytes.count {
                let base = patch * bytes.elementsPerPatch
                for pixel in 0..<plane {
                    for channel in 0..<3 {
                        let expected = (Float(bytes.bytes[base + 3 * pixel + channel]) / 255 - norm.mean[channel])
                            / norm.std[channel]
                        worst = max(worst, abs(planar.floats[base + channel * plane + pixel] - expected))
                        worst = max(worst, abs(interleaved.floats[base + 3 * pixel + channel] - expected))
                    }
                }
            }
            #expect(worst < 1e-5)
            batches += 1
        }
        #expect(batches == (grid.tiles.count + 15) / 16)
    }

    @Test func seekResumesAtATile() throws {
        let slide = try Self.coordinateSlide()
        let grid = try TileGrid(plan: try slide.plan(targetMPP: 0.5), tileSize: 100, mask: nil, minimumTissue: 0)
        let reader = try PatchReader(slide: slide, grid: grid, threads: 2)
        reader.seek(toTile: 10)
        let batch = PatchBatch(capacity: 4, tileSize: 100, format: .rgb8)
        #expect(try reader.next(into: batch))
        #expect(batch.tiles.first == grid.tiles[10])
        #expect(reader.remaining == grid.tiles.count - 14)
    }

    @Test(.needsSharedData) func resampledLevelReadsAtTargetMPP() throws {
        let slide = try Slide.open(path: TestData.slide("test3-TRITC-2-560.ndpi"))
        let plan = try slide.plan(targetMPP: 0.5)
        let grid = try TileGrid(plan: plan, tileSize: 224, mask: nil, minimumTissue: 0)
        // Level 1 is 1984 x 2432 at 0.456 um/px; at 0.5 um/px the image is 0.9127x that.
        #expect(plan.width == Int(1984 * plan.scale) && grid.columns == plan.width / 224)
        let reader = try PatchReader(slide: slide, grid: grid, threads: 2)
        let batch = PatchBatch(capacity: 32, tileSize: 224, format: .rgb8)
        var total = 0
        while try reader.next(into: batch) { total += batch.count }
        #expect(total == grid.totalCount)
    }

    @Test(.needsSharedData) func openSlidePyramidAndTIFFAgree() throws {
        // The pyramid TIFF is the CMU slide re-saved as JPEG: patches match within JPEG noise.
        let svs = try Slide.open(path: TestData.slide("CMU-1-Small-Region.svs"))
        let tif = try Slide.open(path: TestData.slide("CMU-1-Small-Region-pyramid-jpeg.tif"))
        let gridA = try TileGrid(plan: try svs.plan(targetMPP: 0.5), tileSize: 224, mask: nil, minimumTissue: 0)
        let gridB = try TileGrid(plan: try tif.plan(targetMPP: 0.5), tileSize: 224, mask: nil, minimumTissue: 0)
        #expect(gridA.tiles == gridB.tiles)
        let a = PatchBatch(capacity: 16, tileSize: 224, format: .rgb8)
        let b = PatchBatch(capacity: 16, tileSize: 224, format: .rgb8)
        #expect(try PatchReader(slide: svs, grid: gridA, threads: 2).next(into: a))
        #expect(try PatchReader(slide: tif, grid: gridB, threads: 2).next(into: b))
        var difference = 0
        for index in 0..<(a.count * a.elementsPerPatch) { difference += abs(Int(a.bytes[index]) - Int(b.bytes[index])) }
        #expect(Double(difference) / Double(a.count * a.elementsPerPatch) < 4)
    }
}
