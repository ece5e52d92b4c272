import Foundation
import Testing
@testable import TesseraCore

/// `tessera doctor` on this machine: the shipped models, real libraries, real folders.
@Suite("Doctor")
struct DoctorTests {
    static let shippedModels = Support.root.appendingPathComponent("models").path

    /// A models folder with only the compact model: the teacher takes seconds to load in a debug build.
    static func compactOnly() throws -> String {
        let folder = Support.temporaryDirectory()
        try FileManager.default.createSymbolicLink(atPath: folder + "/" + ModelCatalog.compactModel,
                                                   withDestinationPath: shippedModels + "/" + ModelCatalog.compactModel)
        return folder
    }

    func examine(data: String, models: String) -> DoctorReport {
        var options = DoctorOptions(dataDirectory: data)
        options.modelsDirectory = models
        options.threads = 1
        return Doctor.examine(options)
    }

    func value(_ report: DoctorReport, _ name: String) -> String? {
        report.checks.first { $0.name == name }?.value
    }

    @Test func aGoodBoxPasses() throws {
        let report = examine(data: Support.temporaryDirectory() + "/data", models: Self.shippedModels)
        #expect(report.problems.isEmpty, "\(report.text)")
        // Versions come from the libraries themselves.
        let vips = try #require(value(report, "libvips"))
        #expect(vips.split(separator: ".").count == 3 && vips.first?.isNumber == true, "\(vips)")
        #expect(value(report, "SQLite") == SQLiteLibrary.version)
        #expect(value(report, "OpenBLAS")?.hasPrefix("OpenBLAS ") == true)
        #expect(value(report, "OpenSlide")?.first?.isNumber == true)
        #expect(value(report, "libmicrohttpd")?.first?.isNumber == true)
        // Every shipped model is listed and loads.
        for model in [ModelCatalog.compactModel, ModelCatalog.teacherModel] {
            #expect(report.checks.first { $0.name == model }?.status == .ok, "\(report.text)")
            #expect(value(report, model)?.hasPrefix("loads in") == true)
        }
        // The CPU lines say what the engine does with what it finds.
        let flags = Set(((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "").split(separator: "\n")
            .first { $0.hasPrefix("flags") }?.split(separator: " ").map(String.init) ?? [])
        let hasAVX512 = ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains)
        let kernels = try #require(value(report, "engine kernels"))
        #expect(kernels.contains(hasAVX512 ? "AVX-512 register tiles" : flags.contains("avx2") ? "AVX2 + FMA builds" : "portable C"),
                "\(kernels)")
        let int8 = try #require(value(report, "INT8 (VNNI)"))
        let vnni = flags.contains("avx512_vnni") || flags.contains("avx_vnni")
        #expect(int8.hasPrefix(vnni ? "yes: INT8 kernels on" : flags.contains("avx2") ? "no VNNI: INT8 kernels on" : "no:"), "\(int8)")
        #expect(value(report, "instruction sets")?.contains("avx2 \(flags.contains("avx2") ? "yes" : "no")") == true)
        #expect(value(report, "threads")?.hasPrefix("1 for inference") == true)
        #expect(value(report, "data folder")?.hasSuffix("will be created") == true)
        #expect(report.text.hasSuffix("no problems found\n"))
        let json = try #require(try JSONSerialization.jsonObject(with: report.json) as? [String: Any])
        #expect(json["ok"] as? Bool == true)
        #expect((json["checks"] as? [[String: Any]])?.count == report.checks.count)
    }

    @Test func aMissingModelFileFails() throws {
        let models = try Support.tinyModels()
        try FileManager.default.removeItem(atPath: models + "/tiny/model.onnx")
        let report = examine(data: Support.temporaryDirectory(), models: models)
        let problem = try #require(report.problems.first { $0.name == "tiny" })
        #expect(problem.value == "does not load: \(models)/tiny: model file model.onnx is missing")
        #expect(report.checks.first { $0.name == "tiny-fine" }?.status == .ok)
        // Neither shipped model is there: commands without --model would fail.
        #expect(report.problems.contains { $0.name == "default model" })
        #expect(report.text.contains("  PROBLEM  tiny: does not load: "))
    }

    @Test func anEmptyModelsFolderFails() {
        let report = examine(data: Support.temporaryDirectory(), models: Support.temporaryDirectory())
        #expect(report.problems.map(\.name) == ["models folder"])
    }

    @Test func anUnwritableDataFolderFails() throws {
        let folder = Support.unwritableFolder()
        let models = try Self.compactOnly()
        let report = examine(data: folder, models: models)
        let problem = try #require(report.problems.first { $0.name == "data folder" })
        #expect(problem.value.hasPrefix("\(folder) is not writable"), "\(problem.value)")
        // Below a file: cannot be created at all.
        let file = Support.temporaryDirectory() + "/file"
        try "x".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(examine(data: file + "/data", models: models).problems.first?.value == "\(file)/data cannot be created: \(file) is not a folder")
    }

    @Test func anUnreachablePostgresQueueFails() throws {
        var options = DoctorOptions(dataDirectory: Support.temporaryDirectory())
        options.modelsDirectory = try Self.compactOnly()
        // Nothing listens on port 1 of loopback.
        options.queue = "postgres://tessera:secret@127.0.0.1:1/tessera?connect_timeout=2"
        let report = Doctor.examine(options)
        let problem = try #require(report.problems.first { $0.name == "PostgreSQL" })
        #expect(problem.value.hasPrefix("postgres://tessera:***@127.0.0.1:1/tessera"), "\(problem.value)")
        #expect(!report.text.contains("secret"))
    }

    @Test(.needsTesseraBinary) func theCommandExitsNonZeroOnAProblemAndPrintsJSON() throws {
        func doctor(_ arguments: [String], models: String) throws -> (Int32, Data) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Support.binary!)
            process.arguments = ["doctor", "--threads", "1"] + arguments
            process.environment = ProcessInfo.processInfo.environment.merging(["TESSERA_MODELS": models, "TESSERA_QUEUE": ""]) { $1 }
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            Support.finish(process, within: 60)
            return (process.terminationStatus, data)
        }
        let compactOnly = try Self.compactOnly()
        let data = Support.temporaryDirectory()
        let (good, goodJSON) = try doctor(["--data", data, "--json"], models: compactOnly)
        #expect(good == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: goodJSON) as? [String: Any])
        #expect(object["ok"] as? Bool == true && object["version"] as? String == Tessera.version)
        let (bad, text) = try doctor(["--data", Support.unwritableFolder()], models: compactOnly)
        #expect(bad == 1)
        let lines = String(decoding: text, as: UTF8.self).split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("  PROBLEM  data folder: /") && $0.contains("is not writable") })
        // The verdict line counts the problems and names them (as root the folder is /sys, whose
        // free space is also 0).
        #expect(lines.last?.range(of: #"^[0-9]+ problems?: data folder: /"#, options: .regularExpression) != nil, "\(lines.last ?? "")")
    }
}
