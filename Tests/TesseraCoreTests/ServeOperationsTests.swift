import Foundation
import Testing
@testable import TesseraCore

/// What an administrator does to a running `tessera serve`: rotate the token file and send
/// SIGHUP; start it on a data folder it cannot use.
extension ServeProcessTests {
    @Test func sighupReloadsTheTokenFile() throws {
        let folder = Support.temporaryDirectory()
        let tokenFile = folder + "/api-tokens"
        try "old-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let (server, client) = try start(data: folder + "/data", models: try Support.tinyModels(),
                                         environment: ["TESSERA_API_TOKENS_FILE": tokenFile, "TESSERA_API_TOKENS": ""])
        defer {
            kill(server.processIdentifier, SIGTERM)
            Support.finish(server, within: 60)
        }
        func status(_ token: String) throws -> Int {
            var authorised = client
            authorised.token = token
            return try authorised.call("GET", "/v1/jobs").status
        }
        #expect(try status("old-token") == 200)
        #expect(try status("new-token") == 401)

        // The file is replaced (as an editor or a secrets agent does), then SIGHUP.
        try "# rotated\nnew-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        kill(server.processIdentifier, SIGHUP)
        let deadline = Date().addingTimeInterval(10)
        while try status("new-token") != 200 && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(try status("new-token") == 200)
        #expect(try status("old-token") == 401)
        #expect(try status("# rotated") == 401, "a # line is a comment, not a token")
        #expect(server.isRunning)
        #expect(try client.call("GET", "/healthz").status == 200)

        // A reload that would leave no token keeps the ones in force (it would open the API).
        try "".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        kill(server.processIdentifier, SIGHUP)
        Thread.sleep(forTimeInterval: 0.5)
        #expect(server.isRunning)
        #expect(try status("new-token") == 200)
        #expect(try client.call("GET", "/v1/jobs").status == 401)
    }

    /// Runs `tessera serve` expecting it to refuse to start; returns its exit code and standard error.
    func refusedStart(data: String, environment: [String: String] = [:]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Support.binary!)
        process.arguments = ["serve", "--data", data, "--port", "0", "--workers", "0"]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        Support.finish(process, within: 30)
        return (process.terminationStatus, String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    @Test func serveRefusesADataFolderItCannotWrite() throws {
        let folder = Support.unwritableFolder()
        let (status, errors) = try refusedStart(data: folder)
        #expect(status == 1)
        let lines = errors.split(separator: "\n")
        #expect(lines.count == 1, "one line: \(errors)")
        #expect(errors.hasPrefix("tessera: error: data folder \(folder) is not writable"), "\(errors)")
    }

    @Test func serveRefusesAMissingTokenFile() throws {
        let folder = Support.temporaryDirectory()
        let (status, errors) = try refusedStart(data: folder + "/data", environment: ["TESSERA_API_TOKENS_FILE": folder + "/absent"])
        #expect(status == 1)
        #expect(errors.hasPrefix("tessera: error: TESSERA_API_TOKENS_FILE \(folder)/absent cannot be read"), "\(errors)")
        #expect(errors.split(separator: "\n").count == 1)
    }
}

extension Support {
    /// An existing folder this process cannot create files in: a read-only one, or (for root,
    /// whom permissions do not stop) /sys, where the kernel refuses new files to everyone.
    static func unwritableFolder() -> String {
        let path = temporaryDirectory() + "/read-only"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        chmod(path, 0o555)
        return DataDirectory.writeProblem(path) == nil ? "/sys" : path
    }
}
