import Dispatch
import Engine
import Foundation
import SlideIO

/// What `tessera models eval` is asked to measure.
public struct ModelEvaluationOptions: Sendable {
    /// Model name or path.
    public var model: String
    /// A folder with one subfolder per class, each holding image files.
    public var patches: String
    /// Folder name -> model class (`colon_aca=TUM`); a folder mapped to `ignore` is left out on purpose.
    public var classMap: [String: String] = [:]
    /// Pixel size of the patch images (um/px). When set, images are resampled to the model's MPP
    /// and centre-cropped to its input; when nil, they are resized to the input size (an image
    /// already that size is used as it is: the card's MPP is assumed).
    public var patchMPP: Double?
    /// A CSV naming the images to evaluate (`file` column, relative to `patches`), with an optional
    /// `group` column (bootstrap confidence intervals resample groups) and `split` column.
    public var manifest: String?
    /// Keep only manifest rows whose `split` equals this.
    public var split: String?
    /// Engine precision: `fp32`, or `int8` (with the calibration `tessera models quantize` wrote).
    public var precision: String = "fp32"
    /// The engine's other settings (the command line builds them from the environment).
    public var engine = EngineOptions()
    public var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    public var batch: Int = 32
    /// Bootstrap resamples for the 95% intervals (0: none).
    public var bootstrap: Int = 1000
    public var modelsDirectory: String = ModelCatalog.directory

    public init(model: String, patches: String) {
        self.model = model
        self.patches = patches
    }

    /// The engine settings of the `TESSERA_ENGINE_*` variables (for the command line).
    public mutating func useEnvironment() {
        engine = EngineOptions.fromEnvironment()
    }

    /// Parses `a=b,c=d`.
    public static func parseClassMap(_ text: String) throws -> [String: String] {
        var map: [String: String] = [:]
        for pair in text.split(separator: ",") where !pair.trimmingCharacters(in: .whitespaces).isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw ModelEvaluationError("--class-map: '\(pair)' is not FOLDER=CLASS")
            }
            guard map[parts[0]] == nil else { throw ModelEvaluationError("--class-map: folder '\(parts[0])' is mapped twice") }
            map[parts[0]] = parts[1]
        }
        return map
    }
}

/// A refusal of `models eval`, one line.
public struct ModelEvaluationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The measured accuracy of a model on labelled patches.
public struct ModelEvaluation: Codable, Sendable {
    public struct ClassMetrics: Codable, Sendable, Equatable {
        /// Images of this class (true label).
        public var support: Int
        /// Images predicted as this class.
        public var predicted: Int
        public var precision: Double?
        public var recall: Double?
        public var f1: Double?
    }

    public struct Confusion: Codable, Sendable {
        /// Row labels: the true classes present.
        public var rows: [String]
        /// Column labels: the model's classes.
        public var columns: [String]
        public var matrix: [[Int]]
    }

    /// A 95% interval from the bootstrap.
    public struct Interval: Codable, Sendable, Equatable {
        public var low: Double
        public var high: Double
        /// `groups` or `images`: what was resampled.
        public var resampled: String
        public var resamples: Int
    }

    public var model: String
    public var modelSHA256Prefix: String?
    public var patches: String
    public var images: Int
    public var classes: [String]
    public var folders: [String: String]
    public var accuracy: Double
    public var balancedAccuracy: Double
    public var accuracyCI: Interval?
    public var balancedAccuracyCI: Interval?
    public var perClass: [String: ClassMetrics]
    public var confusion: Confusion
    /// Expected calibration error of the top class (15 equal-width bins).
    public var ece: Double
    public var meanConfidence: Double
    public var imagesPerSecond: Double
    public var seconds: Double
    public var precision: String
    public var mpp: Double?
    public var fit: String
    public var groups: Int?

