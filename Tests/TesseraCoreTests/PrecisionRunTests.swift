import Foundation
import Testing
@testable import TesseraCore

/// `--precision int8` on `tessera run`: refused without a calibration, then a job of its own
/// whose summary says int8 and whose classes agree with fp32's.
@Suite("INT8 slide runs", .serialized, .needsTesseraBinary)
struct PrecisionRunTests {
    @Test func int8RunsNeedACalibrationAndAgreeWithFP32() throws {
        let models = try Support.tinyModels()
        let folder = Support.temporaryDirectory()
        let slide = try Support.syntheticSlide(width: 3000, height: 2000, seed: 71)
        let environment = ["TESSERA_MODELS": models]
        func run(_ extra: [String], out: String) throws -> (status: Int32, out: String, err: String) {
            try Support.tessera(["run", slide, "--model", "tiny", "--data", folder + "/data", "--out", folder + "/" + out, "--json"] + extra,
                                environment: environment)
        }
        let refused = try run(["--precision", "int8"], out: "refused")
        #expect(refused.status == 2)
        #expect(refused.out.contains("\"error_code\":\"bad_parameter\"") && refused.out.contains("models quantize tiny"),
                "says how to make a calibration: \(refused.out)")
        #expect(try run(["--precision", "int4"], out: "typo").err.contains("--precision int4: use fp32, bf16, int8 or auto"))

