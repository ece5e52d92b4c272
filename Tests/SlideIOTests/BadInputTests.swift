import Foundation
import Testing
@testable import SlideIO

@Suite("Bad input gives a clear error")
struct BadInputTests {
    @Test func missingFile() {
        #expect(throws: SlideError.notFound(path: "/nonexistent/slide.svs")) {
            try Slide.open(path: "/nonexistent/slide.svs")
        }
    }

    @Test func directoryIsNotASlide() {
        let directory = TestData.temporaryDirectory()
        #expect(throws: SlideError.notFound(path: directory.path)) { try Slide.open(path: directory.path) }
    }

    @Test func textFile() throws {
        let url = TestData.temporaryDirectory().appendingPathComponent("notes.svs")
        try Data("Patient slide list\nnot an image\n".utf8).write(to: url)
        let error = #expect(throws: SlideError.self) { try Slide.open(path: url.path) }
        #expect(error?.description.contains("text file") == true)
        #expect(error?.description.contains("\n") == false)
    }

    @Test func emptyFile() throws {
        let url = TestData.temporaryDirectory().appendingPathComponent("empty.tif")
        try Data().write(to: url)
        let error = #expect(throws: SlideError.self) { try Slide.open(path: url.path) }
        #expect(error?.description.contains("not a slide") == true)
    }

    @Test(.needsSharedData) func truncatedTIFF() throws {
        let source = try Data(contentsOf: URL(fileURLWithPath: TestData.slide("CMU-1-Small-Region-pyramid-jpeg.tif")))
        for length in [8, 200, 5_000, source.count / 2] {
            let url = TestData.temporaryDirectory().appendingPathComponent("truncated-\(length).tif")
            try source.prefix(length).write(to: url)
            do {
                // Half a pyramid may still open (its header and first tiles are there); reading every tile must then fail cleanly.
                let slide = try Slide.open(path: url.path)
                let plan = try slide.plan(targetMPP: nil)
                let grid = try TileGrid(plan: plan, tileSize: 224, mask: nil, minimumTissue: 0)
                let reader = try PatchReader(slide: slide, grid: grid, threads: 2)
                let batch = PatchBatch(capacity: 16, tileSize: 224, format: .rgb8)
                while try reader.next(into: batch) {}
            } catch {
                #expect(!error.description.isEmpty && !error.description.contains("\n"))
            }
        }
    }

    @Test(.needsSharedData, arguments: [
        "boxes.tiff", "boxes_0.dcm", "boxes_1.dcm", "ezwsi_test_wsi.dcm", "kidney-48-5.tif",
        "pathml_small_HE_levels.tiff", "pathml_small_dicom.dcm", "pathml_small_vectra.qptiff", "small.svs",
        "unreadable.svs",
    ])
    func oddInputs(name: String) throws {
        let path = TestData.odd(name)
        do {
            let slide = try Slide.open(path: path, mppOverride: 0.5)
            let plan = try slide.plan(targetMPP: 0.5)
            let mask = try slide.detectTissue()
            let grid = try TileGrid(plan: plan, tileSize: 64, mask: mask, minimumTissue: 0.5)
            #expect(grid.tiles.count <= grid.totalCount)
            if !grid.tiles.isEmpty {
                let reader = try PatchReader(slide: slide, grid: grid, threads: 2)
                let batch = PatchBatch(capacity: 8, tileSize: 64, format: .floatNCHW(.unit))
                while try reader.next(into: batch) {
                    #expect(batch.floats.prefix(batch.count * batch.elementsPerPatch).allSatisfy { $0 >= 0 && $0 <= 1 })
                }
            }
        } catch {
            #expect(error.description.hasPrefix(path), "error names the file: \(error)")
            #expect(!error.description.contains("\n"))
            if name.hasSuffix(".dcm") { #expect(error.description.contains("DICOM")) }
        }
    }

    @Test(.needsSharedData) func unreadableSVSFailsAtOpen() {
        let error = #expect(throws: SlideError.self) { try Slide.open(path: TestData.odd("unreadable.svs")) }
        guard case .readFailed = error else {
            Issue.record("expected readFailed, got \(String(describing: error))")
            return
        }
    }

    @Test func badArguments() throws {
        let plan = ReadPlan(level: 0, levelMPP: 0.5, mpp: 0.5, scale: 1, width: 1000, height: 1000, downsample: 1)
        #expect(throws: SlideError.self) { try TileGrid(plan: plan, tileSize: 0, mask: nil, minimumTissue: 0.5) }
        #expect(throws: SlideError.self) { try TileGrid(plan: plan, tileSize: 224, overlap: 224, mask: nil, minimumTissue: 0.5) }
        #expect(throws: SlideError.self) { try TileGrid(plan: plan, tileSize: 224, mask: nil, minimumTissue: 1.5) }
    }
}
