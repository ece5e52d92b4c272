import Foundation

/// A data folder that cannot be used, with the one-line reason.
public struct DataFolderError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

extension DataDirectory {
    /// Why `path` cannot be a data folder (not a folder; not writable; missing and its nearest
    /// existing parent not writable), or nil when it can. Creates nothing but a probe file it
    /// removes again.
    public static func writeProblem(_ path: String) -> String? {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        let exists = fm.fileExists(atPath: path, isDirectory: &isDirectory)
        if exists && !isDirectory.boolValue { return "data folder \(path) is not a folder" }
        // A folder still to be made is checked where it would be created.
        var folder = path
        while !fm.fileExists(atPath: folder, isDirectory: &isDirectory) {
            let parent = (folder as NSString).deletingLastPathComponent
            folder = parent.isEmpty ? "." : parent
        }
        let user = ProcessInfo.processInfo.environment["USER"].map { " by \($0)" } ?? ""
        guard isDirectory.boolValue else {
            return "data folder \(path) cannot be created: \(folder) is not a folder"
        }
        guard let failure = writeProbe(in: folder) else { return nil }
        return exists ? "data folder \(path) is not writable\(user) (\(failure))"
            : "data folder \(path) cannot be created: \(folder) is not writable\(user) (\(failure))"
    }

    /// Creates `path` when missing and checks that files can be written in it.
    public static func ensureWritable(_ path: String) throws(DataFolderError) {
        if let problem = writeProblem(path) { throw DataFolderError(description: problem) }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw DataFolderError(description: "data folder \(path) cannot be created (\(error.localizedDescription))")
        }
        if let problem = writeProblem(path) { throw DataFolderError(description: problem) }
    }

    /// Creates and removes a file in `folder`: nil when that works, else the system's reason.
    static func writeProbe(in folder: String) -> String? {
        let probe = folder + "/.tessera-write-check-\(getpid())"
        let fd = open(probe, O_CREAT | O_EXCL | O_WRONLY, 0o600)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        close(fd)
        unlink(probe)
        return nil
    }
}
