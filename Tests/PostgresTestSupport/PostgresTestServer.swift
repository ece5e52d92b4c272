import Foundation

/// The PostgreSQL server the queue tests (JobStoreTests, TesseraCoreTests) run against: started once per test process by
/// scripts/pg-test-server.sh (initdb into a temporary folder, trust auth, unix socket and a free
/// port on 127.0.0.1; as the `postgres` user when run as root) and stopped at exit or by that script's
/// watchdog when the test process ends. Each test gets a fresh database.
public enum PostgresTestServer {
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let scriptPath = root.appendingPathComponent("scripts/pg-test-server.sh").path
    /// One server folder per test process (shared by every test target in it).
    public static let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-pg-test-\(getpid())").path

    /// Whether the PostgreSQL server binaries (initdb, pg_ctl) are installed.
    public static let available: Bool = {
        if let bin = ProcessInfo.processInfo.environment["PG_BIN"] {
            return FileManager.default.isExecutableFile(atPath: bin + "/initdb")
        }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        return versions.contains { FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\($0)/bin/initdb") }
    }()

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Runs the script with `system` (not `Process`, whose exit monitoring can starve when every
    /// test thread is busy) and returns its standard output.
    private static func script(_ arguments: [String]) throws -> String {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-pg-\(UUID().uuidString)").path
        defer {
            try? FileManager.default.removeItem(atPath: output + ".out")
            try? FileManager.default.removeItem(atPath: output + ".err")
        }
        func quoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let command = ([scriptPath] + arguments).map(quoted).joined(separator: " ")
        let status = system("/bin/bash \(command) >\(quoted(output + ".out")) 2>\(quoted(output + ".err")) </dev/null")
        let text = (try? String(contentsOfFile: output + ".out", encoding: .utf8)) ?? ""
        guard status == 0 else {
            let message = (try? String(contentsOfFile: output + ".err", encoding: .utf8)) ?? ""
            throw Failure(description: "pg-test-server.sh \(arguments.first ?? "") failed (\(status)): \(message)")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The server URL, starting the server on first use; it is stopped when the process exits
    /// (and by the script's watchdog should the process die).
    public static let server: Result<String, any Error> = Result {
        let url = try script(["start", directory, "\(getpid())"])
        atexit { _ = try? PostgresTestServer.script(["stop", PostgresTestServer.directory]) }
        return url
    }

    /// A fresh, empty database on the test server: its URL.
    public static func createDatabase() throws -> String {
        _ = try server.get()
        return try script(["createdb", directory])
    }
}
