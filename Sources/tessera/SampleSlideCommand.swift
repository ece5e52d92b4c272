import ArgumentParser
import TesseraCore

struct SampleSlideCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample-slide",
        abstract: "Write a synthetic H&E-like pyramidal JPEG TIFF, or an Aperio-style SVS (for demos, tests and benchmarks).")

    @Argument(help: "Output path: .tif for a generic pyramidal TIFF (levels 1/2/4/...), .svs for an Aperio-style SVS (levels 1/4/16, MPP and magnification in its description, as Aperio scanners write).")
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
            guard mpp > 0, mpp.isFinite else { throw ValidationError("--mpp must be a positive number of microns per pixel") }
            if output.lowercased().hasSuffix(".svs") {
                try SyntheticSlide.writeAperio(to: output, width: width, height: height, texturePath: texture, mpp: mpp,
                                               magnification: max(1, Int((10 / mpp).rounded())), tissueFraction: tissueFraction)
            } else {
                try SyntheticSlide.write(to: output, width: width, height: height, texturePath: texture, mpp: mpp,
                                         tissueFraction: tissueFraction)
            }
            print(output)
        }
    }
}
