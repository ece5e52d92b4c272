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
        #expect(try run(["--precision", "int4"], out: "typo").err.contains("--precision int4: use fp32 or int8"))

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
