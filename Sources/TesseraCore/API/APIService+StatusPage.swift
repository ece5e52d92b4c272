import Foundation
import HTTPServer
import JobStore

extension APIService {
    /// Result files the status page links, in order.
    static let statusLinks = ["result", "tiles.csv", "annotations.geojson", "regions.geojson", "heatmap.png", "overlay.png",
                              "confidence.png", "classmap.tif", "probability.tif"]

    /// A small HTML page listing recent jobs with progress and their overlays.
    func statusPage() -> HTTPResponse {
        let jobs = (try? store.jobs(limit: 50)) ?? []
        let counts = (try? store.counts()) ?? [:]
        func escape(_ text: String) -> String {
            text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        var rows = ""
        for job in jobs {
            let total = job.tilesTotal ?? 0
            let percent = total > 0 ? Int(100 * Double(job.tilesDone) / Double(total)) : (job.state == .done ? 100 : 0)
            let overlay = job.state == .done
                ? "<a href=\"/v1/jobs/\(job.id)/viewer\"><img src=\"/v1/jobs/\(job.id)/overlay.png\" alt=\"overlay\" height=\"64\" loading=\"lazy\"></a>"
                : ""
            let files = job.state == .done
                ? (["viewer"] + Self.statusLinks).map { "<a href=\"/v1/jobs/\(job.id)/\($0)\">\($0 == "result" ? "summary" : $0)</a>" }
                    .joined(separator: " ")
                : ""
            rows += """
                <tr><td><a href="/v1/jobs/\(job.id)">\(job.id)</a></td><td>\(escape(job.slide.originalName))</td>\
                <td>\(escape(job.model))</td><td class="\(job.state.rawValue)">\(job.state.rawValue)</td>\
                <td><progress max="100" value="\(percent)"></progress> \(job.tilesDone)/\(total)</td>\
                <td>\(escape(job.error.map { JobFailure(stored: $0).message } ?? ""))</td><td>\(overlay)</td><td class="files">\(files)</td></tr>

                """
        }
        // Reloads only while work is pending; result files are revalidated (ETag), not downloaded again.
        let active = jobs.contains { $0.state == .queued || $0.state == .running }
        let summary = JobState.allCases.map { "\($0.rawValue): \(counts[$0] ?? 0)" }.joined(separator: " &middot; ")
        let html = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">\(active ? "<script>setTimeout(function () { location.reload(); }, 5000);</script>" : "")
            <title>Tessera</title>
            <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:4px 10px;\
            border-bottom:1px solid #ddd;text-align:left}.files{max-width:22em;font-size:90%}.failed{color:#b00}.done{color:#070}.running{color:#05a}</style>
            </head><body><h1>Tessera</h1><p>\(summary)</p>
            <table><tr><th>job</th><th>slide</th><th>model</th><th>state</th><th>progress</th><th>error</th><th>overlay</th><th>results</th></tr>
            \(rows)</table><p><a href="/v1/models">models</a> &middot; <a href="/metrics">metrics</a></p></body></html>
            """
        return .text(200, html, contentType: "text/html; charset=utf-8")
    }
}
