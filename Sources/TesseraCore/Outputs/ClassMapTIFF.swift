import Foundation
import SlideIO

/// classmap.tif and probability.tif: the results at slide geometry for QuPath, ASAP, OpenSlide
/// and libvips. One pixel per tile cell (`tile_step` level-0 pixels square), pixel (0, 0) at the
/// slide's level-0 origin, the image covering the whole slide, the pixel size (slide MPP x step)
/// in the TIFF resolution tags; tiled, pyramidal, deflate, written by libvips.
/// classmap.tif: one byte, class index + 1 (0 = not analysed). probability.tif: one band per
/// class (or only the card's `class_of_interest`), probability x 255.
enum ClassMapTIFF {
    static func write(_ inputs: OutputInputs, directory: String) throws {
        let step = inputs.levelZeroStep
        guard step > 0 else { return }
        let width = max(1, Int((Double(inputs.slideWidth) / step).rounded(.up)))
        let height = max(1, Int((Double(inputs.slideHeight) / step).rounded(.up)))
        let names = JobOutputs.classNames(inputs)
        let bands = interest(inputs).map { [$0] } ?? Array(names.indices)
        let mpp = inputs.slideMPP.map { $0 * step }
        var classes = MapImage(width: width, height: height, bands: 1, mpp: mpp)
        var probabilities = MapImage(width: width, height: height, bands: bands.count, mpp: mpp)
        for (index, tile) in inputs.grid.tiles.enumerated() where index < inputs.scores.count {
            guard tile.column < width, tile.row < height else { continue }
            let scores = inputs.scores[index]
            let pixel = tile.row * width + tile.column
            classes.pixels[pixel] = UInt8(min(255, JobOutputs.argmax(scores) + 1))
            for (band, klass) in bands.enumerated() where klass < scores.count {
                probabilities.pixels[pixel * bands.count + band] = UInt8((min(1, max(0, scores[klass])) * 255).rounded())
            }
        }
        try classes.writeTIFF(to: directory + "/classmap.tif", nearest: true)
        try probabilities.writeTIFF(to: directory + "/probability.tif", nearest: false)
    }

    /// The index of the card's `class_of_interest`, when it names one of the classes.
    static func interest(_ inputs: OutputInputs) -> Int? {
        guard let data = inputs.cardJSON, let card = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let name = card["class_of_interest"] as? String else { return nil }
        return JobOutputs.classNames(inputs).firstIndex(of: name)
    }
}
