import CMicroHTTPD
import CMicroHTTPDShims
import Foundation

/// Limits and threads of the server, all set explicitly on the daemon.
public struct HTTPServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port (see `HTTPServer.port`).
    public var port: UInt16 = 8080
    /// Threads of the pool, each polling its own epoll set.
    public var threads = 4
    /// Open connections at once (each costs a descriptor and at most `memoryLimitBytes`).
    public var connectionLimit = 4096
    /// Open connections per client address; a trusted proxy's count per forwarded client.
    public var perIPConnectionLimit = 64
    /// Inactivity timeout of a connection (a response the client does not read, ...).
    public var timeoutSeconds = 30
    /// Memory of a connection: request head, buffers (libmicrohttpd's pool).
    public var memoryLimitBytes = 64 * 1024
    /// A request head (first byte to the blank line, or after a keep-alive response) must arrive
    /// within this; slowloris clients and idle sockets are closed after it.
    public var headTimeoutSeconds = 10.0
    /// An upload must bring at least this many bytes in every `bodyRateWindowSeconds` window,
    /// or the connection is closed (its temporary file deleted).
    public var minimumBodyBytesPerSecond = 16 * 1024
    public var bodyRateWindowSeconds = 10.0
    /// Peers whose `X-Forwarded-For` names the client (its last address): their own
    /// connections are not limited per address, the clients they forward are.
    public var trustedProxies: [String] = []
    public init() {}
}

/// Errors starting the server.
public struct HTTPServerError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// A thin wrapper over a libmicrohttpd daemon: a thread pool, request heads to Swift values,
/// bodies streamed chunk by chunk to a file (never buffered, never the form processor),
/// responses from memory or from a file, and per-connection state freed on completion
/// (temporary body files of failed or aborted requests are deleted there).
public final class HTTPServer: @unchecked Sendable {
    // @unchecked: `daemon` is set in init and cleared in stop() under `lock`; callbacks only read `handler`.
    private var daemon: OpaquePointer?  // tessera_mhd_server *
    private let lock = NSLock()
    private let context: Unmanaged<ServerContext>
    /// The port the server listens on.
    public let port: UInt16

    /// Starts listening. - Throws: `HTTPServerError` when the address cannot be bound.
    public init(configuration: HTTPServerConfiguration, handler: any HTTPHandler) throws {
        let context = Unmanaged.passRetained(ServerContext(handler: handler))
        let window = max(0, configuration.bodyRateWindowSeconds)
        var options = tessera_mhd_options(
            host: nil, port: configuration.port, threads: UInt32(max(1, configuration.threads)),
            connection_limit: UInt32(configuration.connectionLimit), per_ip_limit: UInt32(configuration.perIPConnectionLimit),
            timeout_seconds: UInt32(configuration.timeoutSeconds), memory_limit: configuration.memoryLimitBytes,
            head_timeout_ms: UInt32(max(0, configuration.headTimeoutSeconds) * 1000),
            body_min_bytes: UInt32(min(Double(UInt32.max), Double(configuration.minimumBodyBytesPerSecond) * window)),
            body_window_ms: UInt32(window * 1000), trusted_proxies: nil)
        let started = configuration.host.withCString { host in
            configuration.trustedProxies.joined(separator: ",").withCString { proxies in
                options.host = host
                options.trusted_proxies = proxies
                return tessera_mhd_start(&options, accessHandler, context.toOpaque(), completedHandler, context.toOpaque())
            }
        }
        guard let started else {
            context.release()
            throw HTTPServerError(description: "cannot listen on \(configuration.host):\(configuration.port)")
        }
        daemon = started
        self.context = context
        port = tessera_mhd_bound_port(started)
    }

    /// Stops accepting connections and waits for the server threads (`MHD_stop_daemon`).
    public func stop() {
        let running: OpaquePointer? = lock.withLock {
            defer { daemon = nil }
            return daemon
        }
        guard let running else { return }
        context.takeUnretainedValue().offloaded.wait()
        tessera_mhd_stop(running)
        context.release()
    }

    deinit { stop() }
}

