import Foundation
import HTTPServer
import JobStore
import SlideIO

/// Settings of the HTTP API.
public struct APIConfiguration: Sendable {
    public var dataDirectory: String
    public var modelsDirectory = ModelCatalog.directory
    public var defaultModel = ModelCatalog.defaultModel
    /// Accepted bearer tokens (`secret` or `name:secret`, see `APIToken`); empty means no authentication.
    public var tokens: [String] = []
    /// Largest accepted upload.
    public var maxUploadBytes = 20 * 1024 * 1024 * 1024
    /// Queued jobs beyond which uploads get 503.
    public var maxQueuedJobs = 10_000
    /// The pixel limit of an uploaded slide (`--max-slide-pixels`), checked at upload and before analysis.
    public var slideLimits = SlideLimits()
    /// Free disk space kept in reserve beyond an upload's size.
    public var reserveBytes = 256 * 1024 * 1024
    public init(dataDirectory: String) { self.dataDirectory = dataDirectory }
}

/// The Tessera HTTP API on top of `HTTPServer`: uploads into the content-addressed slide store,
/// jobs, results, models, health, metrics and a status page.
public final class APIService: HTTPHandler, @unchecked Sendable {
    // @unchecked: every stored property is immutable or Sendable; `metrics` locks itself.
    public let configuration: APIConfiguration
    public let store: any JobQueue
    public let metrics = APIMetrics()
    /// Deep-zoom sources of the slide viewer (Viewer.swift).
    let viewer = ViewerTiles()
    /// Set when the server is shutting down: new work gets 503.
    public let stopping: StopFlag
    /// The bearer tokens accepted now (`configuration.tokens` at start; `serve` reloads them on SIGHUP).
    public let tokens: APITokenSet
    /// Every upload, result read, download, delete, retry and refused token (`DATA/audit.jsonl`).
    public let audit: AuditLog
    private let uploads: String
    private let slides: String

    public init(configuration: APIConfiguration, store: any JobQueue, stopping: StopFlag) throws {
        self.configuration = configuration
        self.store = store
        self.stopping = stopping
        tokens = APITokenSet(configuration.tokens)
        uploads = configuration.dataDirectory + "/uploads"
        slides = configuration.dataDirectory + "/slides"
        for directory in [uploads, slides, configuration.dataDirectory + "/outputs"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        audit = try AuditLog(path: AuditLog.path(inDataDirectory: configuration.dataDirectory))
        // Upload files left by a process that died mid-request belong to no job.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: uploads)) ?? [] {
            try? FileManager.default.removeItem(atPath: uploads + "/" + name)
        }
    }

    /// The intake every upload goes through (the same as `run`'s and `watch`'s).
    var intake: SlideIntake {
        SlideIntake(store: store, dataDirectory: configuration.dataDirectory, modelsDirectory: configuration.modelsDirectory,
                    interface: .api, limits: configuration.slideLimits)
    }

    // MARK: HTTPHandler

    public func decideBody(for request: HTTPRequest) -> BodyDecision {
        let decision = decideBodyFromHead(request)
        if case .reject(let response) = decision { recordAudit(request, response) }
        return decision
    }

    private func decideBodyFromHead(_ request: HTTPRequest) -> BodyDecision {
        // POST as documented, and PUT, which is what `curl -T slide.svs URL` sends.
        guard ["POST", "PUT"].contains(request.method), request.path == "/v1/slides" else {
            return .reject(respond(to: request))
        }
        if stopping.isSet { return .reject(.error(503, "shutting_down", "the server is shutting down")) }
        if let denied = authenticate(request) { return .reject(denied) }
        let type = request.headers["content-type"]?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard type == nil || type == "application/octet-stream" else {
            return .reject(.error(415, "unsupported_media_type", "send the slide as the raw body with Content-Type: application/octet-stream"))
        }
        guard let name = request.query["filename"], !Self.safeName(name).isEmpty else {
            return .reject(.error(400, "missing_filename", "the filename query parameter is required"))
        }
        if let failure = resolveModel(request.query["model"]).failure { return .reject(failure) }
        if case .failure(let error) = Self.parameters(request.query) { return .reject(error.response) }
        let chunked = request.headers["transfer-encoding"]?.lowercased().contains("chunked") == true
        if let declared = request.headers["content-length"], !chunked {
            // All digits but too big for an Int is still a length: over the limit, not missing.
            guard !declared.isEmpty, declared.allSatisfy(\.isASCII), declared.allSatisfy(\.isNumber) else {
                return .reject(.error(400, "bad_length", "Content-Length must be a number of bytes"))
            }
            let length = Int(declared) ?? Int.max
            guard length <= configuration.maxUploadBytes else {
                return .reject(.error(413, "too_large", "the slide is \(declared) bytes; the limit is \(configuration.maxUploadBytes)"))
            }
            guard length > 0 else { return .reject(.error(422, "not_a_slide", "the body is empty")) }
            if let free = Self.freeBytes(uploads), free < length + configuration.reserveBytes {
                return .reject(.error(507, "insufficient_storage", "not enough free disk space for \(length) bytes"))
            }
        } else if !chunked {
            return .reject(.error(411, "length_required", "send Content-Length or Transfer-Encoding: chunked"))
        }
        if let queued = try? store.counts()[.queued], queued >= configuration.maxQueuedJobs {
            return .reject(.error(503, "queue_full", "\(queued) jobs are waiting; try again later"))
        }
        // A chunked body is held to the limit while it streams (413 once it goes over).
        return .store(directory: uploads, maxBytes: configuration.maxUploadBytes)
    }

