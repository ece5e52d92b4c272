import CSQLite
import Foundation

/// A SQLite failure with the library's message.
public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    /// The SQLite result code.
    public let code: Int32
    /// The message from `sqlite3_errmsg`, with the statement that failed.
    public let message: String
    public var description: String { "SQLite error \(code): \(message)" }
}

/// Facts about the linked SQLite library.
public enum SQLiteLibrary {
    /// The SQLite version string (`sqlite3_libversion`).
    public static var version: String { String(cString: sqlite3_libversion()) }
    /// The SQLite version number, e.g. 3040001 (`sqlite3_libversion_number`).
    public static var versionNumber: Int { Int(sqlite3_libversion_number()) }
}

/// `SQLITE_TRANSIENT`, a function-like macro Swift cannot import: SQLite copies bound values.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection. Not thread-safe by itself: `JobStore` serialises every use under its lock.
final class SQLiteConnection {
    private let handle: OpaquePointer

    /// Opens (creating if needed) a database file with a busy timeout.
    init(path: String, busyTimeoutMilliseconds: Int32 = 10_000) throws(SQLiteError) {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let status = sqlite3_open_v2(path, &db, flags, nil)
        guard status == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: status, message: "\(path): \(message)")
        }
        handle = db
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
        sqlite3_extended_result_codes(db, 1)
    }

    deinit { sqlite3_close_v2(handle) }

    private func error(_ code: Int32, _ sql: String) -> SQLiteError {
        SQLiteError(code: code, message: "\(String(cString: sqlite3_errmsg(handle))) [\(sql.prefix(80))]")
    }

    /// Runs one or more statements without results (`sqlite3_exec`).
    func execute(_ sql: String) throws(SQLiteError) {
        let status = sqlite3_exec(handle, sql, nil, nil, nil)
        guard status == SQLITE_OK else { throw error(status, sql) }
    }

    /// Runs a statement, binding `arguments` in order, and returns every row.
    @discardableResult
    func query(_ sql: String, _ arguments: [SQLValue] = []) throws(SQLiteError) -> [SQLRow] {
        var statement: OpaquePointer?
        let prepared = sqlite3_prepare_v2(handle, sql, -1, &statement, nil)
        guard prepared == SQLITE_OK, let statement else { throw error(prepared, sql) }
        defer { sqlite3_finalize(statement) }
        for (offset, value) in arguments.enumerated() {
            let index = Int32(offset + 1)
            let status: Int32
            switch value {
            case .null: status = sqlite3_bind_null(statement, index)
            case .integer(let v): status = sqlite3_bind_int64(statement, index, v)
            case .real(let v): status = sqlite3_bind_double(statement, index, v)
            case .text(let v): status = sqlite3_bind_text(statement, index, v, -1, transient)
            case .blob(let v):
                status = v.withUnsafeBytes { sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), transient) }
            }
            guard status == SQLITE_OK else { throw error(status, sql) }
        }
        var rows: [SQLRow] = []
        while true {
            let status = sqlite3_step(statement)
            if status == SQLITE_DONE { break }
            guard status == SQLITE_ROW else { throw error(status, sql) }
            var row = SQLRow()
            for column in 0..<sqlite3_column_count(statement) {
                let name = String(cString: sqlite3_column_name(statement, column))
                let value: SQLValue
                switch sqlite3_column_type(statement, column) {
                case SQLITE_INTEGER: value = .integer(sqlite3_column_int64(statement, column))
                case SQLITE_FLOAT: value = .real(sqlite3_column_double(statement, column))
                case SQLITE_TEXT: value = .text(String(cString: sqlite3_column_text(statement, column)))
                case SQLITE_BLOB:
                    let count = Int(sqlite3_column_bytes(statement, column))
                    if count > 0, let bytes = sqlite3_column_blob(statement, column) {
                        value = .blob(Data(bytes: bytes, count: count))
                    } else {
                        value = .blob(Data())
                    }
                default: value = .null
                }
                row.values[name] = value
            }
            rows.append(row)
        }
        return rows
    }

    /// Rows changed by the last statement (`sqlite3_changes`).
    var changes: Int { Int(sqlite3_changes(handle)) }

    /// Runs `body` inside `BEGIN IMMEDIATE` ... `COMMIT`, rolling back on any error.
    func immediateTransaction<T>(_ body: () throws -> T) throws -> T {
        try transaction(begin: "BEGIN IMMEDIATE", body)
    }
}

/// A value bound to or read from SQLite.
enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)

    init(_ value: Int?) { self = value.map { .integer(Int64($0)) } ?? .null }
    init(_ value: Double?) { self = value.map { .real($0) } ?? .null }
    init(_ value: String?) { self = value.map { .text($0) } ?? .null }
}

/// One result row, by column name.
struct SQLRow {
    var values: [String: SQLValue] = [:]

    func int(_ name: String) -> Int? {
        switch values[name] {
        case .integer(let v): return Int(v)
        case .real(let v): return Int(v)
        default: return nil
        }
    }

    func double(_ name: String) -> Double? {
        switch values[name] {
        case .integer(let v): return Double(v)
        case .real(let v): return v
        default: return nil
        }
    }

    func string(_ name: String) -> String? {
        if case .text(let v) = values[name] { return v }
        return nil
    }

    func data(_ name: String) -> Data? {
        if case .blob(let v) = values[name] { return v }
        return nil
    }
}