/// What the C callbacks reach through their `cls` pointer.
final class ServerContext: @unchecked Sendable {
    let handler: any HTTPHandler
    /// Answers being computed for suspended connections; the daemon stops after them.
    let offloaded = DispatchGroup()
    init(handler: any HTTPHandler) { self.handler = handler }
}

/// Per-connection state between the access handler's calls, owned through `*con_cls`.
final class ConnectionState {
    var request: HTTPRequest
    var rejection: HTTPResponse?
    var descriptor: Int32 = -1
    var bodyPath: String?
    var failure: HTTPResponse?
    var answered = false
    /// The answer computed while the connection was suspended, queued when it resumes.
    var ready: HTTPResponse?
    /// Largest body accepted; beyond it the upload is answered 413 while streaming.
    var maxBodyBytes = Int.max
    /// Bytes read and dropped after the body went over `maxBodyBytes`.
    var discarded = 0
    static let discardAllowance = 16 * 1024 * 1024

    init(request: HTTPRequest) { self.request = request }

    /// Closes the body file if open.
    func closeBody() {
        if descriptor >= 0 {
            close(descriptor)
            descriptor = -1
        }
    }
}

private func collect(_ connection: OpaquePointer?, kind: MHD_ValueKind, lowercase: Bool) -> [String: String] {
    final class Box { var values: [String: String] = [:]; let lowercase: Bool; init(_ l: Bool) { lowercase = l } }
    let box = Box(lowercase)
    let pointer = Unmanaged.passUnretained(box).toOpaque()
    _ = MHD_get_connection_values(connection, kind, { cls, _, key, value in
        guard let cls, let key else { return .YES }
        let box = Unmanaged<Box>.fromOpaque(cls).takeUnretainedValue()
        let name = String(cString: key)
        box.values[box.lowercase ? name.lowercased() : name] = value.map { String(cString: $0) } ?? ""
        return .YES
    }, pointer)
    return box.values
}

private func queue(_ response: HTTPResponse, on connection: OpaquePointer?) -> MHD_Result {
    var created: OpaquePointer?
    switch response.body {
    case .data(let data):
        created = data.withUnsafeBytes { raw in
            MHD_create_response_from_buffer(raw.count, UnsafeMutableRawPointer(mutating: raw.baseAddress), .RESPMEM_MUST_COPY)
        }
    case .file(let path):
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            var info = stat()
            fstat(fd, &info)
            created = MHD_create_response_from_fd(Int(info.st_size), fd)
            if created == nil { close(fd) }
        }
    }
    guard let created else { return .NO }
    tessera_mhd_responding(connection)
    for (name, value) in response.headers { _ = MHD_add_response_header(created, name, value) }
    let result = MHD_queue_response(connection, UInt32(response.status), created)
    MHD_destroy_response(created)
    return result
}

