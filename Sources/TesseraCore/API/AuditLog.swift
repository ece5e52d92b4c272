import Foundation

/// An append-only, hash-chained audit trail in `DATA/audit.jsonl`: one JSON object a line with
/// `seq`, `time`, `client` (token name or null; never the secret), `address`, `action`, `object`,
/// `outcome` (the HTTP status), `prev` (the previous line's hash) and `hash`, the SHA-256 of
/// `prev` followed by the line's other fields as sorted-key JSON. Editing, removing or
/// reordering a line breaks the chain at that line. Appends take an exclusive `flock`, so
/// several server processes sharing a data folder keep one chain.
public final class AuditLog: @unchecked Sendable {
    // @unchecked: all mutable state is guarded by `lock`.
    public static let genesis = String(repeating: "0", count: 64)
    public let path: String
    private let lock = NSLock()
    private let descriptor: Int32
    private var lastHash = AuditLog.genesis
    private var lastSeq = 0
    private var knownSize: off_t = -1

    /// The audit log of a data folder.
    public static func path(inDataDirectory directory: String) -> String { directory + "/audit.jsonl" }

    /// Opens (creating) the log for appending. - Throws: when the file cannot be opened.
    public init(path: String) throws {
        self.path = path
        descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: path])
        }
    }

    deinit { close(descriptor) }

    /// One event to record.
    public struct Event: Sendable {
        public var client: String?
        public var address: String
        public var action: String
        public var object: String
        public var outcome: Int
        public init(client: String?, address: String, action: String, object: String, outcome: Int) {
            self.client = client
            self.address = address
            self.action = action
            self.object = object
            self.outcome = outcome
        }
    }

    /// Appends `event` as the next link of the chain. Failures are returned, not thrown: an
    /// audit write must never turn an answered request into a crash.
    @discardableResult
    public func record(_ event: Event) -> Bool {
        lock.withLock {
            guard flock(descriptor, LOCK_EX) == 0 else { return false }
            defer { flock(descriptor, LOCK_UN) }
            var info = stat()
            guard fstat(descriptor, &info) == 0 else { return false }
            if info.st_size != knownSize {
                // Another process appended (or this is the first write): continue from the file's last line.
                (lastSeq, lastHash) = Self.tail(of: path)
            }
            var fields: [String: Any] = [
                "seq": lastSeq + 1, "time": Date().formatted(.iso8601), "client": event.client ?? NSNull(),
                "address": event.address, "action": event.action, "object": event.object, "outcome": event.outcome,
                "prev": lastHash,
            ]
            guard let hash = Self.hash(fields) else { return false }
            fields["hash"] = hash
            guard let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes])
            else { return false }
            let line = data + Data("\n".utf8)
            let written = line.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            guard written == line.count else { return false }
            lastSeq += 1
            lastHash = hash
            knownSize = info.st_size + off_t(line.count)
            return true
        }
    }

    /// The hash of a line's fields (all but `hash`) chained to its `prev`.
    static func hash(_ fields: [String: Any]) -> String? {
        var body = fields
        body["hash"] = nil
        guard let prev = body["prev"] as? String,
              let data = try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return nil }
        var digest = SHA256()
        digest.update(Data(prev.utf8))
        digest.update(data)
        return digest.finalizeHex()
    }

    /// The sequence number and hash of the last complete line (0 and the genesis hash when none).
    static func tail(of path: String) -> (Int, String) {
        guard let data = FileManager.default.contents(atPath: path) else { return (0, genesis) }
        for line in data.split(separator: UInt8(ascii: "\n")).reversed() {
            if let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any],
               let seq = object["seq"] as? Int, let hash = object["hash"] as? String {
                return (seq, hash)
            }
        }
        return (0, genesis)
    }

    /// The result of checking a log.
    public struct Verification: Sendable, Equatable {
        /// Lines that verified.
        public var lines: Int
        /// The first line that does not (1-based) and why; nil when the whole chain holds.
        public var firstBadLine: Int?
        public var reason: String?
        public init(lines: Int, firstBadLine: Int? = nil, reason: String? = nil) {
            self.lines = lines
            self.firstBadLine = firstBadLine
            self.reason = reason
        }
    }

    /// The log's entries as JSON objects, one a line, in order (lines that are not JSON are skipped).
    public static func entries(path: String) -> [Data] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return data.split(separator: UInt8(ascii: "\n")).map { Data($0) }
            .filter { (try? JSONSerialization.jsonObject(with: $0)) is [String: Any] }
    }

    /// Checks every line's hash and its link to the line before. A missing file is an empty log.
    public static func verify(path: String) -> Verification {
        guard let data = FileManager.default.contents(atPath: path) else { return Verification(lines: 0) }
        var previous = genesis
        var expectedSeq = 1
        var number = 0
        let body = data.last == UInt8(ascii: "\n") ? data.dropLast() : data[...]
        for line in body.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) where !body.isEmpty {
            number += 1
            func bad(_ reason: String) -> Verification { Verification(lines: number - 1, firstBadLine: number, reason: reason) }
            if line.isEmpty { return bad("empty line") }
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
                return bad("not a JSON object")
            }
            guard let hash = object["hash"] as? String, let prev = object["prev"] as? String, let seq = object["seq"] as? Int else {
                return bad("missing seq, prev or hash")
            }
            guard prev == previous else { return bad("prev does not match the hash of the line before") }
            guard seq == expectedSeq else { return bad("seq \(seq) where \(expectedSeq) was expected") }
            guard Self.hash(object) == hash else { return bad("hash does not match the line's content") }
            previous = hash
            expectedSeq += 1
        }
        return Verification(lines: expectedSeq - 1)
    }
}
