import ArgumentParser
import Foundation
import TesseraCore

struct TilesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tiles",
        abstract: "Detect tissue, lay the tile grid at a pixel size and read every tissue tile.")

    @Argument(help: "The slide file.")
    var slide: String

    @Option(name: .customLong("tile-size"), help: "Tile side in pixels.")
    var tileSize = 224

    @Option(help: "Target microns per pixel of the patches (0.5 = 20x).")
    var mpp = 0.5

    @Option(help: "Overlap between neighbouring tiles in pixels.")
    var overlap = 0

    @Option(name: .customLong("min-tissue"), help: "Minimum tissue fraction (0...1) a tile needs.")
    var minTissue = 0.5

    @Option(name: .customLong("slide-mpp"), help: "State the slide's microns per pixel when its metadata lacks it.")
    var slideMPP: Double?

    @Option(help: "Write a PNG of the tissue mask with the kept tiles drawn over a thumbnail.")
    var mask: String?

    @Option(name: .customLong("tiles-out"), help: "Write the kept tiles as CSV (grid position, pixels, tissue fraction).")
    var tilesOut: String?

    @Option(name: .customLong("decode-route"), help: "How stored pixels become patches: stored-level, resize or reduced-jpeg (default: the reader's choice, reduced-jpeg where a JPEG-tiled level is shrunk by 2, 4 or 8).")
    var decodeRoute: String?

    @Option(help: "Reader threads (default: all cores).")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Flag(name: .customLong("no-read"), help: "Only build the grid; do not decode the tiles.")
    var noRead = false

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try reportingErrors {
            var options = TilingOptions()
            options.tileSize = tileSize
            options.targetMPP = mpp
            options.overlap = overlap
            options.minimumTissue = minTissue
            options.slideMPP = slideMPP
            options.threads = max(1, threads)
            options.readPixels = !noRead
            if let decodeRoute {
                guard let route = DecodeRoute(rawValue: decodeRoute) else {
                    throw SlideError.invalidArgument("--decode-route \(decodeRoute): use "
                                                     + DecodeRoute.allCases.map(\.rawValue).joined(separator: ", "))
                }
                options.decodeRoute = route
            }
            let report = try Tiling.run(path: slide, options: options, maskPath: mask, tilesPath: tilesOut)
            print(json ? JSONOutput.line(report) : report.text)
        }
    }
}