        // Calibration tiles cut from another slide with the vips command.
        let tiles = folder + "/calibration"
        try FileManager.default.createDirectory(atPath: tiles, withIntermediateDirectories: true)
        let source = try Support.syntheticSlide(width: 3000, height: 2000, seed: 72)
        for index in 0..<6 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/vips")
            process.arguments = ["extract_area", source, "\(tiles)/t\(index).png", "\(200 + index * 400)", "800", "128", "128"]
            try process.run()
            process.waitUntilExit()
        }
        let quantized = try Support.tessera(["models", "quantize", "tiny", "--calibration", tiles], environment: environment)
        #expect(quantized.status == 0, "\(quantized.err)")

        let int8 = try run(["--precision", "int8"], out: "int8")
        let fp32 = try run([], out: "fp32")
        #expect(int8.status == 0 && fp32.status == 0, "\(int8.out) \(int8.err) \(fp32.err)")
        let name = (slide as NSString).lastPathComponent
        func summary(_ out: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(out)/\(name)/summary.json"))) as? [String: Any] ?? [:]
        }
        #expect(try summary("int8")["precision"] as? String == "int8")
        #expect(try summary("fp32")["precision"] as? String == "fp32")
        #expect(try summary("int8")["job"] as? Int != summary("fp32")["job"] as? Int, "int8 is a job of its own")
        func classes(_ out: String) throws -> [Substring] {
            let text = try String(contentsOfFile: "\(folder)/\(out)/\(name)/tiles.csv", encoding: .utf8)
            let lines = text.split(separator: "\n")
            let column = try #require(lines.first?.split(separator: ",").firstIndex(of: "class"))
            return lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false)[column] }
        }
        let a = try classes("int8"), b = try classes("fp32")
        #expect(a.count == b.count && !a.isEmpty)
        let agreement = Double(zip(a, b).filter { $0 == $1 }.count) / Double(max(1, a.count))
        #expect(agreement >= 0.9, "int8 and fp32 agree on \(agreement * 100)% of tiles")

        // BF16 needs no calibration: a job of its own, the same classes as fp32 on nearly every tile.
        let bf16 = try run(["--precision", "bf16"], out: "bf16")
        #expect(bf16.status == 0, "\(bf16.out) \(bf16.err)")
        #expect(try summary("bf16")["precision"] as? String == "bf16")
        #expect(try summary("bf16")["job"] as? Int != summary("fp32")["job"] as? Int, "bf16 is a job of its own")
        let c = try classes("bf16")
        #expect(c.count == b.count)
        let agreement16 = Double(zip(c, b).filter { $0 == $1 }.count) / Double(max(1, c.count))
        #expect(agreement16 >= 0.95, "bf16 and fp32 agree on \(agreement16 * 100)% of tiles")
    }

    /// `--precision auto`: fp32 (with the reason) until a check is recorded; then the rule applied to
    /// the recorded numbers, in the summary; a stale or foreign check does not count.
    @Test func autoFollowsTheRecordedCheck() throws {
        let models = try Support.tinyModels()
        let folder = Support.temporaryDirectory()
        let slide = try Support.syntheticSlide(width: 3000, height: 2000, seed: 73)
        let environment = ["TESSERA_MODELS": models]
        let name = (slide as NSString).lastPathComponent
        func run(_ out: String) throws -> [String: Any] {
            let result = try Support.tessera(["run", slide, "--model", "tiny", "--data", folder + "/data", "--out", folder + "/" + out,
                                              "--precision", "auto", "--json"], environment: environment)
            #expect(result.status == 0, "\(result.out) \(result.err)")
            return try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(out)/\(name)/summary.json")))
                as? [String: Any] ?? [:]
        }
        let before = try run("none")
        #expect(before["precision"] as? String == "fp32")
        #expect((before["precision_auto"] as? String)?.contains("no precision check is recorded") == true, "\(before)")

        // Labelled tiles (classes A, B, C) cut from another slide; calibration from the same tiles.
        let tiles = folder + "/labelled"
        let source = try Support.syntheticSlide(width: 3000, height: 2000, seed: 74)
        for (index, label) in ["A", "A", "B", "B", "C", "C"].enumerated() {
            try FileManager.default.createDirectory(atPath: "\(tiles)/\(label)", withIntermediateDirectories: true)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/vips")
            process.arguments = ["extract_area", source, "\(tiles)/\(label)/t\(index).png", "\(200 + index * 400)", "800", "128", "128"]
            try process.run()
            process.waitUntilExit()
        }
        let noCalibration = try Support.tessera(["models", "eval", "tiny", "--patches", tiles, "--record-precision"], environment: environment)
        #expect(noCalibration.status != 0 && noCalibration.err.contains("models quantize tiny"), "\(noCalibration.err)")
        #expect(try Support.tessera(["models", "quantize", "tiny", "--calibration", tiles], environment: environment).status == 0)
        let recorded = try Support.tessera(["models", "eval", "tiny", "--patches", tiles, "--record-precision", "--json"],
                                           environment: environment)
        #expect(recorded.status == 0, "\(recorded.err)")
        let check = try JSONDecoder().decode(PrecisionCheck.self,
                                             from: Data(contentsOf: URL(fileURLWithPath: models + "/tiny/precision.json")))
        #expect(check.images == 6 && (0...1).contains(check.agreement) && check.imagesPerSecondINT8 > 0 && !check.isa.isEmpty)
        #expect((0...1).contains(check.agreementBF16 ?? -1) && (check.imagesPerSecondBF16 ?? 0) > 0)
        let int8OK = check.agreement >= 0.995 && check.dropPoints <= 0.5 && check.speedup > 1
        let bf16OK = check.agreementBF16! >= 0.995 && check.dropPointsBF16! <= 0.5 && check.speedupBF16! > 1
        let expected = int8OK && (!bf16OK || check.speedup >= check.speedupBF16!) ? "int8" : bf16OK ? "bf16" : "fp32"
        let after = try run("recorded")
        #expect(after["precision"] as? String == expected, "\(after)")
        #expect((after["precision_auto"] as? String)?.hasPrefix(expected + ":") == true, "\(after)")

        // The rule itself, on checks written by hand for this model file and calibration.
        let file = models + "/tiny/model.onnx"
        var good = check
        good.agreement = 1
        good.balancedAccuracyINT8 = good.balancedAccuracyFP32
        good.imagesPerSecondFP32 = 100
        good.imagesPerSecondINT8 = 180
        good.agreementBF16 = nil
        good.balancedAccuracyBF16 = nil
        good.imagesPerSecondBF16 = nil
        func choose(_ c: PrecisionCheck, isa: String? = nil) throws -> String {
            try JSONEncoder().encode(c).write(to: URL(fileURLWithPath: models + "/tiny/precision.json"))
            return try PrecisionChoice.resolve(modelFile: file, isa: isa ?? c.isa).name
        }
        #expect(try choose(good) == "int8")
        var low = good
        low.agreement = 0.99
        #expect(try choose(low) == "fp32")
        var drop = good
        drop.balancedAccuracyINT8 = good.balancedAccuracyFP32 - 0.006
        #expect(try choose(drop) == "fp32")
        var slow = good
        slow.imagesPerSecondINT8 = 90
        #expect(try choose(slow) == "fp32")
        #expect(try choose(good, isa: "some-other-level") == "fp32")
        var stale = good
        stale.calibrationSHA256 = String(repeating: "0", count: 64)
        #expect(try choose(stale) == "fp32")
        // BF16 beside INT8: the faster of the two that qualify; BF16 needs no calibration.
        var both = good
        both.agreementBF16 = 1
        both.balancedAccuracyBF16 = good.balancedAccuracyFP32
        both.imagesPerSecondBF16 = 150
        #expect(try choose(both) == "int8")
        both.imagesPerSecondBF16 = 200
        #expect(try choose(both) == "bf16")
        var bf16Only = both
        bf16Only.agreement = 0.99
        #expect(try choose(bf16Only) == "bf16")
        bf16Only.calibrationSHA256 = String(repeating: "0", count: 64)
        #expect(try choose(bf16Only) == "bf16")
        var neither = bf16Only
        neither.agreementBF16 = 0.99
        #expect(try choose(neither) == "fp32")
        neither.agreementBF16 = 1
        neither.imagesPerSecondBF16 = 90
        let reason = try { () throws -> String in
            try JSONEncoder().encode(neither).write(to: URL(fileURLWithPath: models + "/tiny/precision.json"))
            return try PrecisionChoice.resolve(modelFile: file, isa: neither.isa).reason
        }()
        #expect(reason.hasPrefix("fp32: ") && reason.contains("BF16 is not faster here"), "\(reason)")
        var foreign = both
        foreign.modelSHA256 = String(repeating: "0", count: 64)
        #expect(try choose(foreign) == "fp32")
        try "{}".write(toFile: models + "/tiny/precision.json", atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try PrecisionChoice.resolve(modelFile: file) }
    }

    /// A model quantised by ONNX Runtime (QDQ) brings its activation ranges: `--precision int8`
    /// runs it without a calibration file, as a job of its own.
    @Test func qdqModelsRunInt8WithoutACalibration() throws {
        let models = try Support.tinyModels()
        try FileManager.default.createDirectory(atPath: models + "/qdq", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Support.root.appendingPathComponent("Tests/EngineTests/Fixtures/qdq/qdq_cnn.onnx").path,
                                         toPath: models + "/qdq/model.onnx")
        try """
            {"name": "qdq", "task": "classification", "classes": ["A", "B", "C", "D"],
             "input": {"name": "x", "size": 32, "mpp": 2.0}, "output": {"kind": "logits"}}
            """.write(toFile: models + "/qdq/model.json", atomically: true, encoding: .utf8)
        let folder = Support.temporaryDirectory()
        let slide = try Support.syntheticSlide(width: 3000, height: 2000, seed: 75)
        let name = (slide as NSString).lastPathComponent
        func run(_ precision: String) throws -> [String: Any] {
            let result = try Support.tessera(["run", slide, "--model", "qdq", "--data", folder + "/data", "--out", folder + "/" + precision,
                                              "--precision", precision, "--json"], environment: ["TESSERA_MODELS": models])
            #expect(result.status == 0, "\(result.out) \(result.err)")
            return try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(precision)/\(name)/summary.json")))
                as? [String: Any] ?? [:]
        }
        let int8 = try run("int8"), fp32 = try run("fp32")
        #expect(int8["precision"] as? String == "int8")
        #expect(int8["job"] as? Int != fp32["job"] as? Int)
        #expect(!FileManager.default.fileExists(atPath: models + "/qdq/calibration.json"))
    }

    @Test func fp32JobsKeepTheirCanonicalText() throws {
        var parameters = AnalysisParameters()
        #expect(!parameters.canonicalJSON.contains("precision"), "fp32 rows look as they always did")
        parameters.precision = "int8"
        parameters.calibrationSHA256 = "abc"
        #expect(parameters.canonicalJSON.contains("\"precision\":\"int8\""))
        #expect(try AnalysisParameters.parse(parameters.canonicalJSON) == parameters)
        #expect(throws: UsageError.self) { try AnalysisParameters(precision: "bf8").validate() }
    }
}