    enum CodingKeys: String, CodingKey {
        case model, patches, images, classes, folders, accuracy, confusion, ece, seconds, precision, mpp, fit, groups
        case modelSHA256Prefix = "model_sha256_16"
        case balancedAccuracy = "balanced_accuracy", accuracyCI = "accuracy_ci95", balancedAccuracyCI = "balanced_accuracy_ci95"
        case perClass = "per_class", meanConfidence = "mean_confidence", imagesPerSecond = "images_per_second"
    }
}

/// `tessera models eval`: runs a model on folders of labelled patch images, prepared the way the
/// slide pipeline prepares tiles, and reports accuracy, balanced accuracy, per-class precision and
/// recall, the confusion matrix and calibration.
public enum ModelEvaluator {
    static let imageExtensions: Set<String> = ["jpg", "jpeg", "png", "tif", "tiff"]

    /// One labelled image.
    struct Item {
        var path: String
        var label: Int
        var group: String
    }

    public static func run(_ options: ModelEvaluationOptions) throws -> ModelEvaluation {
        try evaluate(options).evaluation
    }

    /// The evaluation and every image's predicted class (in the order of the collected images).
    static func evaluate(_ options: ModelEvaluationOptions) throws -> (evaluation: ModelEvaluation, predictions: [Int]) {
        guard var precision = Precision(rawValue: options.precision.lowercased()), [.fp32, .bf16, .int8, .auto].contains(precision) else {
            throw ModelEvaluationError("--precision \(options.precision): use fp32, bf16, int8 or auto")
        }
        let reference = try ModelCatalog.resolve(options.model, in: options.modelsDirectory)
        guard !reference.card.isSegmentation, reference.card.input.colourTransform == nil else {
            throw ModelEvaluationError("\(reference.name): models eval measures patch classifiers fed RGB patches; this model is "
                                       + (reference.card.isSegmentation ? "a segmentation model (task: segmentation)" : "fed EHO input (colour_transform)"))
        }
        var precisionName = precision.rawValue
        if precision == .auto {
            let choice = try PrecisionChoice.resolve(modelFile: reference.path)
            precision = choice.precision
            precisionName = "\(choice.precision.rawValue) (auto)"
        }
        var engine = options.engine
        engine.precision = precision
        let session = try Session(model: try ModelCardCheck.load(reference, options: engine), threads: max(1, options.threads))
        let card = reference.card
        let classes = card.classes.isEmpty
            ? (0..<(session.model.outputShapes.first?.reduce(1, *) ?? 0)).map { "class_\($0)" } : card.classes
        let (items, folders) = try collect(options, classes: classes)
        guard !items.isEmpty else { throw ModelEvaluationError("\(options.patches): no images to evaluate") }

        let size = card.input.size
        let fit: PatchImage.Fit
        if let patchMPP = options.patchMPP {
            guard patchMPP > 0 else { throw ModelEvaluationError("--patch-mpp must be positive") }
            guard let modelMPP = card.input.mpp else {
                throw ModelEvaluationError("\(reference.name): the card states no input.mpp, so --patch-mpp cannot be applied")
            }
            fit = .scaleThenCrop(scale: patchMPP / modelMPP)
        } else {
            fit = .resize
        }
        let normalisation = card.normalisation
        let batchSize = max(1, options.batch)
        let perImage = 3 * size * size
        var predictions: [Int] = []
        var confidences: [Double] = []
        predictions.reserveCapacity(items.count)
        let clock = Stopwatch()
        var buffer = [Float](repeating: 0, count: batchSize * perImage)
        for start in stride(from: 0, to: items.count, by: batchSize) {
            let chunk = Array(items[start..<min(items.count, start + batchSize)])
            let failure = FirstError()
            buffer.withUnsafeMutableBufferPointer { raw in
                let base = FloatPointer(raw.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: chunk.count) { index in
                    do {
                        try PatchImage.read(path: chunk[index].path, size: size, fit: fit, normalisation: normalisation,
                                            into: base.pointer + index * perImage)
                    } catch {
                        failure.record(error, at: index)
                    }
                }
            }
            if let error = failure.first { throw error }
            let input = chunk.count == batchSize ? buffer : Array(buffer.prefix(chunk.count * perImage))
            let output = try session.run(Tensor(shape: [chunk.count, 3, size, size], data: input)).outputs[0]
            let width = output.count / chunk.count
            for n in 0..<chunk.count {
                let p = card.probabilities(fromOutput: Array(output.data[(n * width)..<((n + 1) * width)]))
                let best = JobOutputs.argmax(p)
                predictions.append(best)
                confidences.append(Double(p[best]))
            }
        }
        let seconds = clock.seconds
        let labels = items.map(\.label)
        let presentLabels = Array(Set(labels)).sorted()
        var matrix = [[Int]](repeating: [Int](repeating: 0, count: classes.count), count: presentLabels.count)
        let row = Dictionary(uniqueKeysWithValues: presentLabels.enumerated().map { ($1, $0) })
        for (label, predicted) in zip(labels, predictions) { matrix[row[label]!][predicted] += 1 }
        var perClass: [String: ModelEvaluation.ClassMetrics] = [:]
        for (c, name) in classes.enumerated() {
            let support = labels.filter { $0 == c }.count
            let predicted = predictions.filter { $0 == c }.count
            let hits = zip(labels, predictions).filter { $0 == c && $1 == c }.count
            guard support > 0 || predicted > 0 else { continue }
            let precision = predicted > 0 ? Double(hits) / Double(predicted) : nil
            let recall = support > 0 ? Double(hits) / Double(support) : nil
            let f1 = precision.flatMap { p in recall.map { r in p + r > 0 ? 2 * p * r / (p + r) : 0 } }
            perClass[name] = .init(support: support, predicted: predicted, precision: precision, recall: recall, f1: f1)
        }
        let groupKeys = items.map(\.group)
        let hasGroups = options.manifest != nil && Set(groupKeys).count < items.count
        let intervals = options.bootstrap > 0
            ? bootstrap(labels: labels, predictions: predictions, groups: hasGroups ? groupKeys : nil, resamples: options.bootstrap)
            : nil
        return (ModelEvaluation(
            model: reference.name, modelSHA256Prefix: try? String(SHA256.hexDigest(ofFile: reference.path).prefix(16)),
            patches: URL(fileURLWithPath: options.patches).standardizedFileURL.path, images: items.count,
            classes: classes, folders: folders,
            accuracy: accuracy(labels, predictions), balancedAccuracy: balancedAccuracy(labels, predictions),
            accuracyCI: intervals?.accuracy, balancedAccuracyCI: intervals?.balanced, perClass: perClass,
            confusion: .init(rows: presentLabels.map { classes[$0] }, columns: classes, matrix: matrix),
            ece: expectedCalibrationError(confidences: confidences, correct: zip(labels, predictions).map { $0 == $1 }),
            meanConfidence: confidences.reduce(0, +) / Double(confidences.count),
            imagesPerSecond: Double(items.count) / max(seconds, 1e-9), seconds: seconds, precision: precisionName,
            mpp: card.input.mpp, fit: options.patchMPP.map { String(format: "scaled from %g um/px, centre crop", $0) }
                ?? "resized to \(size) px (card MPP assumed)",
            groups: hasGroups ? Set(groupKeys).count : nil), predictions)
    }