    public func respond(to request: HTTPRequest) -> HTTPResponse {
        let clock = Stopwatch()
        let response = route(request)
        recordAudit(request, response)
        metrics.record(method: request.method, status: response.status, seconds: clock.seconds)
        return response
    }

    private func route(_ request: HTTPRequest) -> HTTPResponse {
        let parts = request.path.split(separator: "/").map(String.init)
        func only(_ methods: [String], _ body: () -> HTTPResponse) -> HTTPResponse {
            methods.contains(request.method) ? body()
                : HTTPResponse.error(405, "method_not_allowed", "\(request.method) is not allowed on \(request.path); use \(methods.joined(separator: ", "))")
                    .adding(("Allow", methods.joined(separator: ", ")))
        }
        switch parts {
        case ["healthz"]:
            return only(["GET"]) {
                stopping.isSet ? .error(503, "shutting_down", "the server is shutting down")
                    : .json(200, Data("{\"status\":\"ok\"}".utf8))
            }
        case let path where path.count >= 3 && path[0] == "static" && path[1] == "leaflet":
            return only(["GET"]) { leafletFile(path.dropFirst(2).joined(separator: "/")) }
        case ["openapi.json"]:
            return only(["GET"]) { openAPIDocument() }
        default:
            break
        }
        guard parts.isEmpty || ["v1", "metrics"].contains(parts[0]) else {
            return .error(404, "not_found", "no such resource: \(request.path)")
        }
        // The status page (slide names) and the metrics are behind the same tokens as /v1/*.
        if let denied = authenticate(request) { return denied }
        switch parts {
        case []:
            return only(["GET"]) { statusPage() }
        case ["metrics"]:
            return only(["GET"]) { .text(200, metrics.prometheus(store: store), contentType: "text/plain; version=0.0.4") }
        default:
            break
        }
        switch Array(parts.dropFirst()) {
        case ["slides"]:
            return only(["POST", "PUT"]) { upload(request) }
        case ["models"]:
            return only(["GET"]) { models() }
        case ["jobs"]:
            return only(["GET"]) { listJobs(request) }
        case let path where path.count >= 2 && path[0] == "jobs":
            guard let number = Int(path[1]), number > 0 else { return .error(404, "not_found", "no job \(path[1])") }
            let id = JobID(number)
            if path.count == 2 {
                return only(["GET", "DELETE"]) { request.method == "GET" ? showJob(id) : cancelJob(id) }
            }
            if let viewer = viewerRoute(id, Array(path.dropFirst(2)), request) { return viewer }
            if path == ["jobs", path[1], "retry"] {
                return only(["POST"]) { retryJob(id) }
            }
            if path.count == 3 {
                return only(["GET"]) { result(id, file: path[2], request: request) }
            }
            return .error(404, "not_found", "no such resource: \(request.path)")
        default:
            return .error(404, "not_found", "no such resource: \(request.path)")
        }
    }

    // MARK: Auth

    /// The secret after `Bearer ` (the scheme is case-insensitive, RFC 9110 11.1), if any.
    static func bearerSecret(_ request: HTTPRequest) -> [UInt8]? {
        let header = (request.headers["authorization"] ?? "").trimmingCharacters(in: .whitespaces)
        guard header.count > 7, header.prefix(7).lowercased() == "bearer " else { return nil }
        return Array(header.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8)
    }

    /// The token the request presents, when it is one of ours (every token compared, in constant time).
    func presentedToken(_ request: HTTPRequest) -> APIToken? {
        guard let presented = Self.bearerSecret(request) else { return nil }
        var match: APIToken?
        for token in tokens.current where token.matches(presented) { match = token }
        return match
    }

