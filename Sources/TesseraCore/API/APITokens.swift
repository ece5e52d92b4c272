import Foundation
import Synchronization

/// Where the API's bearer tokens come from: `TESSERA_API_TOKENS` (comma-separated) and the
/// file `TESSERA_API_TOKENS_FILE` names (one token a line; blank lines and lines starting with
/// `#` are skipped). `serve` reads them at start and again on SIGHUP.
public struct APITokenSource: Sendable {
    /// The comma-separated list (`TESSERA_API_TOKENS`).
    public var list: String
    /// The token file (`TESSERA_API_TOKENS_FILE`), if any.
    public var file: String?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        list = environment["TESSERA_API_TOKENS"] ?? ""
        file = environment["TESSERA_API_TOKENS_FILE"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The tokens, blanks removed. A token file that is named but cannot be read is an error:
    /// starting without its tokens would leave the API open.
    public func load() throws(APITokenError) -> [String] {
        var tokens = list.split(separator: ",").map(String.init)
        if let file {
            guard let text = FileManager.default.contents(atPath: file).flatMap({ String(data: $0, encoding: .utf8) }) else {
                // The system's reason (no such file, permission denied, ...) from a plain open.
                let fd = open(file, O_RDONLY)
                let reason = fd < 0 ? String(cString: strerror(errno)) : "not UTF-8 text"
                if fd >= 0 { close(fd) }
                throw APITokenError(description: "TESSERA_API_TOKENS_FILE \(file) cannot be read (\(reason))")
            }
            tokens += text.split(whereSeparator: \.isNewline).map(String.init)
        }
        return tokens.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }
}

/// A token file that cannot be read, or a reload that would drop every token.
public struct APITokenError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// The tokens the API accepts now (`secret` or `name:secret` lines, see `APIToken`); replaced as
/// a whole on reload.
public final class APITokenSet: Sendable {
    private let tokens: Mutex<[APIToken]>

    public init(_ lines: [String]) { self.tokens = Mutex(lines.map(APIToken.init)) }

    /// The accepted tokens; empty means no authentication.
    public var current: [APIToken] { tokens.withLock { $0 } }

    /// Reads `source` again and accepts exactly its tokens from now on; returns how many.
    /// On failure (unreadable file, or no token left while authentication is on: that would
    /// open the API) the tokens in force stay.
    @discardableResult
    public func reload(from source: APITokenSource) throws(APITokenError) -> Int {
        let fresh = try source.load().map(APIToken.init)
        return try tokens.withLock { (tokens: inout [APIToken]) throws(APITokenError) -> Int in
            if fresh.isEmpty && !tokens.isEmpty {
                throw APITokenError(description: "no tokens in \(source.file ?? "TESSERA_API_TOKENS"); keeping the \(tokens.count) in force")
            }
            tokens = fresh
            return fresh.count
        }
    }
}