    /// The labelled images: class folders (mapped to the model's classes) or a manifest's rows.
    static func collect(_ options: ModelEvaluationOptions, classes: [String]) throws -> ([Item], [String: String]) {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: options.patches, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelEvaluationError("\(options.patches): no such folder (give a folder with one subfolder per class)")
        }
        let subfolders = ((try? fm.contentsOfDirectory(atPath: options.patches)) ?? []).filter { name in
            var dir: ObjCBool = false
            return !name.hasPrefix(".") && fm.fileExists(atPath: "\(options.patches)/\(name)", isDirectory: &dir) && dir.boolValue
        }.sorted()
        guard !subfolders.isEmpty else {
            throw ModelEvaluationError("\(options.patches): no class folders (expected one subfolder per class, e.g. "
                                       + "\(classes.prefix(2).joined(separator: "/, "))/)")
        }
        for folder in options.classMap.keys where !subfolders.contains(folder) {
            throw ModelEvaluationError("--class-map names folder '\(folder)', which is not in \(options.patches)")
        }
        var folderClass: [String: Int] = [:]
        var folders: [String: String] = [:]
        for folder in subfolders {
            let target = options.classMap[folder] ?? folder
            if target == "ignore" { continue }
            guard let index = classes.firstIndex(of: target) else {
                let known = classes.joined(separator: ", ")
                throw ModelEvaluationError(options.classMap[folder] == nil
                    ? "class folder '\(folder)' is not one of the model's classes (\(known)); map it with --class-map \(folder)=CLASS, or \(folder)=ignore to leave it out"
                    : "--class-map \(folder)=\(target): '\(target)' is not one of the model's classes (\(known))")
            }
            folderClass[folder] = index
            folders[folder] = target
        }
        guard !folderClass.isEmpty else { throw ModelEvaluationError("every class folder is mapped to ignore") }
        var items: [Item] = []
        if let split = options.split, options.manifest == nil {
            throw ModelEvaluationError("--split \(split) needs --manifest CSV (the file that says which image is in which split)")
        }
        if let manifest = options.manifest {
            for row in try manifestRows(manifest, patches: options.patches, split: options.split) {
                let folder = String(row.file.split(separator: "/").first ?? "")
                guard folder != row.file, subfolders.contains(folder) else {
                    throw ModelEvaluationError("\(manifest): '\(row.file)' is not CLASS_FOLDER/NAME under \(options.patches)")
                }
                guard let label = folderClass[folder] else { continue }
                items.append(Item(path: "\(options.patches)/\(row.file)", label: label,
                                  group: row.group.map { "\(folder)/\($0)" } ?? row.file))
            }
        } else {
            for folder in subfolders {
                guard let label = folderClass[folder] else { continue }
                let files = ((try? fm.contentsOfDirectory(atPath: "\(options.patches)/\(folder)")) ?? [])
                    .filter { !$0.hasPrefix(".") && imageExtensions.contains(($0 as NSString).pathExtension.lowercased()) }
                    .sorted()
                for file in files {
                    items.append(Item(path: "\(options.patches)/\(folder)/\(file)", label: label, group: "\(folder)/\(file)"))
                }
            }
        }
        return (items, folders)
    }

    /// The manifest's images: a per-file CSV (`file[,group][,split]`), or a per-group split
    /// (`class,group,split`, no `file` column) joined with the patch folder's own `tiles.csv`
    /// (`file,class,group`), as the LC25000 folder and `models/lc25000-split.csv` are.
    static func manifestRows(_ manifest: String, patches: String, split: String?) throws -> [(file: String, group: String?)] {
        let table = try CSVTable.read(path: manifest)
        let splitColumn = table.header.firstIndex(of: "split")
        if split != nil, splitColumn == nil { throw ModelEvaluationError("\(manifest): no 'split' column for --split") }
        if let split, let splitColumn, !table.records.contains(where: { $0[splitColumn] == split }) {
            let values = Set(table.records.map { $0[splitColumn] }).sorted().joined(separator: ", ")
            throw ModelEvaluationError("--split \(split): no row of \(manifest) has that split (its values: \(values))")
        }
        func keep(_ record: [String]) -> Bool { split == nil || splitColumn.map { record[$0] == split } ?? true }
        if let fileColumn = table.header.firstIndex(of: "file") {
            let groupColumn = table.header.firstIndex(of: "group")
            return table.records.filter(keep).map { record in (record[fileColumn], groupColumn.map { record[$0] }) }
        }
        guard let classColumn = table.header.firstIndex(of: "class"), let groupColumn = table.header.firstIndex(of: "group") else {
            throw ModelEvaluationError("\(manifest): needs a 'file' column, or 'class' and 'group' columns (a group split)")
        }
        let wanted = Set(table.records.filter(keep).map { "\($0[classColumn])/\($0[groupColumn])" })
        let index = patches + "/tiles.csv"
        guard FileManager.default.fileExists(atPath: index) else {
            throw ModelEvaluationError("\(manifest) is a group split; it needs \(index) (file,class,group) to find the images")
        }
        let tiles = try CSVTable.read(path: index)
        guard let file = tiles.header.firstIndex(of: "file"), let cls = tiles.header.firstIndex(of: "class"),
              let group = tiles.header.firstIndex(of: "group") else {
            throw ModelEvaluationError("\(index): needs file, class and group columns")
        }
        return tiles.records.filter { wanted.contains("\($0[cls])/\($0[group])") }.map { ($0[file], $0[group]) }
    }

    static func accuracy(_ labels: [Int], _ predictions: [Int]) -> Double {
        Double(zip(labels, predictions).filter { $0 == $1 }.count) / Double(max(1, labels.count))
    }

    /// Mean over the true classes present of the share predicted right.
    static func balancedAccuracy(_ labels: [Int], _ predictions: [Int]) -> Double {
        var total: [Int: Int] = [:]
        var hits: [Int: Int] = [:]
        for (label, predicted) in zip(labels, predictions) {
            total[label, default: 0] += 1
            if label == predicted { hits[label, default: 0] += 1 }
        }
        guard !total.isEmpty else { return 0 }
        return total.keys.map { Double(hits[$0, default: 0]) / Double(total[$0]!) }.reduce(0, +) / Double(total.count)
    }

    /// Expected calibration error over 15 equal-width confidence bins.
    static func expectedCalibrationError(confidences: [Double], correct: [Bool], bins: Int = 15) -> Double {
        var count = [Int](repeating: 0, count: bins)
        var confidence = [Double](repeating: 0, count: bins)
        var right = [Double](repeating: 0, count: bins)
        for (c, ok) in zip(confidences, correct) {
            let bin = min(bins - 1, Int(c * Double(bins)))
            count[bin] += 1
            confidence[bin] += c
            right[bin] += ok ? 1 : 0
        }
        let n = Double(max(1, confidences.count))
        return (0..<bins).filter { count[$0] > 0 }
            .map { Double(count[$0]) / n * abs(confidence[$0] / Double(count[$0]) - right[$0] / Double(count[$0])) }
            .reduce(0, +)
    }

    /// Percentile intervals of accuracy and balanced accuracy, resampling groups (all images of a
    /// group together) when given, else images. Seeded: the same input gives the same interval.
    static func bootstrap(labels: [Int], predictions: [Int], groups: [String]?, resamples: Int)
        -> (accuracy: ModelEvaluation.Interval, balanced: ModelEvaluation.Interval) {
        let keys = groups ?? labels.indices.map(String.init)
        var members: [String: [Int]] = [:]
        for (i, key) in keys.enumerated() { members[key, default: []].append(i) }
        let units = members.keys.sorted().map { members[$0]! }
        var generator = SplitMix(seed: 20_261_201)
        var accuracies: [Double] = []
        var balanced: [Double] = []
        for _ in 0..<resamples {
            var l: [Int] = []
            var p: [Int] = []
            for _ in 0..<units.count {
                for i in units[Int(generator.next() % UInt64(units.count))] {
                    l.append(labels[i])
                    p.append(predictions[i])
                }
            }
            accuracies.append(accuracy(l, p))
            balanced.append(balancedAccuracy(l, p))
        }
        func interval(_ values: [Double]) -> ModelEvaluation.Interval {
            let sorted = values.sorted()
            let low = sorted[Int(Double(sorted.count - 1) * 0.025)]
            let high = sorted[Int(Double(sorted.count - 1) * 0.975)]
            return .init(low: low, high: high, resampled: groups == nil ? "images" : "groups", resamples: resamples)
        }
        return (interval(accuracies), interval(balanced))
    }

    /// The table for people.
    public static func text(_ e: ModelEvaluation) -> String {
        func pct(_ v: Double?) -> String { v.map { String(format: "%5.1f%%", $0 * 100) } ?? "    - " }
        func ci(_ i: ModelEvaluation.Interval?) -> String {
            i.map { String(format: " (95%% CI %.1f-%.1f%%, bootstrap over %@, %d resamples)", $0.low * 100, $0.high * 100,
                           $0.resampled, $0.resamples) } ?? ""
        }
        var lines: [String] = []
        lines.append("model:             \(e.model)")
        lines.append("patches:           \(e.patches) (\(e.images) image\(e.images == 1 ? "" : "s")" + (e.groups.map { ", \($0) group\($0 == 1 ? "" : "s")" } ?? "") + "; \(e.fit))")
        lines.append("accuracy:          " + pct(e.accuracy) + ci(e.accuracyCI))
        lines.append("balanced accuracy: " + pct(e.balancedAccuracy) + ci(e.balancedAccuracyCI))
        lines.append(String(format: "calibration:       ECE %.3f, mean confidence %.3f", e.ece, e.meanConfidence))
        lines.append(String(format: "speed:             %.1f images/s (%.1f s, %@, decode included)", e.imagesPerSecond,
                            e.seconds, e.precision))
        lines.append("")
        let width = max(8, (e.classes.map(\.count).max() ?? 0) + 2)
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        lines.append(pad("class", width) + "support  predicted  precision  recall     f1")
        for name in e.classes {
            guard let m = e.perClass[name] else { continue }
            lines.append(pad(name, width) + pad(String(m.support), 9) + pad(String(m.predicted), 11)
                         + pad(pct(m.precision), 11) + pad(pct(m.recall), 11) + pct(m.f1))
        }
        lines.append("")
        lines.append("confusion (rows: true class, columns: predicted)")
        lines.append(pad("", width) + e.confusion.columns.map { pad($0, max(6, $0.count + 1)) }.joined())
        for (r, name) in e.confusion.rows.enumerated() {
            lines.append(pad(name, width) + zip(e.confusion.columns, e.confusion.matrix[r])
                .map { pad(String($1), max(6, $0.count + 1)) }.joined())
        }
        return lines.joined(separator: "\n")
    }

    /// One JSON line.
    public static func json(_ e: ModelEvaluation) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(e), as: UTF8.self)
    }
}

