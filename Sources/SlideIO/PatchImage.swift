import Foundation

/// A labelled patch stored as an ordinary image file (JPEG, PNG, TIFF), prepared for a model the
/// way the slide pipeline prepares slide tiles: resampled with the same libvips resize, read with
/// the same normalising region reader.
public enum PatchImage {
    /// How a patch image is brought to the model's input size.
    public enum Fit: Sendable, Equatable {
        /// Resampled by `scale` (the image's pixel size over the model's), then the centre
        /// `size` x `size` is taken; an image smaller than that after scaling is an error.
        case scaleThenCrop(scale: Double)
        /// Resized to `size` x `size` whatever its size (an image already that size is used as is).
        case resize
    }

    /// Reads the image at `path` into `destination` (3 x size x size normalised floats, planar).
    public static func read(path: String, size: Int, fit: Fit, normalisation: Normalisation,
                            into destination: UnsafeMutablePointer<Float>) throws(SlideError) {
        try VipsRuntime.ensure()
        guard FileManager.default.fileExists(atPath: path) else { throw .notFound(path: path) }
        guard var image = VipsImageRef.file(path: path) else {
            throw .unsupportedFormat(path: path, reason: VipsRuntime.takeError() ?? "not an image libvips can read")
        }
        guard image.isUChar, image.bands == 3 || image.bands == 4 || image.bands == 1 else {
            throw .unsupportedFormat(path: path, reason: "\(image.bands)-band image; patches must be 8-bit RGB")
        }
        switch fit {
        case .resize:
            if image.width != size || image.height != size {
                guard let resized = image.resized(horizontal: Double(size) / Double(image.width),
                                                  vertical: Double(size) / Double(image.height)) else {
                    throw .readFailed(path: path, reason: VipsRuntime.takeError() ?? "resize failed")
                }
                image = resized
            }
        case .scaleThenCrop(let scale):
            guard scale > 0, scale.isFinite else { throw .invalidArgument("patch scale must be positive") }
            if abs(scale - 1) > 1e-6 {
                guard let resized = image.resized(horizontal: scale, vertical: scale) else {
                    throw .readFailed(path: path, reason: VipsRuntime.takeError() ?? "resize failed")
                }
                image = resized
            }
            guard image.width >= size, image.height >= size else {
                throw .invalidArgument("\(path): \(image.width) x \(image.height) px at the model's pixel size, "
                                       + "smaller than its \(size) px input")
            }
        }
        guard let region = VipsRegionRef(image: image) else {
            throw .readFailed(path: path, reason: VipsRuntime.takeError() ?? "no region")
        }
        let left = (image.width - size) / 2
        let top = (image.height - size) / 2
        guard region.readFloat(x: left, y: top, width: size, height: size, mean: normalisation.mean,
                               std: normalisation.std, planar: true, into: destination) else {
            throw .readFailed(path: path, reason: VipsRuntime.takeError() ?? "decode failed")
        }
    }
}
