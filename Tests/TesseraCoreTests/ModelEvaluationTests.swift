import Foundation
import SlideIO
import Testing
@testable import TesseraCore

/// `tessera models eval`, model cards checked at load, the models search path, WSInfer folders,
/// the default-model choice and the guardrails, on real ONNX files and real image files.
@Suite("Models: evaluation and cards", .serialized)
struct ModelEvaluationTests {
    /// A models folder with `rgb`: a network whose logits are 10 x the mean of each channel
    /// (GlobalAveragePool + Gemm), so a mostly red patch is "red", whatever its size.
    static func rgbModels(card: String? = nil, name: String = "rgb") throws -> String {
        let directory = Support.temporaryDirectory() + "/models"
        try FileManager.default.createDirectory(atPath: "\(directory)/\(name)", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Support.root.appendingPathComponent("Tests/TesseraCoreTests/Fixtures/rgb_mean_16.onnx").path,
                                         toPath: "\(directory)/\(name)/model.onnx")
        let text = card ?? """
            {"name": "\(name)", "classes": ["red", "green", "blue"], "input": {"size": 16, "mpp": 1.0},
             "output": {"kind": "logits"}, "validated": false}
            """
        try text.write(toFile: "\(directory)/\(name)/model.json", atomically: true, encoding: .utf8)
        return directory
    }

    /// Writes a PNG whose pixels are mostly `dominant` (0 red, 1 green, 2 blue).
    static func patch(_ path: String, dominant: Int, width: Int = 16, height: Int = 16) throws {
        var pixels = [UInt8](repeating: 40, count: width * height * 3)
        for i in 0..<(width * height) { pixels[3 * i + dominant] = 220 }
        try PNGFile.write(rgb: pixels, width: width, height: height, to: path)
    }

    /// red/: 3 red + 1 green; green/: 2 green; blue/: 2 blue + 1 red (sizes vary: resized to 16 px).
    static func labelledFolder(names: [String] = ["red", "green", "blue"]) throws -> String {
        let root = Support.temporaryDirectory() + "/patches"
        let contents: [[Int]] = [[0, 0, 0, 1], [1, 1], [2, 2, 0]]
        for (folder, dominants) in zip(names, contents) {
            try FileManager.default.createDirectory(atPath: "\(root)/\(folder)", withIntermediateDirectories: true)
            for (n, dominant) in dominants.enumerated() {
                try patch("\(root)/\(folder)/\(n).png", dominant: dominant, width: 16 + 8 * n, height: 16 + 4 * n)
            }
        }
        try "not an image".write(toFile: "\(root)/README.txt", atomically: true, encoding: .utf8)
        return root
    }

    func options(_ models: String, _ patches: String) -> ModelEvaluationOptions {
        var options = ModelEvaluationOptions(model: "rgb", patches: patches)
        options.modelsDirectory = models
        options.threads = 2
        options.batch = 4
        options.bootstrap = 200
        return options
    }