/// A small CSV reader (comma-separated, optional double quotes) for manifests.
struct CSVTable {
    var header: [String]
    var records: [[String]]

    static func read(path: String) throws -> CSVTable {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ModelEvaluationError("\(path): cannot read the manifest")
        }
        var lines = text.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty }
        guard !lines.isEmpty else { throw ModelEvaluationError("\(path): empty manifest") }
        let header = fields(lines.removeFirst())
        var records: [[String]] = []
        for (number, line) in lines.enumerated() {
            let row = fields(line)
            guard row.count == header.count else {
                throw ModelEvaluationError("\(path): line \(number + 2) has \(row.count) fields, the header \(header.count)")
            }
            records.append(row)
        }
        return CSVTable(header: header, records: records)
    }

    static func fields(_ line: String) -> [String] {
        var out: [String] = []
        var current = ""
        var quoted = false
        var iterator = line.makeIterator()
        while let ch = iterator.next() {
            if ch == "\"" { quoted.toggle() } else if ch == "," && !quoted {
                out.append(current)
                current = ""
            } else { current.append(ch) }
        }
        out.append(current)
        return out.map { $0.trimmingCharacters(in: .whitespaces) }
    }
}

/// The first error raised by parallel readers.
private final class FirstError: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var stored: (index: Int, error: any Error)?
    var first: (any Error)? { lock.withLock { stored?.error } }
    func record(_ error: any Error, at index: Int) {
        lock.withLock { if stored == nil || index < stored!.index { stored = (index, error) } }
    }
}

/// A buffer pointer handed to `concurrentPerform` iterations that write disjoint ranges.
private struct FloatPointer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    init(_ pointer: UnsafeMutablePointer<Float>) { self.pointer = pointer }
}
