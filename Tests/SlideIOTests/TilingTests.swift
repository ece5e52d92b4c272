import Foundation
import Testing
@testable import SlideIO

@Suite("Tissue detection and tile grids")
struct TilingTests {
    @Test(.needsSharedData) func cmuHasSomeTissueTiles() throws {
        let slide = try Slide.open(path: TestData.slide("CMU-1-Small-Region.svs"))
        let plan = try slide.plan(targetMPP: 0.5)
        #expect(plan.level == 0 && !plan.isResampled)
        let mask = try slide.detectTissue()
        let grid = try TileGrid(plan: plan, tileSize: 224, mask: mask, minimumTissue: 0.5)
        #expect(grid.columns == 2220 / 224 && grid.rows == 2967 / 224)
        #expect(grid.tiles.count > 0 && grid.tiles.count < grid.totalCount)
        // The CMU skin section covers roughly a third of the field.
        #expect(mask.tissueFraction > 0.2 && mask.tissueFraction < 0.5)
        // Storage order: row-major.
        let order = grid.tiles.map { $0.row * grid.columns + $0.column }
        #expect(order == order.sorted())
        #expect(grid.tiles.allSatisfy { $0.tissueFraction >= 0.5 })
    }

    @Test(.needsSharedData) func blankTIFFHasNoTissue() throws {
        let slide = try Slide.open(path: TestData.odd("kidney-48-5.tif"), mppOverride: 0.5)
        let mask = try slide.detectTissue()
        let grid = try TileGrid(plan: try slide.plan(targetMPP: 0.5), tileSize: 224, mask: mask, minimumTissue: 0.5)
        #expect(grid.totalCount > 0)
        #expect(grid.tiles.count < grid.totalCount / 4)
    }

    @Test func overlapShrinksStride() throws {
        let plan = ReadPlan(level: 0, levelMPP: 0.5, mpp: 0.5, scale: 1, width: 1000, height: 500, downsample: 1)
        let grid = try TileGrid(plan: plan, tileSize: 200, overlap: 50, mask: nil, minimumTissue: 0)
        #expect(grid.stride == 150)
        #expect(grid.columns == (1000 - 200) / 150 + 1)
        #expect(grid.rows == (500 - 200) / 150 + 1)
        #expect(grid.tiles.count == grid.totalCount)
        #expect(grid.tiles[1].x == 150)
        let small = ReadPlan(level: 0, levelMPP: 0.5, mpp: 0.5, scale: 1, width: 100, height: 100, downsample: 1)
        #expect(try TileGrid(plan: small, tileSize: 224, mask: nil, minimumTissue: 0).tiles.isEmpty)
    }

    @Test func otsuSplitsTwoModes() {
        var histogram = [Int](repeating: 0, count: 256)
        for value in 5...15 { histogram[value] = 100 }
        for value in 120...140 { histogram[value] = 80 }
        let threshold = TissueMask.otsu(histogram)
        #expect(threshold >= 15 && threshold < 120)
    }

    @Test func maskCleanupRemovesSpecksAndFillsHoles() {
        // A 40x40 tissue square with a 2x2 hole, plus a lone speck.
        let side = 100
        var thumbnail = [UInt8](repeating: 245, count: side * side * 3)
        func paint(_ x: Int, _ y: Int, _ rgb: (UInt8, UInt8, UInt8)) {
            let i = 3 * (y * side + x)
            (thumbnail[i], thumbnail[i + 1], thumbnail[i + 2]) = rgb
        }
        for y in 30..<70 { for x in 30..<70 { paint(x, y, (200, 90, 160)) } }
        for y in 50..<52 { for x in 50..<52 { paint(x, y, (245, 245, 245)) } }
        paint(5, 5, (200, 90, 160))
        let mask = TissueMask(thumbnail: thumbnail, width: side, height: side, downsampleX: 10, downsampleY: 10)
        #expect(mask.pixels[5 * side + 5] == 0, "speck removed")
        #expect(mask.pixels[50 * side + 50] == 1, "hole filled")
        #expect(abs(mask.tissueFraction - 0.16) < 0.001)
        // Fractions are in level-0 units (10 px per mask px).
        #expect(mask.fraction(x: 300, y: 300, width: 400, height: 400) == 1)
        #expect(mask.fraction(x: 0, y: 0, width: 200, height: 200) == 0)
        #expect(abs(mask.fraction(x: 200, y: 300, width: 200, height: 100) - 0.5) < 1e-9)
    }

    @Test func syntheticSlideIslandsAreDetected() throws {
        let url = TestData.temporaryDirectory().appendingPathComponent("synthetic.tif")
        try SyntheticSlide.write(to: url.path, width: 6000, height: 4000, mpp: 0.25, tissueFraction: 0.4)
        let slide = try Slide.open(path: url.path)
        #expect(slide.properties.width == 6000 && slide.properties.height == 4000)
        #expect(abs(slide.properties.mppX! - 0.25) < 1e-6)
        #expect(slide.properties.levels.count >= 4)
        let plan = try slide.plan(targetMPP: 0.5)
        #expect(plan.level == 1 && !plan.isResampled)
        let mask = try slide.detectTissue()
        #expect(abs(mask.tissueFraction - 0.4) < 0.1)
        let grid = try TileGrid(plan: plan, tileSize: 224, mask: mask, minimumTissue: 0.5)
        let share = Double(grid.tiles.count) / Double(grid.totalCount)
        #expect(share > 0.25 && share < 0.55)
    }

    @Test func emptySlideIsAWellDefinedEmptyResult() throws {
        let url = TestData.temporaryDirectory().appendingPathComponent("blank.tif")
        try SyntheticSlide.write(to: url.path, width: 2000, height: 2000, mpp: 0.5, tissueFraction: 0)
        let slide = try Slide.open(path: url.path)
        let mask = try slide.detectTissue()
        let grid = try TileGrid(plan: try slide.plan(targetMPP: 0.5), tileSize: 224, mask: mask, minimumTissue: 0.5)
        #expect(grid.totalCount == 64)
        #expect(grid.tiles.isEmpty)
        let reader = try PatchReader(slide: slide, grid: grid, threads: 2)
        let batch = PatchBatch(capacity: 4, tileSize: 224, format: .rgb8)
        #expect(try reader.next(into: batch) == false)
        #expect(batch.count == 0)
    }
}
