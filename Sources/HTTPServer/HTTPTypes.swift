import Foundation

/// An HTTP request as the handlers see it: head, decoded query, and (for uploads) the file the
/// body was streamed into.
public struct HTTPRequest: Sendable {
    /// `GET`, `POST`, ...
    public var method: String
    /// The path without the query string, e.g. `/v1/jobs/3`.
    public var path: String
    /// Decoded query arguments.
    public var query: [String: String]
    /// Headers with lower-cased names.
    public var headers: [String: String]
    /// The client's IP address.
    public var clientAddress: String
    /// The file holding the request body, when the handler chose to store it.
    public var bodyFile: String?
    /// Bytes received in the body.
    public var bodyBytes: Int

    public init(method: String, path: String, query: [String: String] = [:], headers: [String: String] = [:],
                clientAddress: String = "", bodyFile: String? = nil, bodyBytes: Int = 0) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.clientAddress = clientAddress
        self.bodyFile = bodyFile
        self.bodyBytes = bodyBytes
    }

    /// The declared body length, if any.
    public var contentLength: Int? { headers["content-length"].flatMap { Int($0) } }
}

/// An HTTP response.
public struct HTTPResponse: Sendable {
    /// What the body is.
    public enum Body: Sendable {
        case data(Data)
        /// A file sent from disk (zero-copy where the kernel allows).
        case file(String)
    }

    public var status: Int
    public var headers: [(String, String)]
    public var body: Body

    public init(status: Int, headers: [(String, String)] = [], body: Body = .data(Data())) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A response with a text body.
    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", contentType)], body: .data(Data(text.utf8)))
    }

    /// A JSON response from raw JSON bytes.
    public static func json(_ status: Int, _ data: Data, headers: [(String, String)] = []) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", "application/json")] + headers, body: .data(data))
    }

    /// The JSON error shape `{"error": {"code": ..., "message": ...}}`.
    public static func error(_ status: Int, _ code: String, _ message: String) -> HTTPResponse {
        let object = ["error": ["code": code, "message": message]]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return .json(status, data)
    }
}

/// What to do with a request body, decided from the head before any body byte is read.
public enum BodyDecision: Sendable {
    /// Answer now; the body is discarded unread (e.g. 401, 413, 415).
    case reject(HTTPResponse)
    /// Stream the body into a new file in this directory; a body (e.g. chunked, of no declared
    /// length) that grows past `maxBytes` is answered 413 while it streams.
    case store(directory: String, maxBytes: Int = Int.max)
}

/// Serves requests. Called on the server's own threads: keep work short (accept and enqueue).
public protocol HTTPHandler: Sendable {
    /// For requests that carry a body: store it or reject the request before reading it.
    func decideBody(for request: HTTPRequest) -> BodyDecision
    /// Answers a complete request (its body, if stored, is in `request.bodyFile`).
    func respond(to request: HTTPRequest) -> HTTPResponse
}
