import Foundation
import Testing
@testable import SlideIO

/// The scanner-like 40x slide and the ways its pixels reach a 0.5 um/px model.
@Suite("Decode routes", .serialized)
struct DecodeRouteTests {
    /// A 40x (0.25 um/px) Aperio-style slide with levels at 1/4/16, tissue cut from the real CMU slide when present.
    static let fortyX: String = {
        let path = TestData.temporaryDirectory().appendingPathComponent("forty-x.svs").path
        let texture = TestData.available ? TestData.slide("CMU-1-Small-Region.svs") : nil
        try! SyntheticSlide.writeAperio(to: path, width: 6144, height: 4096, texturePath: texture, mpp: 0.25,
                                        tissueFraction: 0.6)
        return path
    }()

    @Test func aperioSlideOpensAsAScannerWroteIt() throws {
        let slide = try Slide.open(path: Self.fortyX)
        #expect(slide.properties.vendor == "aperio")
        #expect(slide.properties.levels.map(\.downsample) == [1, 4, 16])
        #expect(slide.properties.levels.map(\.width) == [6144, 1536, 384])
        #expect(slide.properties.mppX == 0.25)
        #expect(slide.properties.objectivePower == 40)
        // No stored level at 0.5 um/px: level 0 is shrunk by exactly 2.
        let plan = try slide.plan(targetMPP: 0.5)
        #expect(plan.level == 0 && plan.scale == 0.5 && plan.mpp == 0.5 && plan.width == 3072)
    }

    @Test func reducedJPEGDecodeMatchesFullDecodeAndShrink() throws {
        let slide = try Slide.open(path: Self.fortyX)
        let grid = try TileGrid(plan: try slide.plan(targetMPP: 0.5), tileSize: 224, mask: try slide.detectTissue(),
                                minimumTissue: 0.5)
        #expect(grid.tiles.count > 40)
        let reduced = try PatchReader(slide: slide, grid: grid, threads: 2)
        let resized = try PatchReader(slide: slide, grid: grid, threads: 2, route: .resize)
        #expect(reduced.route == .reducedJPEG && resized.route == .resize)
        let a = PatchBatch(capacity: 32, tileSize: 224, format: .rgb8), b = PatchBatch(capacity: 32, tileSize: 224, format: .rgb8)
        // Mean absolute difference between the two routes' patches, with the second shifted by (dx, dy) pixels.
        var differences = [Double](repeating: 0, count: 3), count = 0
        var means = [[Double]](repeating: [0, 0, 0], count: 2)
        while try reduced.next(into: a) {
            #expect(try resized.next(into: b))
            #expect(a.tiles == b.tiles)
            for patch in 0..<a.count {
                let base = patch * a.elementsPerPatch
                for y in stride(from: 1, to: 223, by: 3) {
                    for x in stride(from: 1, to: 223, by: 3) {
                        for c in 0..<3 {
                            let i = base + (y * 224 + x) * 3 + c
                            for (k, shift) in [0, 1, 224].enumerated() {
                                differences[k] += Double(abs(Int(a.bytes[i]) - Int(b.bytes[i + 3 * shift])))
                            }
                            means[0][c] += Double(a.bytes[i])
                            means[1][c] += Double(b.bytes[i])
                        }
                    }
                }
                count += 74 * 74
            }
        }
        #expect(try !resized.next(into: b))
        #expect(reduced.fallbackPatches == 0, "every tile of the generated slide decodes at the reduced size")
        // libjpeg's reduced IDCT and libvips' Lanczos shrink are different low-pass filters: patches
        // differ in fine texture (a few levels), never in colour or position.
        let mean = differences[0] / Double(3 * count)
        #expect(mean < 8, "mean absolute difference \(mean)")
        #expect(differences[1] > 2.5 * differences[0] && differences[2] > 2.5 * differences[0],
                "one pixel off would match better: \(differences)")
        for c in 0..<3 { #expect(abs(means[0][c] - means[1][c]) / Double(count) < 1, "channel \(c)") }
        // Floats are the normalised bytes.
        let floats = try PatchReader(slide: slide, grid: grid, threads: 1)
        let f = PatchBatch(capacity: 4, tileSize: 224, format: .floatNCHW(.imageNet))
        let r = PatchBatch(capacity: 4, tileSize: 224, format: .rgb8)
        #expect(try floats.next(into: f))
        #expect(try PatchReader(slide: slide, grid: grid, threads: 1).next(into: r))
        let plane = 224 * 224
        var error: Float = 0
        for pixel in stride(from: 0, to: plane, by: 97) {
            for c in 0..<3 {
                let expected = (Float(r.bytes[3 * pixel + c]) / 255 - Normalisation.imageNet.mean[c]) / Normalisation.imageNet.std[c]
                error = max(error, abs(f.floats[c * plane + pixel] - expected))
            }
        }
        #expect(error < 1e-5)
    }

