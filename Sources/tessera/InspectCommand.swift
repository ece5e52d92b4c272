import ArgumentParser
import TesseraCore

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show a slide's size, pyramid levels, pixel size and scanner facts.")

    @Argument(help: "The slide file (SVS, NDPI, MRXS, pyramidal TIFF, OME-TIFF, ...).")
    var slide: String

    @Option(name: .customLong("slide-mpp"), help: "State the slide's microns per pixel when its metadata lacks it.")
    var slideMPP: Double?

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try reportingErrors {
            let opened = try Slide.open(path: slide, mppOverride: slideMPP)
            let report = SlideReport(opened.properties)
            print(json ? JSONOutput.line(report) : report.text)
        }
    }
}