    private func authenticate(_ request: HTTPRequest) -> HTTPResponse? {
        guard !tokens.current.isEmpty else { return nil }
        guard Self.bearerSecret(request) != nil else {
            return HTTPResponse.error(401, "unauthorized", "a bearer token is required").adding(("WWW-Authenticate", "Bearer"))
        }
        guard presentedToken(request) != nil else {
            return HTTPResponse.error(401, "unauthorized", "the bearer token is not valid").adding(("WWW-Authenticate", "Bearer"))
        }
        return nil
    }

    // MARK: Upload

    private func resolveModel(_ name: String?) -> (reference: ModelReference?, failure: HTTPResponse?) {
        let requested = name ?? configuration.defaultModel
        // Only names of shipped models: a client never points the server at a path.
        guard !requested.contains("/"), !requested.hasPrefix(".") else {
            return (nil, .error(400, "unknown_model", "model must be the name of a model in GET /v1/models"))
        }
        do {
            return (try ModelCatalog.resolve(requested, in: configuration.modelsDirectory), nil)
        } catch {
            return (nil, .error(400, "unknown_model", "\(error)"))
        }
    }

    /// The analysis parameters of an upload's query: `slide_mpp`, `mpp`, `min_tissue`, `overlap`, `embeddings`, `precision`.
    static func parameters(_ query: [String: String]) -> Result<AnalysisParameters, HTTPResponseError> {
        var parameters = AnalysisParameters()
        func number(_ key: String) -> Result<Double?, HTTPResponseError> {
            guard let raw = query[key] else { return .success(nil) }
            guard let value = Double(raw), value.isFinite else {
                return .failure(HTTPResponseError(.error(400, "bad_parameter", "\(key) must be a number, not '\(raw)'")))
            }
            return .success(value)
        }
        do {
            parameters.slideMPP = try number("slide_mpp").get()
            parameters.mpp = try number("mpp").get()
            if let minTissue = try number("min_tissue").get() { parameters.minTissue = minTissue }
            if let raw = query["overlap"] {
                guard let overlap = Int(raw) else {
                    return .failure(HTTPResponseError(.error(400, "bad_parameter", "overlap must be a whole number of pixels, not '\(raw)'")))
                }
                parameters.overlap = overlap
            }
            if let raw = query["embeddings"] {
                guard let flag = ["true": true, "1": true, "false": false, "0": false][raw.lowercased()] else {
                    return .failure(HTTPResponseError(.error(400, "bad_parameter", "embeddings must be true or false, not '\(raw)'")))
                }
                parameters.embeddings = flag
            }
            if let raw = query["precision"] { parameters.precision = raw.lowercased() }
            try parameters.validate { "\($0.stringValue)" }
        } catch let error as HTTPResponseError {
            return .failure(error)
        } catch {
            return .failure(HTTPResponseError(.error(400, "bad_parameter", "\(error)")))
        }
        return .success(parameters)
    }

    private func upload(_ request: HTTPRequest) -> HTTPResponse {
        guard let body = request.bodyFile, request.bodyBytes > 0 else { return .error(422, "not_a_slide", "the body is empty") }
        guard request.contentLength == nil || request.bodyBytes == request.contentLength else {
            return .error(400, "short_body", "received \(request.bodyBytes) of \(request.contentLength ?? 0) bytes")
        }
        let parameters: AnalysisParameters
        switch Self.parameters(request.query) {
        case .success(let value): parameters = value
        case .failure(let error): return error.response
        }
        let name = Self.safeName(request.query["filename"] ?? "slide")
        let fm = FileManager.default
        let ext = (name as NSString).pathExtension.lowercased().filter { $0.isLetter || $0.isNumber }
        // The slide readers pick formats by content and extension: check it under its own extension.
        let candidate = uploads + "/check-\(UUID().uuidString)" + (ext.isEmpty ? "" : ".\(ext)")
        do {
            try fm.moveItem(atPath: body, toPath: candidate)
        } catch {
            return .error(500, "storage", "cannot keep the upload")
        }
        defer { try? fm.removeItem(atPath: candidate) }
        let receipt: SlideIntake.Receipt
        do {
            receipt = try intake.submit(.init(path: candidate, name: name, model: request.query["model"] ?? configuration.defaultModel,
                                              parameters: parameters, idempotencyKey: request.headers["idempotency-key"],
                                              keeping: .moveIntoStore))
        } catch let refusal as SlideIntake.Refusal {
            switch refusal.code {
            case .notFound, .notASlide, .missingMPP, .badParameter, .incompleteSlide, .slideTooLarge: return .error(422, refusal.code.rawValue, refusal.description)
            case .unknownModel: return .error(400, refusal.code.rawValue, refusal.description)
            case .idempotencyConflict: return .error(409, refusal.code.rawValue, refusal.description)
            case .storage: return .error(500, refusal.code.rawValue, refusal.description)
            }
        } catch {
            return .error(503, "queue_unavailable", "\(error)")
        }
        metrics.addUploadBytes(request.bodyBytes)
        let job = receipt.job
        let location = ("Location", "/v1/jobs/\(job.id)")
        if !receipt.created, [.failed, .cancelled].contains(job.state) {
            // Said plainly, with the way to run it again: a re-upload does not silently return an old failure.
            var object = Self.jobObject(job)
            object["message"] = "this slide was analysed before with the same model and parameters and the job \(job.state.rawValue)"
                + "; POST /v1/jobs/\(job.id)/retry runs it again"
            return .json(409, Self.encode(object), headers: [location])
        }
        return .json(receipt.created ? 202 : 200, Self.jobJSON(job), headers: [location])
    }