    @Test func routesThatDoNotApplyAreRefusedWithTheReason() throws {
        let slide = try Slide.open(path: Self.fortyX)
        let half = try TileGrid(plan: try slide.plan(targetMPP: 0.5), tileSize: 224, mask: nil, minimumTissue: 0)
        /// Asking for `route` on `grid` fails with a reason containing `reason`.
        func refused(_ grid: TileGrid, _ route: DecodeRoute, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation) {
            do {
                _ = try PatchReader(slide: slide, grid: grid, threads: 1, route: route)
                Issue.record("\(route) accepted", sourceLocation: sourceLocation)
            } catch {
                #expect("\(error)".contains(reason), "\(error)", sourceLocation: sourceLocation)
            }
        }
        refused(half, .storedLevel, "no stored level is at 0.5 um/px")
        let full = try TileGrid(plan: try slide.plan(targetMPP: 0.25), tileSize: 224, mask: nil, minimumTissue: 0)
        #expect(try PatchReader(slide: slide, grid: full, threads: 1).route == .storedLevel)
        refused(full, .reducedJPEG, "nothing to shrink")
        // A scale that is not 1/2, 1/4 or 1/8 goes through libvips.
        let odd = try TileGrid(plan: try slide.plan(targetMPP: 0.6), tileSize: 224, mask: nil, minimumTissue: 0)
        #expect(try PatchReader(slide: slide, grid: odd, threads: 1).route == .resize)
        refused(odd, .reducedJPEG, "not 1/2, 1/4 or 1/8")
    }

    @Test func planSnapsNearPowersOfTwo() throws {
        let slide = try Slide.open(path: Self.fortyX, mppOverride: 0.2527)
        let plan = try slide.plan(targetMPP: 0.5)
        #expect(plan.scale == 0.5)
        #expect(abs((plan.mpp ?? 0) - 0.5054) < 1e-9)
        #expect(plan.width == 3072)
    }

    @Test func aDamagedTileIsAnErrorNotAGreyPatch() throws {
        let copy = TestData.temporaryDirectory().appendingPathComponent("forty-x-damaged.svs").path
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: Self.fortyX, toPath: copy)
        let slide = try Slide.open(path: copy)
        let grid = try TileGrid(plan: try slide.plan(targetMPP: 0.5), tileSize: 224, mask: try slide.detectTissue(),
                                minimumTissue: 0.5)
        // An end-of-image marker in the middle of the entropy data of the tiles under the first patches.
        guard case .success(let layout) = JPEGTileLayout.find(path: copy, width: 6144, height: 4096) else {
            Issue.record("no tile layout")
            return
        }
        let handle = try #require(FileHandle(forWritingAtPath: copy))
        let first = grid.tiles[0]
        for row in (first.y * 2 / 256)...((first.y * 2 + 447) / 256) {
            for column in (first.x * 2 / 256)...((first.x * 2 + 447) / 256) {
                let index = row * layout.columns + column
                try handle.seek(toOffset: layout.offsets[index] + layout.counts[index] / 2)
                try handle.write(contentsOf: Data([0xFF, 0xD9, 0xFF, 0xD9]))
            }
        }
        try handle.close()
        let reader = try PatchReader(slide: slide, grid: grid, threads: 2)
        #expect(reader.route == .reducedJPEG)
        let batch = PatchBatch(capacity: 8, tileSize: 224, format: .rgb8)
        do {
            _ = try reader.next(into: batch)
            Issue.record("a damaged tile decoded")
        } catch {
            #expect("\(error)".contains("tile"), "\(error)")
        }
    }
}
