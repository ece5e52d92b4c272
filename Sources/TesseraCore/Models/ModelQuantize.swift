import Engine
import Foundation
import SlideIO
import Synchronization

/// `tessera models quantize MODEL --calibration DIR`: the activation ranges of the model's
/// convolutions and dense layers on real tiles, written next to the model for its int8 path.
public enum ModelQuantize {
    /// Where a model's calibration lives: `models/<name>/calibration.json` for a model folder,
    /// `<file>.calibration.json` beside a bare `.onnx` file.
    public static func calibrationPath(forModelFile path: String) -> String {
        let url = URL(fileURLWithPath: path)
        if url.lastPathComponent == "model.onnx" { return url.deletingLastPathComponent().appendingPathComponent("calibration.json").path }
        return url.deletingPathExtension().path + ".calibration.json"
    }

    /// Image files under `directory` (recursively), sorted by relative path.
    static func images(in directory: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError.invalidArgument("--calibration \(directory) is not a directory")
        }
        let extensions: Set<String> = ["jpg", "jpeg", "png", "tif", "tiff"]
        let relative = (FileManager.default.enumerator(atPath: directory)?.allObjects as? [String] ?? [])
            .filter { extensions.contains(URL(fileURLWithPath: $0).pathExtension.lowercased()) }
            .sorted()
        guard !relative.isEmpty else { throw ModelError.invalidArgument("--calibration \(directory) holds no .jpg/.png/.tif images") }
        return relative.map { directory + "/" + $0 }
    }

    /// Up to `limit` patches of `size` px, NCHW, normalised: the first patch of the grid of each of
    /// `limit` images spread evenly over the sorted list (so every class folder contributes).
    public static func calibrationInput(directory: String, size: Int, normalisation: Normalisation,
                                        limit: Int = 256) throws -> Tensor {
        let files = try images(in: directory)
        let count = min(limit, files.count)
        let chosen = (0..<count).map { files[$0 * files.count / count] }
        let batch = PatchBatch(capacity: 1, tileSize: size, format: .floatNCHW(normalisation))
        var data: [Float] = []
        data.reserveCapacity(count * 3 * size * size)
        for file in chosen {
            let slide = try Slide.open(path: file)
            let grid = try TileGrid(plan: slide.plan(targetMPP: nil), tileSize: size, mask: nil, minimumTissue: 0)
            guard !grid.tiles.isEmpty else { throw ModelError.invalidArgument("\(file) is smaller than the model's \(size) px input") }
            let reader = try PatchReader(slide: slide, grid: grid, threads: 1)
            guard try reader.next(into: batch) else { continue }
            data.append(contentsOf: batch.floats.prefix(3 * size * size))
        }
        return Tensor(shape: [data.count / (3 * size * size), 3, size, size], data: data)
    }

    /// Calibrates the model on the tiles of `directory` and writes the file; returns a one-line summary.
    public static func run(model nameOrPath: String, calibrationDirectory: String, limit: Int = 256) throws -> String {
        let reference = try ModelCatalog.resolve(try ModelBench.resolve(nameOrPath))
        guard reference.card.input.colourTransform == nil else {
            throw ModelError.invalidArgument("\(reference.name) takes EHO input (colour_transform); calibration reads RGB patches, "
                                             + "so INT8 calibration is not available for it")
        }
        let model = try Model(contentsOf: reference.path)
        guard model.inputShape.count == 3, model.inputShape[0] == 3, model.inputShape[1] == model.inputShape[2] else {
            throw ModelError.invalidArgument("quantize needs a square RGB NCHW input, the model takes \(model.inputShape)")
        }
        let input = try calibrationInput(directory: calibrationDirectory, size: model.inputShape[1],
                                         normalisation: reference.card.normalisation, limit: limit)
        let calibration = try model.calibrate(input)
        let path = calibrationPath(forModelFile: reference.path)
        try calibration.encoded().write(to: URL(fileURLWithPath: path), options: .atomic)
        return "wrote \(path): ranges of \(calibration.ranges.count) tensors from \(calibration.images) images"
    }

    /// The calibration written for the model file, or nil (a QDQ model brings its own ranges; the
    /// engine refuses int8 for any other model without one).
    public static func loadIfPresent(forModelFile path: String) throws -> Calibration? {
        guard let data = FileManager.default.contents(atPath: calibrationPath(forModelFile: path)) else { return nil }
        return try Calibration.decode(data)
    }

    /// A QDQ model (quantised by ONNX Runtime): its activation ranges are in the file, no calibration needed.
    /// Decoding the file once per model content (`sha256`, which intake already has), not per upload.
    public static func bringsOwnRanges(modelFile path: String, sha256: String) -> Bool {
        if let known = qdqByDigest.withLock({ $0[sha256] }) { return known }
        let answer = Model.bringsCalibration(path: path)
        qdqByDigest.withLock { $0[sha256] = answer }
        return answer
    }

    private static let qdqByDigest = Mutex<[String: Bool]>([:])
}
