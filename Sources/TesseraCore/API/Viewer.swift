import Foundation
import HTTPServer
import JobStore
import SlideIO

/// Deep-zoom sources of the viewer, one per job's slide, opened on first use.
public final class ViewerTiles: @unchecked Sendable {
    // @unchecked: `sources` is only touched under `lock`; DeepZoom is Sendable.
    private let lock = NSLock()
    private var sources: [String: DeepZoom] = [:]

    public init() {}

    func source(for job: Job, limits: SlideLimits = SlideLimits()) throws -> DeepZoom {
        lock.lock()
        defer { lock.unlock() }
        if let known = sources[job.slide.sha256] { return known }
        let zoom = DeepZoom(slide: try Slide.open(path: job.slide.path, limits: limits))
        if sources.count >= 64 { sources.removeAll() }
        sources[job.slide.sha256] = zoom
        return zoom
    }
}

/// The slide viewer: `GET /v1/jobs/{id}/viewer` (Leaflet page), `GET /v1/jobs/{id}/tiles/{z}/{x}/{y}.jpg`
/// (deep-zoom tiles from the slide's pyramid through libvips) and `GET /static/leaflet/...` (Leaflet
/// from Debian's libjs-leaflet, served from where the package installs it).
extension APIService {
    /// Where `libjs-leaflet` puts Leaflet.
    static let leafletDirectory = "/usr/share/javascript/leaflet"

    /// Answers the viewer's paths under `/v1/jobs/{id}/`, or nil when `rest` is not one of them.
    func viewerRoute(_ id: JobID, _ rest: [String], _ request: HTTPRequest) -> HTTPResponse? {
        guard rest.first == "viewer" && rest.count == 1 || rest.first == "tiles" && rest.count == 4 else { return nil }
        guard request.method == "GET" || request.method == "HEAD" else {
            return HTTPResponse.error(405, "method_not_allowed", "\(request.method) is not allowed on \(request.path); use GET").adding(("Allow", "GET"))
        }
        let job: Job
        do {
            job = try store.job(id)
        } catch JobStoreError.notFound {
            return .error(404, "not_found", "no job \(id)")
        } catch {
            return .error(503, "queue_unavailable", "\(error)")
        }
        return rest.first == "viewer" ? viewerPage(job) : viewerTile(job, rest, request)
    }

    private func viewerTile(_ job: Job, _ rest: [String], _ request: HTTPRequest) -> HTTPResponse {
        guard let level = Int(rest[1]), let column = Int(rest[2]), rest[3].hasSuffix(".jpg"),
              let row = Int(rest[3].dropLast(4)) else {
            return .error(404, "not_found", "tiles are /v1/jobs/ID/tiles/LEVEL/COLUMN/ROW.jpg")
        }
        let tag = "\"\(job.slide.sha256.prefix(16))-\(level)-\(column)-\(row)\""
        // Content-addressed slide: a tile never changes.
        let caching = [("Cache-Control", configuration.tokens.isEmpty ? "public, max-age=31536000, immutable" : "private, max-age=31536000, immutable"),
                       ("ETag", tag)]
        if request.headers["if-none-match"] == tag { return HTTPResponse(status: 304, headers: caching) }
        do {
            let data = try viewer.source(for: job, limits: configuration.slideLimits).tile(level: level, column: column, row: row)
            return HTTPResponse(status: 200, headers: [("Content-Type", "image/jpeg")] + caching, body: .data(data))
        } catch SlideError.invalidArgument(let message) {
            return .error(404, "not_found", message)
        } catch let error as SlideError {
            return .error(422, "unreadable_slide", error.description.replacingOccurrences(of: job.slide.path, with: job.slide.originalName))
        } catch {
            return .error(500, "tile", "\(error)")
        }
    }

    /// Leaflet's files, read from the installed package (never copied into Tessera).
    func leafletFile(_ name: String) -> HTTPResponse {
        let types = ["leaflet.js": "application/javascript", "leaflet.css": "text/css",
                     "images/layers.png": "image/png", "images/layers-2x.png": "image/png",
                     "images/marker-icon.png": "image/png", "images/marker-icon-2x.png": "image/png",
                     "images/marker-shadow.png": "image/png"]
        guard let type = types[name] else { return .error(404, "not_found", "no Leaflet file \(name)") }
        let path = Self.leafletDirectory + "/" + name
        guard FileManager.default.fileExists(atPath: path) else {
            return .error(404, "not_found", "Leaflet is not installed (apt-get install libjs-leaflet)")
        }
        return HTTPResponse(status: 200, headers: [("Content-Type", type), ("Cache-Control", "public, max-age=86400")], body: .file(path))
    }

    private func viewerPage(_ job: Job) -> HTTPResponse {
        guard job.state == .done, let directory = job.outputDirectory,
              let data = FileManager.default.contents(atPath: directory + "/summary.json"),
              let summary = try? JSONDecoder().decode(JobSummary.self, from: data) else {
            return .error(409, "not_ready", "job \(job.id) is \(job.state.rawValue); the viewer opens once it is done")
        }
        let zoom: DeepZoom
        do {
            zoom = try viewer.source(for: job, limits: configuration.slideLimits)
        } catch {
            return .error(422, "unreadable_slide", "\(job.slide.originalName): the slide cannot be opened for viewing")
        }
        let config: [String: Any] = [
            "job": job.id.rawValue, "slide": job.slide.originalName, "model": summary.model,
            "width": summary.slideWidth, "height": summary.slideHeight, "maxLevel": zoom.maxLevel, "tileSize": zoom.tileSize,
            "mpp": summary.slideMPP ?? NSNull(), "step": summary.tileStep ?? Double(summary.tileSize),
            "classes": summary.classes.isEmpty ? Array(summary.classFractions.keys).sorted() : summary.classes,
            "colours": summary.classColours ?? [:], "shares": summary.classFractions,
            "areas": summary.classAreasMM2 ?? [:],
            // A segmentation job overlays its class map's blocks (segmentation.png) instead of tiles.
            "segmentation": summary.segmentation.map { s -> Any in
                let block = Double(s.regionCellPixels) * s.levelZeroScale
                return ["block": block, "columns": (s.mapWidth + s.regionCellPixels - 1) / s.regionCellPixels,
                        "rows": (s.mapHeight + s.regionCellPixels - 1) / s.regionCellPixels]
            } ?? NSNull(),
        ]
        let json = (try? JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .withoutEscapingSlashes]))
            .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        let safe = json.replacingOccurrences(of: "<", with: "\\u003c")
        let html = Self.viewerHTML.replacingOccurrences(of: "@CONFIG@", with: safe)
            .replacingOccurrences(of: "@TITLE@", with: Self.escapeHTML(job.slide.originalName))
        return .text(200, html, contentType: "text/html; charset=utf-8")
    }

    static func escapeHTML(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
