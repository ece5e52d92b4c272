import Foundation
import Testing
@testable import SlideIO

/// The libvips pieces behind pictures, maps and the viewer: text, map TIFFs, deep-zoom tiles.
@Suite("Pictures, maps and deep-zoom tiles")
struct PicturesIOTests {
    @Test func mapTIFFRoundTripsWithPyramidAndPixelSize() throws {
        var map = MapImage(width: 300, height: 200, bands: 2, mpp: 112.0)
        for index in 0..<(300 * 200) {
            map.pixels[2 * index] = UInt8(index % 7)
            map.pixels[2 * index + 1] = UInt8((index / 300) % 256)
        }
        let path = TestData.temporaryDirectory().appendingPathComponent("map.tif").path
        try map.writeTIFF(to: path, nearest: true)
        let back = try MapImage.read(path: path)
        #expect(back.width == 300 && back.height == 200 && back.bands == 2)
        #expect(abs((back.mpp ?? 0) - 112.0) < 0.01)
        #expect(back.pages >= 2, "pyramidal: \(back.pages) pages")
        #expect(back.pixels == map.pixels, "lossless")
    }

    @Test func textIsRenderedWhereAsked() throws {
        let text = Picture.Text("Tumour 12.5 %", x: 10, y: 8, colour: (0, 0, 0))
        let size = try Picture.size(of: text)
        #expect(size.width > 60 && size.height > 8, "rendered size \(size)")
        var picture = Picture(width: 220, height: 40)
        picture.add(text)
        let path = TestData.temporaryDirectory().appendingPathComponent("text.png").path
        try picture.writePNG(to: path)
        let back = try Picture.readRGB(path: path)
        var inside = 0, outside = 0
        for y in 0..<back.height {
            for x in 0..<back.width where back.pixel(x, y).0 < 128 {
                if x >= 10 && x < 10 + size.width && y >= 8 && y < 8 + size.height { inside += 1 } else { outside += 1 }
            }
        }
        #expect(inside > 60 && outside == 0, "ink inside \(inside), outside \(outside)")
        // Markup characters in names (H&E, <...>) are text, not Pango markup.
        let name = Picture.Text("H&E <case 7>.svs", x: 0, y: 0, colour: (0, 0, 0))
        let plain = try Picture.size(of: Picture.Text("HE case 7.svs", x: 0, y: 0)).width
        #expect(try Picture.size(of: name).width > plain)
    }

    @Test(.needsSharedData) func deepZoomTilesMatchTheSlide() throws {
        let slide = try Slide.open(path: TestData.slide("CMU-1-Small-Region.svs"))
        let zoom = DeepZoom(slide: slide)
        #expect(zoom.maxLevel == 12, "2967 px high: 2^12 covers it")
        #expect(zoom.grid(level: 12) == (9, 12) && zoom.grid(level: 0) == (1, 1))
        let directory = TestData.temporaryDirectory().path
        func decode(_ data: Data, _ name: String) throws -> Picture {
            try data.write(to: URL(fileURLWithPath: directory + "/" + name))
            return try Picture.readRGB(path: directory + "/" + name)
        }
        let tile = try decode(try zoom.tile(level: 12, column: 2, row: 3), "full.jpg")
        #expect(tile.width == 256 && tile.height == 256)
        let level = try slide.openLevel(0)
        let region = try #require(VipsRegionRef(image: level))
        var expected = [UInt8](repeating: 0, count: 256 * 256 * 3)
        _ = expected.withUnsafeMutableBufferPointer { region.readRGB(x: 512, y: 768, width: 256, height: 256, into: $0.baseAddress!) }
        let difference = zip(tile.pixels, expected).reduce(0) { $0 + abs(Int($1.0) - Int($1.1)) }
        #expect(Double(difference) / Double(expected.count) < 8, "JPEG tile matches the slide region")
        // The last column's tile is padded white beyond the slide's right edge (2220 = 8 * 256 + 172).
        let edge = try decode(try zoom.tile(level: 12, column: 8, row: 0), "edge.jpg")
        #expect(edge.width == 256 && (190..<256).allSatisfy { edge.pixel($0, 100).0 > 245 && edge.pixel($0, 100).1 > 245 })
        #expect(throws: SlideError.self) { try zoom.tile(level: 12, column: 9, row: 0) }
        #expect(throws: SlideError.self) { try zoom.tile(level: 13, column: 0, row: 0) }
    }
}
