import Foundation
import Logging
import Testing
@testable import TesseraCore

/// One intake for every entry point: job identity, canonical parameters, results where asked, retries.
@Suite("Slide intake", .serialized)
struct IntakeTests {
    static let logger: Logger = {
        var logger = Logger(label: "tests")
        logger.logLevel = .critical
        return logger
    }()

    func runOptions(models: String, data: String, out: String) -> RunOptions {
        var options = RunOptions()
        options.model = "tiny"
        options.modelsDirectory = models
        options.dataDirectory = data
        options.outputDirectory = out
        options.threads = 2
        return options
    }

    @Test func oneSlideUploadedWatchedAndRunIsOneJob() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        let slide = try Support.syntheticSlide(width: 1500, height: 1000, seed: 51)
        // The API, with no workers: the upload only queues.
        var serve = ServeOptions(dataDirectory: root + "/data")
        serve.api.modelsDirectory = models
        serve.api.defaultModel = "tiny"
        serve.port = 0
        serve.workers = 0
        let server = try Server(options: serve, logger: Self.logger)
        try server.start()
        let client = HTTPClient(base: "http://127.0.0.1:\(server.port)")
        let upload = try client.call("POST", "/v1/slides?filename=upload.tif", body: Data(contentsOf: URL(fileURLWithPath: slide)))
        server.stop()
        #expect(upload.status == 202)
        // The watch folder, same data folder.
        try FileManager.default.createDirectory(atPath: root + "/in", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: slide, toPath: root + "/in/dropped.tif")
        var watch = WatchOptions(input: root + "/in", output: root + "/watch-out")
        watch.dataDirectory = root + "/data"
        watch.model = "tiny"
        watch.modelsDirectory = models
        watch.settleSeconds = 0
        let watcher = try WatchFolder(options: watch, logger: Self.logger, stop: StopFlag())
        try watcher.scan()
        try watcher.scan()
        // `run`, same data folder: it works the one job.
        let reports = try SlideRun.run(paths: [slide], options: runOptions(models: models, data: root + "/data", out: root + "/out"),
                                       logger: Self.logger)
        let store = try DataDirectory.openStore(root + "/data")
        let jobs = try store.jobs()
        #expect(jobs.count == 1, "one job for one slide, model and parameters: \(jobs.map(\.parameters))")
        #expect(reports.first?.state == "done" && reports.first?.job == jobs.first?.id.rawValue)
        let parameters = try AnalysisParameters.parse(try #require(jobs.first).parameters)
        #expect(parameters.mpp == 2.0 && parameters.modelSHA256?.count == 64, "defaults resolved, model identity recorded")
    }

    @Test func parametersDecodeStrictly() throws {
        #expect(throws: JobFailure.self) { try AnalysisParameters.parse("{\"min_tissue\": \"lots\"}") }
        #expect(throws: JobFailure.self) { try AnalysisParameters.parse("{\"min_tisue\": 0.2}") }
        #expect(throws: JobFailure.self) { try AnalysisParameters.parse("not json") }
        var parameters = AnalysisParameters(mpp: 1, minTissue: 0.25, embeddings: true)
        parameters.modelSHA256 = String(repeating: "a", count: 64)
        #expect(try AnalysisParameters.parse(parameters.canonicalJSON) == parameters)
        #expect(try AnalysisParameters.parse("{}") == AnalysisParameters(), "rows of older versions keep their defaults")
    }