    @Test func knownAnswers() throws {
        let models = try Self.rgbModels()
        let evaluation = try ModelEvaluator.run(options(models, try Self.labelledFolder()))
        #expect(evaluation.images == 9)
        #expect(abs(evaluation.accuracy - 7.0 / 9) < 1e-9)
        #expect(abs(evaluation.balancedAccuracy - (3.0 / 4 + 1 + 2.0 / 3) / 3) < 1e-9)
        #expect(evaluation.confusion.rows == ["red", "green", "blue"])
        #expect(evaluation.confusion.matrix == [[3, 1, 0], [0, 2, 0], [1, 0, 2]])
        #expect(evaluation.perClass["red"] == .init(support: 4, predicted: 4, precision: 0.75, recall: 0.75, f1: 0.75))
        #expect(evaluation.perClass["green"]?.precision == 2.0 / 3 && evaluation.perClass["green"]?.recall == 1)
        let ci = try #require(evaluation.balancedAccuracyCI)
        #expect(ci.low <= evaluation.balancedAccuracy && evaluation.balancedAccuracy <= ci.high && ci.resampled == "images")
        let json = try JSONSerialization.jsonObject(with: Data(try ModelEvaluator.json(evaluation).utf8)) as? [String: Any]
        for key in ["accuracy", "balanced_accuracy", "per_class", "confusion", "images"] { #expect(json?[key] != nil, "\(key)") }
        #expect(ModelEvaluator.text(evaluation).contains("balanced accuracy:  80.6%"))
    }

    @Test func int8UsesTheCalibrationAndAgrees() throws {
        let models = try Self.rgbModels()
        let patches = try Self.labelledFolder()
        var opts = options(models, patches)
        opts.precision = "int8"
        #expect(throws: (any Error).self, "int8 without a calibration is refused") { try ModelEvaluator.run(opts) }
        _ = try ModelQuantize.run(model: models + "/rgb/model.onnx", calibrationDirectory: patches)
        let int8 = try ModelEvaluator.run(opts)
        #expect(int8.precision == "int8")
        #expect(int8.confusion.matrix == [[3, 1, 0], [0, 2, 0], [1, 0, 2]], "the same answers as fp32 on clear-cut patches")
        opts.precision = "bf17"
        #expect(throws: (any Error).self) { try ModelEvaluator.run(opts) }
    }

    /// `models bench` / `models quantize` with a mistyped name say which models there are,
    /// instead of "cannot read model file NAME".
    @Test func benchNamesTheKnownModelsForATypo() throws {
        let models = try Self.rgbModels()
        #expect(try ModelBench.resolve("rgb", modelsDirectory: models).hasSuffix("model.onnx"))
        do {
            _ = try ModelBench.resolve("rbg", modelsDirectory: models)
            Issue.record("a mistyped name resolved")
        } catch {
            #expect("\(error)".contains("unknown model 'rbg'") && "\(error)".contains("rgb"), "\(error)")
        }
    }

    @Test func classMapAndIgnore() throws {
        let models = try Self.rgbModels()
        let patches = try Self.labelledFolder(names: ["rouge", "vert", "bleu"])
        var opts = options(models, patches)
        opts.classMap = try ModelEvaluationOptions.parseClassMap("rouge=red, vert=green,bleu=ignore")
        let evaluation = try ModelEvaluator.run(opts)
        #expect(evaluation.images == 6 && evaluation.folders == ["rouge": "red", "vert": "green"])
        #expect(evaluation.confusion.rows == ["red", "green"] && evaluation.confusion.matrix == [[3, 1, 0], [0, 2, 0]])
    }

    @Test func refusals() throws {
        let models = try Self.rgbModels()
        let patches = try Self.labelledFolder(names: ["red", "green", "teal"])
        #expect(throws: ModelEvaluationError.self) { try ModelEvaluator.run(options(models, patches)) }
        do {
            _ = try ModelEvaluator.run(options(models, patches))
        } catch {
            #expect("\(error)".contains("'teal' is not one of the model's classes (red, green, blue)")
                    && "\(error)".contains("--class-map teal="))
        }
        var mapped = options(models, patches)
        mapped.classMap = ["teal": "cyan"]
        #expect(throws: (any Error).self) { try ModelEvaluator.run(mapped) }
        mapped.classMap = ["purple": "blue"]
        #expect(throws: (any Error).self) { try ModelEvaluator.run(mapped) }
        #expect(throws: (any Error).self) { try ModelEvaluationOptions.parseClassMap("a=b,a=c") }
        #expect(throws: (any Error).self) { try ModelEvaluationOptions.parseClassMap("nonsense") }
        #expect(throws: (any Error).self) { try ModelEvaluator.run(options(models, patches + "/missing")) }
        let broken = try Self.labelledFolder()
        try "garbage".write(toFile: broken + "/red/9.png", atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try ModelEvaluator.run(options(models, broken)) }
    }

