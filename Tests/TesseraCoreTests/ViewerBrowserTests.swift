import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SlideIO
import Testing
@testable import TesseraCore

/// The slide viewer in a real browser: `tessera serve` on loopback analyses a real slide, headless
/// Chromium opens `/v1/jobs/{id}/viewer`, and the rendered page must show slide tiles, the class
/// overlay and a legend naming every class, with no script error.
@Suite("Viewer in Chromium", .serialized, .needsTesseraBinary, .needsChromium, .needsViewerSlide)
struct ViewerBrowserTests {
    static let slide = Support.viewerSlide

    /// Runs Chromium headless on `url`; `mode` is `--dump-dom` or `--screenshot=PATH`. Returns stdout.
    static func chromium(_ url: String, _ mode: String, profile: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Support.chromium!)
        process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=" + profile,
                             "--window-size=1280,800", "--virtual-time-budget=15000", mode, url]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        Support.finish(process, within: 90)
        return String(decoding: data, as: UTF8.self)
    }

    /// Starts `tessera serve` on a free loopback port with `models` as the search path, uploads the
    /// viewer slide for `model` and waits until its job is done.
    static func serveAndAnalyse(models: String, model: String, root: String) throws -> (Process, HTTPClient, String, Int) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Support.binary!)
        process.arguments = ["serve", "--data", root + "/data", "--port", "0", "--workers", "1", "--threads", "2", "--log-level", "error"]
        process.environment = ProcessInfo.processInfo.environment.merging(["TESSERA_MODELS": models]) { $1 }
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let port = try #require(String(decoding: line, as: UTF8.self).split(separator: ":").last
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        let base = "http://127.0.0.1:\(port)"
        let client = HTTPClient(base: base)
        let upload = try client.json("POST", "/v1/slides?filename=CMU-1-Small-Region.svs&model=\(model)",
                                     body: Data(contentsOf: URL(fileURLWithPath: Self.slide)))
        #expect(upload.0 == 202)
        let id = try #require(upload.1["id"] as? Int)
        let deadline = Date().addingTimeInterval(120)
        var state = ""
        while Date() < deadline {
            state = try client.json("GET", "/v1/jobs/\(id)").1["state"] as? String ?? ""
            if state == "done" || state == "failed" { break }
            Thread.sleep(forTimeInterval: 0.3)
        }
        try #require(state == "done")
        return (process, client, base, id)
    }

    @Test func viewerShowsSlideOverlayAndLegend() throws {
        let root = Support.temporaryDirectory()
        // The shipped default model when the models folder has it (real class names), else the tiny fixture.
        let shipped = Support.root.appendingPathComponent("models").path
        let useShipped = FileManager.default.fileExists(atPath: shipped + "/" + ModelCatalog.compactModel + "/model.onnx")
        let models = useShipped ? shipped : try Support.tinyModels()
        let model = useShipped ? ModelCatalog.compactModel : "tiny"
        let (process, client, base, id) = try Self.serveAndAnalyse(models: models, model: model, root: root)
        defer {
            kill(process.processIdentifier, SIGTERM)
            Support.finish(process, within: 60)
        }
        let summary = try JSONDecoder().decode(JobSummary.self, from: client.call("GET", "/v1/jobs/\(id)/result").body)

        // Tiles: JPEG, cached for good, revalidated with the ETag.
        let tile = try client.call("GET", "/v1/jobs/\(id)/tiles/12/4/5.jpg")
        #expect(tile.status == 200 && tile.headers["content-type"] == "image/jpeg")
        #expect(tile.headers["cache-control"]?.contains("immutable") == true)
        let etag = try #require(tile.headers["etag"])
        #expect(try client.call("GET", "/v1/jobs/\(id)/tiles/12/4/5.jpg", headers: ["If-None-Match": etag]).status == 304)
        #expect(try client.call("GET", "/v1/jobs/\(id)/tiles/12/99/5.jpg").status == 404)
        // The status page links the viewer and every result file; result files revalidate too.
        let page = String(decoding: try client.call("GET", "/").body, as: UTF8.self)
        for link in ["viewer"] + APIService.statusLinks { #expect(page.contains("/v1/jobs/\(id)/\(link)\""), "status page links \(link)") }
        let overlay = try client.call("GET", "/v1/jobs/\(id)/overlay.png")
        let overlayTag = try #require(overlay.headers["etag"])
        #expect(try client.call("GET", "/v1/jobs/\(id)/overlay.png", headers: ["If-None-Match": overlayTag]).status == 304)

        // The page as Chromium renders it.
        let viewer = base + "/v1/jobs/\(id)/viewer"
        let dom = try Self.chromium(viewer, "--dump-dom", profile: root + "/chrome")
        let body = try #require(dom.range(of: "<body[^>]*>", options: .regularExpression).map { String(dom[$0]) })
        func attribute(_ name: String) -> Int? {
            body.range(of: name + "=\"[0-9]+\"", options: .regularExpression)
                .flatMap { Int(body[$0].dropFirst(name.count + 2).dropLast()) }
        }
        let errors = dom.range(of: "<pre id=\"errors\">[^<]*</pre>", options: .regularExpression).map { String(dom[$0]) } ?? "missing"
        #expect(attribute("data-errors") == 0 && errors == "<pre id=\"errors\"></pre>", "no script error: \(errors)")
        #expect((attribute("data-tiles") ?? 0) > 0, "slide tiles drawn")
        #expect(attribute("data-overlay") == summary.tilesTissue, "an overlay cell per tissue tile")
        #expect(dom.contains("leaflet-image-layer"), "the class overlay is on the map")
        for name in summary.classes { #expect(dom.contains("class=\"name\">\(name)</span>"), "legend names \(name)") }

        let shot = root + "/viewer.png"
        _ = try Self.chromium(viewer, "--screenshot=" + shot, profile: root + "/chrome")
        let picture = try Picture.readRGB(path: shot)
        var stained = 0, colours = Set<String>()
        for y in stride(from: 0, to: picture.height, by: 2) {
            for x in stride(from: 0, to: picture.width, by: 2) {
                let p = picture.pixel(x, y)
                colours.insert(ClassPalette.hex(p))
                if x < picture.width - 320, Int(p.0) > Int(p.1) + 40, Int(p.2) > Int(p.1) + 20 { stained += 1 }
            }
        }
        #expect(stained > 500, "H&E-stained slide pixels on the map (\(stained))")
        for (name, hex) in summary.classColours ?? [:] { #expect(colours.contains(hex), "legend swatch of \(name) drawn") }
        if let folder = ProcessInfo.processInfo.environment["TESSERA_SCREENSHOTS"] {
            try? FileManager.default.removeItem(atPath: folder + "/viewer.png")
            try FileManager.default.copyItem(atPath: shot, toPath: folder + "/viewer.png")
            try? FileManager.default.removeItem(atPath: folder + "/overlay.png")
            try client.call("GET", "/v1/jobs/\(id)/overlay.png").body.write(to: URL(fileURLWithPath: folder + "/overlay.png"))
        }
    }

    /// A segmentation job in the viewer: the class map's blocks (segmentation.png) are the overlay,
    /// every block of the map is read back by the page, and no script fails.
    @Test(.enabled(if: SegmentationTests.lavlabAvailable, "../shared/data is absent"))
    func viewerOverlaysASegmentationMap() throws {
        let root = Support.temporaryDirectory()
        let (process, client, base, id) = try Self.serveAndAnalyse(models: try SegmentationTests.lavlabModels(),
                                                                    model: "lavlab-shell-v1", root: root)
        defer {
            kill(process.processIdentifier, SIGTERM)
            Support.finish(process, within: 60)
        }
        let summary = try JSONDecoder().decode(JobSummary.self, from: client.call("GET", "/v1/jobs/\(id)/result").body)
        let segmentation = try #require(summary.segmentation)
        let png = try client.call("GET", "/v1/jobs/\(id)/segmentation.png")
        #expect(png.status == 200 && png.headers["content-type"] == "image/png")
        let dom = try Self.chromium(base + "/v1/jobs/\(id)/viewer", "--dump-dom", profile: root + "/chrome")
        let body = try #require(dom.range(of: "<body[^>]*>", options: .regularExpression).map { String(dom[$0]) })
        let cell = segmentation.regionCellPixels
        let blocks = ((segmentation.mapWidth + cell - 1) / cell) * ((segmentation.mapHeight + cell - 1) / cell)
        #expect(body.contains("data-overlay=\"\(blocks)\""), "the page read every block of the map: \(body)")
        #expect(body.contains("data-errors=\"0\""), "no script error")
        #expect(dom.contains("segmentation.png") && dom.contains("leaflet-image-layer"))
        for name in summary.classes { #expect(dom.contains("class=\"name\">\(name)</span>"), "legend names \(name)") }
    }
}

extension Support {
    /// The real slide the viewer test opens.
    static let viewerSlide = shared.appendingPathComponent("slides/CMU-1-Small-Region.svs").path

    /// Debian's `chromium`, when installed.
    static var chromium: String? {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

extension Trait where Self == ConditionTrait {
    /// Skips a test when ../shared/data has no CMU-1-Small-Region.svs.
    static var needsViewerSlide: Self {
        .enabled(if: FileManager.default.fileExists(atPath: Support.viewerSlide),
                 "../shared/data/slides/CMU-1-Small-Region.svs is absent: the real-slide viewer test is skipped")
    }

    /// Skips a test that needs headless Chromium when it is not installed.
    static var needsChromium: Self {
        .enabled(if: Support.chromium != nil, "Chromium not installed (scripts/setup.sh --tests installs it)")
    }
}