private let accessHandler: MHD_AccessHandlerCallback = { cls, connection, url, method, _, uploadData, uploadDataSize, conCls in
    guard let cls, let conCls, let uploadDataSize else { return .NO }
    let context = Unmanaged<ServerContext>.fromOpaque(cls).takeUnretainedValue()
    // First call for this request: only the head is known.
    guard let existing = conCls.pointee else {
        let headers = collect(connection, kind: .HEADER_KIND, lowercase: true)
        var address = [CChar](repeating: 0, count: 64)
        let admitted = tessera_mhd_head_received(connection, headers["x-forwarded-for"], &address, address.count) != 0
        let request = HTTPRequest(
            method: method.map { String(cString: $0) } ?? "GET", path: url.map { String(cString: $0) } ?? "/",
            query: collect(connection, kind: .GET_ARGUMENT_KIND, lowercase: false),
            headers: headers, clientAddress: String(cString: address))
        let state = ConnectionState(request: request)
        let hasBody = (request.contentLength ?? 0) > 0 || request.headers["transfer-encoding"] != nil
            || ["POST", "PUT", "PATCH"].contains(request.method)
        if !admitted {
            state.rejection = HTTPResponse.error(429, "too_many_connections", "this client has too many open connections")
            state.rejection?.headers.append(("Connection", "close"))
        } else if hasBody {
            switch context.handler.decideBody(for: request) {
            case .reject(let response):
                state.rejection = response
            case .store(let directory, let maxBytes):
                state.maxBodyBytes = maxBytes
                let path = directory + "/upload-\(UUID().uuidString).part"
                let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                if fd < 0 {
                    state.rejection = .error(errno == ENOSPC ? 507 : 500, "storage", "cannot create the upload file")
                } else {
                    state.descriptor = fd
                    state.bodyPath = path
                }
            }
        }
        conCls.pointee = Unmanaged.passRetained(state).toOpaque()
        if let rejection = state.rejection {
            // Answering before the body is read discards the upload.
            state.answered = true
            return queue(rejection, on: connection)
        }
        return .YES
    }
    let state = Unmanaged<ConnectionState>.fromOpaque(existing).takeUnretainedValue()
    if uploadDataSize.pointee > 0 {
        let count = uploadDataSize.pointee
        tessera_mhd_body_received(connection, count)
        if state.rejection == nil, state.failure == nil, state.request.bodyBytes + count > state.maxBodyBytes {
            // Nothing more is stored. libmicrohttpd 0.9 can only answer once the body has been read,
            // so a little more is read and dropped to answer 413; a body far over the limit is cut off.
            state.failure = .error(413, "too_large", "the body is over the limit of \(state.maxBodyBytes) bytes")
            state.closeBody()
            if let path = state.bodyPath { unlink(path) }
            state.bodyPath = nil
        }
        if state.failure?.status == 413 {
            state.discarded += count
            uploadDataSize.pointee = 0
            return state.discarded > ConnectionState.discardAllowance ? .NO : .YES
        }
        if state.rejection == nil, state.failure == nil, state.descriptor >= 0, let uploadData {
            var written = 0
            while written < count {
                let n = write(state.descriptor, uploadData + written, count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    state.failure = errno == ENOSPC || errno == EDQUOT
                        ? .error(507, "insufficient_storage", "the server's disk is full")
                        : .error(500, "storage", "cannot write the upload")
                    break
                }
                written += n
            }
            state.request.bodyBytes += written
        }
        uploadDataSize.pointee = 0
        return .YES
    }
    // Final call: the whole body has arrived (or, after a resume, its answer is ready).
    if let ready = state.ready {
        state.ready = nil
        return queue(ready, on: connection)
    }
    if state.answered { return .YES }
    state.answered = true
    if let failure = state.failure {
        state.closeBody()
        return queue(failure, on: connection)
    }
    if state.descriptor >= 0 {
        let synced = fsync(state.descriptor) == 0
        state.closeBody()
        guard synced else { return queue(.error(507, "insufficient_storage", "cannot flush the upload to disk"), on: connection) }
        state.request.bodyFile = state.bodyPath
        // Checking a stored body (hashing, opening a slide) can take seconds: it runs off the
        // server's threads, the connection suspended, so other requests on this thread go on.
        let job = SuspendedRequest(connection: connection, state: state, handler: context.handler)
        context.offloaded.enter()
        tessera_mhd_responding(connection)
        MHD_suspend_connection(connection)
        DispatchQueue.global().async {
            job.state.ready = job.handler.respond(to: job.state.request)
            MHD_resume_connection(job.connection)
            context.offloaded.leave()
        }
        return .YES
    }
    return queue(context.handler.respond(to: state.request), on: connection)
}

/// What a body's answer needs off the server thread. @unchecked: the state is only touched by
/// that job while the connection is suspended, and by the server thread after it is resumed.
private struct SuspendedRequest: @unchecked Sendable {
    let connection: OpaquePointer?
    let state: ConnectionState
    let handler: any HTTPHandler
}

private let completedHandler: MHD_RequestCompletedCallback = { _, _, conCls, _ in
    guard let conCls, let pointer = conCls.pointee else { return }
    let state = Unmanaged<ConnectionState>.fromOpaque(pointer).takeRetainedValue()
    state.closeBody()
    // The handler moves a body it keeps; anything left (aborted, rejected, failed) is removed.
    if let path = state.bodyPath { unlink(path) }
    conCls.pointee = nil
}