    /// The basename of a client-given file name, with only safe characters.
    static func safeName(_ raw: String) -> String {
        let base = (raw.replacingOccurrences(of: "\\", with: "/") as NSString).lastPathComponent
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._- ")
        var name = String(base.map { allowed.contains($0) ? $0 : "_" }.prefix(200))
        while name.hasPrefix(".") { name.removeFirst() }
        return name.trimmingCharacters(in: .whitespaces)
    }

    static func freeBytes(_ path: String) -> Int? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        return Int(info.f_bavail) * Int(info.f_frsize)
    }

    // MARK: Jobs

    static func iso(_ seconds: Double?) -> Any {
        guard let seconds else { return NSNull() }
        return Date(timeIntervalSince1970: seconds).formatted(.iso8601)
    }

    static func jobObject(_ job: Job) -> [String: Any] {
        let total = job.tilesTotal
        var object: [String: Any] = [
            "id": job.id.rawValue, "state": job.state.rawValue, "model": job.model,
            "slide": ["name": job.slide.originalName, "sha256": job.slide.sha256, "size": job.slide.size],
            "attempts": job.attempts, "max_attempts": job.maxAttempts,
            "progress": ["tiles_done": job.tilesDone, "tiles_total": total.map { $0 as Any } ?? NSNull(),
                         "fraction": total.map { $0 > 0 ? Double(job.tilesDone) / Double($0) : 1.0 } ?? 0.0],
            "error": job.error.map { stored -> Any in
                let failure = JobFailure(stored: stored)
                return ["code": failure.code.rawValue, "message": failure.message]
            } ?? NSNull(),
            "created_at": iso(job.createdAt), "started_at": iso(job.startedAt), "finished_at": iso(job.finishedAt),
            "links": ["self": "/v1/jobs/\(job.id)", "result": "/v1/jobs/\(job.id)/result", "retry": "/v1/jobs/\(job.id)/retry"],
        ]
        if let started = job.startedAt {
            object["elapsed_seconds"] = (job.finishedAt ?? Date().timeIntervalSince1970) - started
        }
        return object
    }

    static func jobJSON(_ job: Job) -> Data { encode(jobObject(job)) }

    static func encode(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }

    private func listJobs(_ request: HTTPRequest) -> HTTPResponse {
        var state: JobState?
        if let raw = request.query["state"] {
            guard let parsed = JobState(rawValue: raw) else {
                return .error(400, "bad_state", "state must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            state = parsed
        }
        func integer(_ key: String, _ fallback: Int, _ range: ClosedRange<Int>) -> Result<Int, HTTPResponseError> {
            guard let raw = request.query[key] else { return .success(fallback) }
            guard let value = Int(raw), range.contains(value) else {
                return .failure(HTTPResponseError(.error(400, "bad_parameter",
                                                         "\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound)")))
            }
            return .success(value)
        }
        let limit: Int, offset: Int
        switch (integer("limit", 100, 1...1000), integer("offset", 0, 0...Int(Int32.max))) {
        case (.success(let l), .success(let o)): (limit, offset) = (l, o)
        case (.failure(let error), _), (_, .failure(let error)): return error.response
        }
        do {
            let jobs = try store.jobs(state: state, limit: limit, offset: offset)
            let object: [String: Any] = ["jobs": jobs.map(Self.jobObject), "limit": limit, "offset": offset]
            return .json(200, try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
        } catch {
            return .error(503, "queue_unavailable", "\(error)")
        }
    }

    private func showJob(_ id: JobID) -> HTTPResponse {
        do {
            return .json(200, Self.jobJSON(try store.job(id)))
        } catch JobStoreError.notFound {
            return .error(404, "not_found", "no job \(id)")
        } catch {
            return .error(503, "queue_unavailable", "\(error)")
        }
    }

    private func cancelJob(_ id: JobID) -> HTTPResponse {
        do {
            let job = try store.job(id)
            if job.state == .done || job.state == .failed {
                return .error(409, "already_finished", "job \(id) is \(job.state.rawValue) and cannot be cancelled"
                              + (job.state == .failed ? "; POST /v1/jobs/\(id)/retry runs it again" : ""))
            }
            return .json(200, Self.jobJSON(try store.cancel(id)))
        } catch JobStoreError.notFound {
            return .error(404, "not_found", "no job \(id)")
        } catch {
            return .error(503, "queue_unavailable", "\(error)")
        }
    }

    private func retryJob(_ id: JobID) -> HTTPResponse {
        if stopping.isSet { return .error(503, "shutting_down", "the server is shutting down") }
        do {
            let job = try store.job(id)
            guard [.failed, .cancelled].contains(job.state) else {
                return .error(409, "not_retryable", "job \(id) is \(job.state.rawValue); only failed or cancelled jobs can be retried")
            }
            return .json(202, Self.jobJSON(try store.retry(id)), headers: [("Location", "/v1/jobs/\(id)")])
        } catch JobStoreError.notFound {
            return .error(404, "not_found", "no job \(id)")
        } catch {
            return .error(503, "queue_unavailable", "\(error)")
        }
    }

    static let resultFiles: [String: (String, String)] = [
        "result": ("summary.json", "application/json"),
        "tiles.csv": ("tiles.csv", "text/csv"),
        "annotations.geojson": ("annotations.geojson", "application/geo+json"),
        "heatmap.png": ("heatmap.png", "image/png"),
        "overlay.png": ("overlay.png", "image/png"),
        "confidence.png": ("confidence.png", "image/png"),
        "regions.geojson": ("regions.geojson", "application/geo+json"),
        "classmap.tif": ("classmap.tif", "image/tiff"),
        "probability.tif": ("probability.tif", "image/tiff"),
        "segmentation.png": ("segmentation.png", "image/png"),
    ]

    private func result(_ id: JobID, file: String, request: HTTPRequest) -> HTTPResponse {
        guard let (name, type) = Self.resultFiles[file] else { return .error(404, "not_found", "no result file \(file)") }
        do {
            let job = try store.job(id)
            guard job.state == .done, let directory = job.outputDirectory else {
                return .error(409, "not_ready", "job \(id) is \(job.state.rawValue); results exist once it is done")
            }
            let path = directory + "/" + name
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else {
                return .error(404, "not_found", "\(name) is missing")
            }
            // A done job's files never change: cacheable, revalidated by their size and time.
            let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
            let modified = Int(((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0) * 1000)
            let tag = "\"\(id)-\(file)-\(size)-\(modified)\""
            let caching = [("Cache-Control", "private, max-age=3600"), ("ETag", tag)]
            if request.headers["if-none-match"]?.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == tag }) == true {
                return HTTPResponse(status: 304, headers: caching)
            }
            return HTTPResponse(status: 200, headers: [("Content-Type", type)] + caching, body: .file(path))
        } catch JobStoreError.notFound {
            return .error(404, "not_found", "no job \(id)")
        } catch {
            return .error(503, "queue_unavailable", "\(error)")
        }
    }

    private func models() -> HTTPResponse {
        var cards: [Any] = []
        for name in ModelCatalog.names(in: configuration.modelsDirectory) {
            if let reference = try? ModelCatalog.resolve(name, in: configuration.modelsDirectory),
               let data = reference.cardJSON, let card = try? JSONSerialization.jsonObject(with: data) {
                cards.append(["name": name, "default": name == configuration.defaultModel, "card": card])
            }
        }
        let data = (try? JSONSerialization.data(withJSONObject: ["models": cards], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return .json(200, data)
    }
}

/// A finished error response carried through `Result` and `throws`.
struct HTTPResponseError: Error {
    let response: HTTPResponse
    init(_ response: HTTPResponse) { self.response = response }
}

extension HTTPResponse {
    func adding(_ header: (String, String)) -> HTTPResponse {
        var copy = self
        copy.headers.append(header)
        return copy
    }
}