    @Test func manifestResamplesGroups() throws {
        let models = try Self.rgbModels()
        let patches = try Self.labelledFolder()
        let manifest = patches + "/../manifest.csv"
        try """
            file,class,group,split
            red/0.png,red,1,val
            red/1.png,red,1,val
            red/2.png,red,2,train
            red/3.png,red,2,val
            green/0.png,green,1,val
            green/1.png,green,2,val
            blue/0.png,blue,1,val
            blue/2.png,blue,1,val
            """.write(toFile: manifest, atomically: true, encoding: .utf8)
        var opts = options(models, patches)
        opts.manifest = manifest
        opts.split = "val"
        let evaluation = try ModelEvaluator.run(opts)
        #expect(evaluation.images == 7 && evaluation.groups == 5)
        #expect(evaluation.confusion.matrix == [[2, 1, 0], [0, 2, 0], [1, 0, 1]])
        #expect(evaluation.accuracyCI?.resampled == "groups")
        // A group split (class,group,split) joined with the folder's own tiles.csv (file,class,group).
        try """
            file,class,group
            red/0.png,red,1
            red/1.png,red,1
            red/2.png,red,2
            red/3.png,red,2
            green/0.png,green,1
            green/1.png,green,2
            blue/0.png,blue,1
            blue/1.png,blue,2
            blue/2.png,blue,1
            """.write(toFile: patches + "/tiles.csv", atomically: true, encoding: .utf8)
        try """
            class,group,split
            red,1,val
            red,2,train
            green,1,val
            green,2,val
            blue,1,val
            blue,2,train
            """.write(toFile: manifest, atomically: true, encoding: .utf8)
        let joined = try ModelEvaluator.run(opts)
        #expect(joined.images == 6 && joined.groups == 4)
        #expect(joined.confusion.matrix == [[2, 0, 0], [0, 2, 0], [1, 0, 1]])
        // A split no row has, and a split without a manifest, are errors that say what is there.
        opts.split = "test"
        do {
            _ = try ModelEvaluator.run(opts)
            Issue.record("--split test evaluated")
        } catch {
            #expect("\(error)".contains("--split test: no row") && "\(error)".contains("train, val"), "\(error)")
        }
        opts.manifest = nil
        opts.split = "val"
        do {
            _ = try ModelEvaluator.run(opts)
            Issue.record("--split without --manifest evaluated every image")
        } catch {
            #expect("\(error)".contains("needs --manifest"), "\(error)")
        }
    }

    @Test func patchMPPScalesThenCrops() throws {
        let models = try Self.rgbModels()
        let root = Support.temporaryDirectory() + "/scaled"
        try FileManager.default.createDirectory(atPath: root + "/red", withIntermediateDirectories: true)
        try Self.patch(root + "/red/0.png", dominant: 0, width: 64, height: 64)
        var opts = options(models, root)
        opts.patchMPP = 0.5  // 64 px at 0.5 um/px = 32 px at the card's 1.0 um/px, centre 16 px taken
        #expect(try ModelEvaluator.run(opts).accuracy == 1)
        opts.patchMPP = 0.2  // 64 px at 0.2 um/px = 12.8 px at 1.0 um/px: too small for the 16 px input
        #expect(throws: (any Error).self) { try ModelEvaluator.run(opts) }
    }

