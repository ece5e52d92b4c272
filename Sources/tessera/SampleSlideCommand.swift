import ArgumentParser
import TesseraCore

struct SampleSlideCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample-slide",
        abstract: "Write a synthetic H&E-like pyramidal JPEG TIFF (for demos, tests and benchmarks).")

    @Argument(help: "Output .tif path.")
    var output: String

    @Option(help: "Width in pixels.")
    var width = 8_000

    @Option(help: "Height in pixels.")
    var height = 6_000

    @Option(help: "Microns per pixel to record.")
    var mpp = 0.5

    @Option(help: "Take the tissue texture from this slide instead of generating it.")
    var texture: String?

    @Option(name: .customLong("tissue-fraction"), help: "Approximate share of the slide covered by tissue.")
    var tissueFraction = 0.45

    func run() throws {
        try reportingErrors {
            try SyntheticSlide.write(to: output, width: width, height: height, texturePath: texture, mpp: mpp,
                                     tissueFraction: tissueFraction)
            print(output)
        }
    }
}
