import CLibPQ
import Foundation

/// A PostgreSQL failure with the server's (or libpq's) message and SQLSTATE.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// The five-character SQLSTATE, empty when libpq failed before the server answered.
    public let sqlState: String
    /// The message, with the start of the statement that failed.
    public let message: String
    public var description: String {
        sqlState.isEmpty ? "PostgreSQL error: \(message)" : "PostgreSQL error \(sqlState): \(message)"
    }

    /// A serialization failure or deadlock: the transaction may simply be run again.
    var isRetryable: Bool { sqlState == "40001" || sqlState == "40P01" }
}

/// Facts about the linked libpq.
public enum PostgresLibrary {
    /// libpq's version number, e.g. 150012 (`PQlibVersion`).
    public static var version: Int { Int(PQlibVersion()) }
}

/// One libpq connection, the only code that touches libpq. Parameters are sent typed and in
/// binary, results are read in binary, so no value is ever spliced into SQL text. Not
/// thread-safe by itself: `PostgresJobStore` serialises every use under its lock.
final class PostgresConnection {
    private let handle: OpaquePointer
    /// Rows changed by the last statement (`PQcmdTuples`).
    private(set) var changes = 0

    /// Connects with a libpq connection string or URL (`postgres://user@host:port/db`).
    init(url: String) throws(PostgresError) {
        guard let connection = PQconnectdb(url) else { throw PostgresError(sqlState: "", message: "out of memory") }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.trimmed(PQerrorMessage(connection))
            PQfinish(connection)
            throw PostgresError(sqlState: "", message: "\(Self.redacted(url)): \(message)")
        }
        handle = connection
        // Notices (e.g. "already exists, skipping") would go to standard error.
        try execute("SET client_min_messages = warning")
    }

    deinit { PQfinish(handle) }

    /// The URL without a password, for messages.
    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? url
    }

    private static func trimmed(_ text: UnsafePointer<CChar>?) -> String {
        // libpq's messages can span lines (a hint on the next); errors here are one line.
        text.map { String(cString: $0) }?.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.joined(separator: " ") ?? "unknown error"
    }

    /// Re-establishes a broken connection (server restart, network); the failed statement is not retried.
    private func resetIfBroken() {
        if PQstatus(handle) != CONNECTION_OK { PQreset(handle) }
    }

    /// Runs one or more statements without parameters or results (`PQexec`).
    func execute(_ sql: String) throws(PostgresError) {
        resetIfBroken()
        guard let result = PQexec(handle, sql) else {
            throw PostgresError(sqlState: "", message: "\(Self.trimmed(PQerrorMessage(handle))) [\(sql.prefix(80))]")
        }
        defer { PQclear(result) }
        try check(result, sql)
    }

    private func check(_ result: OpaquePointer, _ sql: String) throws(PostgresError) {
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? ""
            throw PostgresError(sqlState: state, message: "\(Self.trimmed(PQresultErrorMessage(result))) [\(sql.prefix(80))]")
        }
    }

    /// Runs one statement with `$1, $2, ...` bound to `arguments` in order, and returns every row.
    @discardableResult
    func query(_ sql: String, _ arguments: [SQLValue] = []) throws(PostgresError) -> [SQLRow] {
        resetIfBroken()
        // Each parameter: its type, binary bytes (nil for NULL) and length.
        var types: [Oid] = []
        var buffers: [UnsafeMutablePointer<CChar>?] = []
        var lengths: [Int32] = []
        defer { for buffer in buffers { buffer?.deallocate() } }
        for value in arguments {
            let bytes: [UInt8]?
            switch value {
            case .null: types.append(0); bytes = nil
            case .integer(let v): types.append(Self.int8); bytes = withUnsafeBytes(of: v.bigEndian) { Array($0) }
            case .real(let v): types.append(Self.float8); bytes = withUnsafeBytes(of: v.bitPattern.bigEndian) { Array($0) }
            case .text(let v): types.append(Self.text); bytes = Array(v.utf8)
            case .blob(let v): types.append(Self.bytea); bytes = Array(v)
            }
            if let bytes {
                let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
                bytes.withUnsafeBytes { UnsafeMutableRawPointer(buffer).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(buffer), byteCount: $0.count) }
                buffers.append(buffer)
                lengths.append(Int32(bytes.count))
            } else {
                buffers.append(nil)
                lengths.append(0)
            }
        }
        let values: [UnsafePointer<CChar>?] = buffers.map { $0.map { UnsafePointer($0) } }
        let formats = [Int32](repeating: 1, count: arguments.count)
        let result = PQexecParams(handle, sql, Int32(arguments.count), types, values, lengths, formats, 1)
        guard let result else {
            throw PostgresError(sqlState: "", message: "\(Self.trimmed(PQerrorMessage(handle))) [\(sql.prefix(80))]")
        }
        defer { PQclear(result) }
        try check(result, sql)
        changes = Int(String(cString: PQcmdTuples(result))) ?? 0
        var rows: [SQLRow] = []
        let columns = PQnfields(result)
        let names = (0..<columns).map { String(cString: PQfname(result, $0)) }
        let columnTypes = (0..<columns).map { PQftype(result, $0) }
        for rowIndex in 0..<PQntuples(result) {
            var row = SQLRow()
            for column in 0..<columns {
                if PQgetisnull(result, rowIndex, column) == 1 {
                    row.values[names[Int(column)]] = .null
                    continue
                }
                let count = Int(PQgetlength(result, rowIndex, column))
                let bytes = UnsafeRawBufferPointer(start: PQgetvalue(result, rowIndex, column), count: count)
                row.values[names[Int(column)]] = Self.decode(bytes, type: columnTypes[Int(column)])
            }
            rows.append(row)
        }
        return rows
    }

    // Type OIDs (pg_type.h).
    private static let bool: Oid = 16, bytea: Oid = 17, int8: Oid = 20, int2: Oid = 21, int4: Oid = 23, text: Oid = 25
    private static let oid: Oid = 26, float4: Oid = 700, float8: Oid = 701

    /// A binary-format value as SQLite would hold it: integers (and booleans) as integers, floats
    /// as reals, `bytea` as a blob, anything else as text.
    private static func decode(_ bytes: UnsafeRawBufferPointer, type: Oid) -> SQLValue {
        func integer<T: FixedWidthInteger>(_: T.Type) -> T {
            var value: T = 0
            withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: bytes.prefix(MemoryLayout<T>.size)) }
            return T(bigEndian: value)
        }
        switch type {
        case bool: return .integer(bytes.first == 1 ? 1 : 0)
        case int2: return .integer(Int64(integer(Int16.self)))
        case int4: return .integer(Int64(integer(Int32.self)))
        case oid: return .integer(Int64(integer(UInt32.self)))
        case int8: return .integer(integer(Int64.self))
        case float4: return .real(Double(Float(bitPattern: integer(UInt32.self))))
        case float8: return .real(Double(bitPattern: integer(UInt64.self)))
        case bytea: return .blob(Data(bytes))
        default: return .text(String(decoding: bytes, as: UTF8.self))
        }
    }

    /// Runs `body` inside `BEGIN` ... `COMMIT` (read committed), rolling back on any error.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try transaction(begin: "BEGIN", body)
    }
}