    @Test func twoInputsWithOneNameGetTwoFoldersWithTheirOwnNumbers() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        for (folder, tissue, seed) in [("a", 0.3, UInt64(52)), ("b", 0.7, UInt64(53))] {
            try FileManager.default.createDirectory(atPath: root + "/" + folder, withIntermediateDirectories: true)
            try SyntheticSlide.write(to: root + "/\(folder)/x.tif", width: 1500, height: 1000, tissueFraction: tissue, seed: seed)
        }
        let reports = try SlideRun.run(paths: [root + "/a/x.tif", root + "/b/x.tif"],
                                       options: runOptions(models: models, data: root + "/data", out: root + "/coll"), logger: Self.logger)
        #expect(reports.map(\.outputDir) == [root + "/coll/x.tif", root + "/coll/x.tif~2"])
        for report in reports {
            let summary = try JSONDecoder().decode(JobSummary.self, from: Data(contentsOf: URL(fileURLWithPath: report.outputDir! + "/summary.json")))
            #expect(summary.job == report.job && summary.tilesTissue == report.tilesTissue)
        }
        #expect(reports[0].job != reports[1].job && reports[0].tilesTissue != reports[1].tilesTissue)
        let cohort = try String(contentsOfFile: root + "/coll/cohort.csv", encoding: .utf8).split(separator: "\n")
        #expect(cohort.count == 3 && cohort[0].hasPrefix("slide,output_dir,job,state,tiles_tissue,fraction_A"))
    }

    @Test func aFolderIsEverySlideInIt() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        try FileManager.default.createDirectory(atPath: root + "/cohort/sub", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 54), toPath: root + "/cohort/one.tif")
        try FileManager.default.copyItem(atPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 55), toPath: root + "/cohort/sub/two.tif")
        try "notes".write(toFile: root + "/cohort/notes.txt", atomically: true, encoding: .utf8)
        var options = runOptions(models: models, data: root + "/data", out: root + "/out")
        #expect(try SlideRun.run(paths: [root + "/cohort"], options: options, logger: Self.logger).map(\.state) == ["done"])
        options.recursive = true
        #expect(try SlideRun.run(paths: [root + "/cohort"], options: options, logger: Self.logger).map(\.state) == ["done", "done"])
        try FileManager.default.createDirectory(atPath: root + "/empty", withIntermediateDirectories: true)
        #expect(throws: UsageError.self) { try SlideRun.run(paths: [root + "/empty"], options: options, logger: Self.logger) }
    }

    @Test func watchRetriesAFilePutBackAndNeverReplacesOtherResults() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        try Support.rewriteCard(models, "tiny", size: 2)
        try FileManager.default.createDirectory(atPath: root + "/in", withIntermediateDirectories: true)
        var watch = WatchOptions(input: root + "/in", output: root + "/out")
        watch.dataDirectory = root + "/data"
        watch.model = "tiny"
        watch.modelsDirectory = models
        watch.settleSeconds = 0
        watch.moveProcessed = true
        let watcher = try WatchFolder(options: watch, logger: Self.logger, stop: StopFlag())
        func cycle() throws {
            try watcher.scan()
            try watcher.scan()
            while try watcher.runner.runNext() != nil {}
            try watcher.fileFinished()
        }
        try FileManager.default.copyItem(atPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 56), toPath: root + "/in/x.tif")
        try cycle()
        #expect(FileManager.default.fileExists(atPath: root + "/in/failed/x.tif"), "the broken model failed the job")
        // Card fixed, slide put back: analysed again.
        try Support.rewriteCard(models, "tiny", size: 32)
        try FileManager.default.moveItem(atPath: root + "/in/failed/x.tif", toPath: root + "/in/x.tif")
        try cycle()
        #expect(FileManager.default.fileExists(atPath: root + "/in/done/x.tif"))
        let first = try #require(ResultFolders.job(in: root + "/out/x.tif"))
        // Another slide under the same name: its results go next to the first, not over them.
        try FileManager.default.copyItem(atPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 57), toPath: root + "/in/x.tif")
        try cycle()
        #expect(ResultFolders.job(in: root + "/out/x.tif") == first)
        let second = try #require(ResultFolders.job(in: root + "/out/x.tif~2"))
        #expect(second != first)
    }

    @Test func watchMoveKeepsTheSlideForLaterJobsAndTakesSubfolders() throws {
        let root = Support.temporaryDirectory()
        let models = try Support.tinyModels()
        try FileManager.default.createDirectory(atPath: root + "/in/scanner-2", withIntermediateDirectories: true)
        func watcher(model: String) throws -> WatchFolder {
            var watch = WatchOptions(input: root + "/in", output: root + "/out")
            watch.dataDirectory = root + "/data"
            watch.model = model
            watch.modelsDirectory = models
            watch.settleSeconds = 0
            watch.moveProcessed = true
            watch.recursive = true
            return try WatchFolder(options: watch, logger: Self.logger, stop: StopFlag())
        }
        func cycle(_ watcher: WatchFolder) throws {
            try watcher.scan()
            try watcher.scan()
            while try watcher.runner.runNext() != nil {}
            try watcher.fileFinished()
        }
        let slide = try Support.syntheticSlide(width: 1500, height: 1000, seed: 58)
        try FileManager.default.copyItem(atPath: slide, toPath: root + "/in/scanner-2/x.tif")
        let first = try watcher(model: "tiny")
        try cycle(first)
        #expect(FileManager.default.fileExists(atPath: root + "/out/scanner-2/x.tif/summary.json"), "sub-folders are taken")
        #expect(FileManager.default.fileExists(atPath: root + "/in/done/scanner-2/x.tif"))
        // The same content again, under another name and for another model, after the first file moved away.
        try FileManager.default.copyItem(atPath: slide, toPath: root + "/in/y.tif")
        try cycle(try watcher(model: "tiny-fine"))
        let jobs = try DataDirectory.openStore(root + "/data").jobs()
        #expect(jobs.count == 2 && jobs.allSatisfy { $0.state == .done }, "\(jobs.map { ($0.state, $0.error) })")
        #expect(FileManager.default.fileExists(atPath: root + "/out/y.tif/summary.json"))
    }
}