    @Test func cardsAreCheckedAgainstTheGraph() throws {
        let twoClasses = try Self.rgbModels(card: """
            {"name": "rgb", "classes": ["a", "b"], "input": {"size": 16}, "output": {"kind": "logits"}}
            """)
        do {
            _ = try ModelProvider(directory: twoClasses).session(for: "rgb", threads: 1)
            Issue.record("a 2-class card on a 3-output network loaded")
        } catch {
            #expect("\(error)".contains("card classes lists 2 classes but the ONNX output 'logits' has 3 values"))
        }
        let wrongSize = try Self.rgbModels(card: """
            {"name": "rgb", "classes": ["r", "g", "b"], "input": {"size": 32}, "output": {"kind": "logits"}}
            """)
        #expect(throws: (any Error).self) { try ModelProvider(directory: wrongSize).session(for: "rgb", threads: 1) }
        let wrongLayout = try Self.rgbModels(card: """
            {"name": "rgb", "classes": ["r", "g", "b"], "input": {"size": 16, "layout": "NHWC"}}
            """)
        #expect(throws: (any Error).self) { try ModelProvider(directory: wrongLayout).session(for: "rgb", threads: 1) }
        let missingField = try Self.rgbModels(card: """
            {"name": "rgb", "classes": ["r", "g", "b"], "input": {"mpp": 0.5}}
            """)
        do {
            _ = try ModelCatalog.resolve("rgb", in: missingField)
            Issue.record("a card without input.size resolved")
        } catch {
            #expect("\(error)".contains("missing field 'input.size'"))
        }
        #expect(throws: (any Error).self) {
            try ModelCatalog.resolve("rgb", in: try Self.rgbModels(card: """
                {"name": "rgb", "classes": ["r", "g", "b"], "input": {"size": 16}, "validated": true}
                """))
        }
    }

    @Test func searchPathAddsFoldersAndDefaultIsBestValidated() throws {
        let shipped = try Self.rgbModels(card: """
            {"name": "rgb", "classes": ["red", "green", "blue"], "input": {"size": 16}, "validated": "test groups",
             "metrics": {"balanced_accuracy": 0.90}}
            """)
        let lab = try Self.rgbModels(card: """
            {"name": "lab", "classes": ["red", "green", "blue"], "input": {"size": 16}, "validated": "lab groups",
             "metrics": {"balanced_accuracy": {"value": 0.95, "ci95": [0.9, 0.97]}}}
            """, name: "lab")
        let experimental = try Self.rgbModels(card: """
            {"name": "shiny", "classes": ["red", "green", "blue"], "input": {"size": 16}, "validated": "nothing much",
             "experimental": true, "metrics": {"balanced_accuracy": 0.99}}
            """, name: "shiny")
        let path = [lab, experimental, shipped].joined(separator: ":")
        #expect(ModelCatalog.names(in: path) == ["lab", "rgb", "shiny"])
        #expect(try ModelCatalog.resolve("rgb", in: path).folder.hasPrefix(shipped))
        #expect(ModelCatalog.defaultModel(in: path) == "lab")
        #expect(ModelCatalog.defaultModel(in: [experimental, shipped].joined(separator: ":")) == "rgb")
        // `models bench NAME` finds a name on the same search path (not only under ./models).
        #expect(try ModelBench.resolve("rgb", modelsDirectory: path).hasPrefix(shipped))
        #expect(try ModelCatalog.resolve("lab", in: path).card.realLabelBalancedAccuracy == 0.95)
        // The same name in two folders: the first folder wins.
        let override = try Self.rgbModels(card: """
            {"name": "rgb", "classes": ["R", "G", "B"], "input": {"size": 16}}
            """)
        #expect(try ModelCatalog.resolve("rgb", in: override + ":" + shipped).card.classes == ["R", "G", "B"])
    }

    /// The shipped cards keep their figure under `metrics.validation`: it must count, so a lab model
    /// that states what it was validated on but gives no figure (and sorts first) is not the default.
    @Test func defaultReadsTheValidationBlockOfTheShippedCards() throws {
        let shippedLayout = try Self.rgbModels(card: """
            {"name": "rgb", "classes": ["red", "green", "blue"], "input": {"size": 16}, "validated": "test groups",
             "metrics": {"validation": {"balanced_accuracy": 0.96, "tiles": 100}}}
            """)
        let noFigure = try Self.rgbModels(card: """
            {"name": "aaa", "classes": ["red", "green", "blue"], "input": {"size": 16}, "validated": "in-house 10 tiles"}
            """, name: "aaa")
        let path = [noFigure, shippedLayout].joined(separator: ":")
        #expect(try ModelCatalog.resolve("rgb", in: path).card.realLabelBalancedAccuracy == 0.96)
        #expect(ModelCatalog.defaultModel(in: path) == "rgb")
        // The repository's own models: the default is the one whose card reports the best figure.
        let models = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../models").standardized.path
        let figures = try ModelCatalog.names(in: models).compactMap { name -> (String, Double)? in
            let card = try ModelCatalog.resolve(name, in: models).card
            guard card.experimental != true, card.validationStatement != nil, let figure = card.realLabelBalancedAccuracy else { return nil }
            return (name, figure)
        }
        #expect(figures.count >= 2, "the LC25000 cards carry their figures: \(figures)")
        #expect(ModelCatalog.defaultModel(in: models) == figures.max(by: { $0.1 < $1.1 })?.0)
    }

    @Test func wsinferConfigFolder() throws {
        let models = try Self.rgbModels()
        try FileManager.default.removeItem(atPath: models + "/rgb/model.json")
        try """
            {"spec_version": "1.0", "architecture": "rgbnet", "num_classes": 3, "class_names": ["red", "green", "blue"],
             "patch_size_pixels": 32, "spacing_um_px": 0.25,
             "transform": [{"name": "Resize", "arguments": {"size": 16}}, {"name": "ToTensor"},
                           {"name": "Normalize", "arguments": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}]}
            """.write(toFile: models + "/rgb/config.json", atomically: true, encoding: .utf8)
        let reference = try ModelCatalog.resolve("rgb", in: models)
        #expect(reference.card.input.size == 16 && reference.card.input.mpp == 0.5, "32 px at 0.25 um/px resized to 16 px")
        #expect(reference.card.classes == ["red", "green", "blue"] && reference.card.outputsLogits)
        #expect(reference.card.normalisation == Normalisation(mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]))
        #expect(try ModelEvaluator.run(options(models, try Self.labelledFolder())).images == 9)
        try """
            {"class_names": ["a"], "num_classes": 2, "patch_size_pixels": 32, "spacing_um_px": 0.25}
            """.write(toFile: models + "/rgb/config.json", atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try ModelCatalog.resolve("rgb", in: models) }
    }

    @Test func temperatureSoftensProbabilities() throws {
        var card = ModelCard(name: "t", output: .init(kind: "logits", temperature: 2), classes: ["a", "b"], input: .init(size: 8))
        let soft = card.probabilities(fromOutput: [2, 0])
        #expect(abs(soft[0] - Float(1 / (1 + exp(-1.0)))) < 1e-6, "softmax([2, 0] / 2)")
        card.output?.temperature = nil
        #expect(abs(card.probabilities(fromOutput: [2, 0])[0] - Float(1 / (1 + exp(-2.0)))) < 1e-6)
        card.output?.kind = "softmax"
        #expect(card.probabilities(fromOutput: [0.3, 0.7]) == [0.3, 0.7])
    }

    @Test func guardrailsFlagNonBrightfieldTiles() throws {
        // A 64 x 32 thumbnail: left half pink tissue on white (H&E), right half blue blobs on black
        // (a DAPI-like fluorescence scan). One thumbnail pixel per 16 level-0 pixels; 8 x 8 px tiles.
        let width = 64, height = 32
        var thumbnail = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let i = 3 * (y * width + x)
                let blob = (x / 4 + y / 4) % 2 == 0
                let rgb: [UInt8] = x < 32 ? (blob ? [200, 110, 170] : [245, 245, 245]) : (blob ? [30, 40, 210] : [5, 5, 5])
                thumbnail[i] = rgb[0]; thumbnail[i + 1] = rgb[1]; thumbnail[i + 2] = rgb[2]
            }
        }
        let mask = TissueMask(thumbnail: thumbnail, width: width, height: height, downsampleX: 16, downsampleY: 16)
        let bright = Guardrails.colourFlags(mask: mask, rect: (0, 0, 128, 128))
        let fluorescent = Guardrails.colourFlags(mask: mask, rect: (640, 0, 128, 128))
        #expect(bright.isEmpty)
        #expect(fluorescent.contains(.dark) && fluorescent.contains(.colour))
    }
}
