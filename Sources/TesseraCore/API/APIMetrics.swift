import Foundation
import JobStore

/// Counters for `GET /metrics` (Prometheus text format 0.0.4).
public final class APIMetrics: @unchecked Sendable {
    // @unchecked: all state is guarded by `lock`.
    private let lock = NSLock()
    private var requests: [String: Int] = [:]
    private var latencyBuckets = [Int](repeating: 0, count: APIMetrics.bounds.count)
    private var latencySum = 0.0
    private var latencyCount = 0
    private var uploadBytes = 0
    private var tilesProcessed = 0
    private let started = Date()
    static let bounds: [Double] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    public init() {}

    func record(method: String, status: Int, seconds: Double) {
        lock.withLock {
            requests["method=\"\(method)\",code=\"\(status)\"", default: 0] += 1
            for (index, bound) in Self.bounds.enumerated() where seconds <= bound { latencyBuckets[index] += 1 }
            latencySum += seconds
            latencyCount += 1
        }
    }

    func addUploadBytes(_ count: Int) { lock.withLock { uploadBytes += count } }

    private var lastProgress: [JobID: Int] = [:]

    /// Notes a job's progress (tiles done so far) and counts the new tiles.
    public func observe(job: JobID, tilesDone: Int) {
        lock.withLock {
            let previous = lastProgress[job] ?? tilesDone
            if tilesDone > previous { tilesProcessed += tilesDone - previous }
            lastProgress[job] = tilesDone
            if lastProgress.count > 1000 { lastProgress.removeAll() }
        }
    }

    /// The exposition text.
    func prometheus(store: any JobQueue) -> String {
        let counts = (try? store.counts()) ?? [:]
        return lock.withLock {
            var lines = [
                "# HELP tessera_jobs Jobs by state.", "# TYPE tessera_jobs gauge",
            ]
            for state in JobState.allCases { lines.append("tessera_jobs{state=\"\(state.rawValue)\"} \(counts[state] ?? 0)") }
            lines += [
                "# HELP tessera_queue_depth Jobs waiting to run.", "# TYPE tessera_queue_depth gauge",
                "tessera_queue_depth \(counts[.queued] ?? 0)",
                "# HELP tessera_tiles_processed_total Tiles classified by this process (rate() gives tiles/s).",
                "# TYPE tessera_tiles_processed_total counter", "tessera_tiles_processed_total \(tilesProcessed)",
                "# HELP tessera_upload_bytes_total Slide bytes accepted.", "# TYPE tessera_upload_bytes_total counter",
                "tessera_upload_bytes_total \(uploadBytes)",
                "# HELP tessera_http_requests_total HTTP requests answered.", "# TYPE tessera_http_requests_total counter",
            ]
            for key in requests.keys.sorted() { lines.append("tessera_http_requests_total{\(key)} \(requests[key]!)") }
            lines += ["# HELP tessera_http_request_duration_seconds Time to answer a request (after its body arrived).",
                      "# TYPE tessera_http_request_duration_seconds histogram"]
            for (index, bound) in Self.bounds.enumerated() {
                lines.append("tessera_http_request_duration_seconds_bucket{le=\"\(bound)\"} \(latencyBuckets[index])")
            }
            lines += [
                "tessera_http_request_duration_seconds_bucket{le=\"+Inf\"} \(latencyCount)",
                "tessera_http_request_duration_seconds_sum \(latencySum)",
                "tessera_http_request_duration_seconds_count \(latencyCount)",
                "# HELP tessera_uptime_seconds Seconds since the server started.", "# TYPE tessera_uptime_seconds gauge",
                "tessera_uptime_seconds \(Date().timeIntervalSince(started))",
            ]
            return lines.joined(separator: "\n") + "\n"
        }
    }
}
