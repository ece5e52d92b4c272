import ArgumentParser
import Foundation
import TesseraCore

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Check or export the API's hash-chained audit log (DATA/audit.jsonl).",
        subcommands: [Verify.self, Export.self])

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the chain: exit 0 when every line holds, else 1 and the first bad line.")

        @Option(help: "Data folder holding audit.jsonl.")
        var data = DataDirectory.defaultPath

        func run() throws {
            let path = AuditLog.path(inDataDirectory: data)
            let result = AuditLog.verify(path: path)
            if let line = result.firstBadLine {
                printError("\(path): line \(line): \(result.reason ?? "bad entry") (\(result.lines) lines before it verify)")
                throw ExitCode.failure
            }
            print("\(path): \(result.lines) entries, chain verified")
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the audit entries as JSON lines (standard output, or --out FILE).")

        @Option(help: "Data folder holding audit.jsonl.")
        var data = DataDirectory.defaultPath

        @Option(help: "File to write instead of standard output.")
        var out: String?

        func run() throws {
            var text = Data()
            for entry in AuditLog.entries(path: AuditLog.path(inDataDirectory: data)) { text += entry + Data("\n".utf8) }
            if let out {
                do {
                    try text.write(to: URL(fileURLWithPath: out), options: .atomic)
                } catch {
                    printError("\(out): cannot write (\(error.localizedDescription))")
                    throw ExitCode.failure
                }
            } else {
                FileHandle.standardOutput.write(text)
            }
        }
    }
}
