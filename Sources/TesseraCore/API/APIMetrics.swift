import Foundation
import JobStore

/// Counters for `GET /metrics` (Prometheus text format 0.0.4).
public final class APIMetrics: @unchecked Sendable {
    // @unchecked: all state is guarded by `lock`.
    private let lock = NSLock()
    private var requests: [String: Int] = [:]
    private var latency = Histogram(bounds: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
    private var uploadBytes = 0
    private var tilesProcessed = 0
    private let started = Date()

    public init() {}

    func record(method: String, status: Int, seconds: Double) {
        lock.withLock {
            requests["method=\"\(method)\",code=\"\(status)\"", default: 0] += 1
            latency.observe(seconds)
        }
    }

    /// A label value with backslashes, quotes and newlines escaped.
    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    func addUploadBytes(_ count: Int) { lock.withLock { uploadBytes += count } }

    private var lastProgress: [JobID: Int] = [:]
    private var tilesByModel: [String: Int] = [:]
    private var jobDuration = Histogram(bounds: [1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600])
    private var failures: [String: Int] = [:]

    /// Notes a job's progress (tiles done so far) and counts the tiles scored since the last
    /// note, the first batch of an attempt included (counted from the job's checkpoint at claim).
    public func observe(job: Job, tilesDone: Int) {
        lock.withLock {
            let previous = lastProgress[job.id] ?? job.tilesDone
            if tilesDone > previous {
                tilesProcessed += tilesDone - previous
                tilesByModel[job.model, default: 0] += tilesDone - previous
            }
            lastProgress[job.id] = tilesDone
        }
    }

    /// Notes the end of an attempt: its duration when done, its code when failed.
    public func finished(job: Job, outcome: JobOutcome) {
        lock.withLock {
            lastProgress[job.id] = nil
            switch outcome {
            case .done(_, let summary):
                jobDuration.observe(summary.timings["total_seconds"] ?? 0)
            case .failed(let failure):
                failures[failure.code.rawValue, default: 0] += 1
            case .leaseLost, .stopped, .cancelled:
                break
            }
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
                "# HELP tessera_model_tiles_processed_total Tiles classified by this process, per model.",
                "# TYPE tessera_model_tiles_processed_total counter",
            ]
            for model in tilesByModel.keys.sorted() {
                lines.append("tessera_model_tiles_processed_total{model=\"\(Self.escape(model))\"} \(tilesByModel[model]!)")
            }
            lines += jobDuration.lines("tessera_job_duration_seconds", help: "Wall time of jobs done by this process.")
            lines += [
                "# HELP tessera_job_failures_total Failed job attempts in this process, by error code.",
                "# TYPE tessera_job_failures_total counter",
            ]
            for code in JobFailure.Code.allCases {
                lines.append("tessera_job_failures_total{code=\"\(code.rawValue)\"} \(failures[code.rawValue] ?? 0)")
            }
            lines += [
                "# HELP tessera_build_info Version of the running binary (value 1).", "# TYPE tessera_build_info gauge",
                "tessera_build_info{version=\"\(Tessera.version)\"} 1",
                "# HELP tessera_upload_bytes_total Slide bytes accepted.", "# TYPE tessera_upload_bytes_total counter",
                "tessera_upload_bytes_total \(uploadBytes)",
                "# HELP tessera_http_requests_total HTTP requests answered.", "# TYPE tessera_http_requests_total counter",
            ]
            for key in requests.keys.sorted() { lines.append("tessera_http_requests_total{\(key)} \(requests[key]!)") }
            lines += latency.lines("tessera_http_request_duration_seconds", help: "Time to answer a request (after its body arrived).")
            lines += [
                "# HELP tessera_uptime_seconds Seconds since the server started.", "# TYPE tessera_uptime_seconds gauge",
                "tessera_uptime_seconds \(Date().timeIntervalSince(started))",
            ]
            return lines.joined(separator: "\n") + "\n"
        }
    }
}

/// A Prometheus histogram: cumulative buckets, sum and count.
struct Histogram {
    let bounds: [Double]
    private var buckets: [Int]
    private var sum = 0.0
    private var count = 0

    init(bounds: [Double]) {
        self.bounds = bounds
        buckets = [Int](repeating: 0, count: bounds.count)
    }

    mutating func observe(_ value: Double) {
        for (index, bound) in bounds.enumerated() where value <= bound { buckets[index] += 1 }
        sum += value
        count += 1
    }

    /// HELP, TYPE, the buckets, sum and count.
    func lines(_ name: String, help: String) -> [String] {
        ["# HELP \(name) \(help)", "# TYPE \(name) histogram"]
            + bounds.indices.map { "\(name)_bucket{le=\"\(bounds[$0])\"} \(buckets[$0])" }
            + ["\(name)_bucket{le=\"+Inf\"} \(count)", "\(name)_sum \(sum)", "\(name)_count \(count)"]
    }
}
