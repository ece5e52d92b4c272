import Foundation
import JobStore

/// Puts a job's stored results (`DATA/outputs/<job id>/`) where a command was asked to leave
/// them (`OUT/<slide name>/`): hard links where the file system allows, copies elsewhere, built
/// under a temporary name and renamed, so a reader never sees a half-filled folder.
public enum ResultFolders {
    /// A slide file name made safe as a folder name: safe characters only, never hidden.
    public static func folderName(forFileNamed fileName: String, job: JobID) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        var name = String(fileName.map { allowed.contains($0) ? $0 : "_" })
        while name.hasPrefix(".") { name.removeFirst() }
        return name.isEmpty ? "job-\(job)" : name
    }

    /// `name`, `name~2`, `name~3`, ...: the n-th (from 1) folder for inputs sharing a name.
    public static func numbered(_ name: String, _ n: Int) -> String { n <= 1 ? name : "\(name)~\(n)" }

    /// Folder names for inputs in order: the second input with a name gets `name~2`, and so on.
    public static func distinctNames(_ names: [String]) -> [String] {
        var used = Set<String>()
        return names.map { name in
            var n = 1
            while used.contains(numbered(name, n)) { n += 1 }
            used.insert(numbered(name, n))
            return numbered(name, n)
        }
    }

    /// The job whose results a folder holds (from its summary.json), if any.
    public static func job(in folder: String) -> Int? {
        guard let data = FileManager.default.contents(atPath: folder + "/summary.json"),
              let summary = try? JSONDecoder().decode(JobSummary.self, from: data) else { return nil }
        return summary.job
    }

    /// Makes `target` hold exactly the files of `source`, replacing what was there.
    /// - Throws: `UsageError` naming both folders when the results cannot be placed.
    public static func deliver(from source: String, to target: String) throws {
        let fm = FileManager.default
        let source = (source as NSString).standardizingPath, target = (target as NSString).standardizingPath
        guard source != target else { return }
        let parent = (target as NSString).deletingLastPathComponent
        let staging = parent + "/." + (target as NSString).lastPathComponent + ".partial-" + UUID().uuidString.prefix(8)
        do {
            guard fm.fileExists(atPath: source + "/summary.json") else {
                throw UsageError("the stored results \(source) are missing (deleted, or written on another machine)")
            }
            try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
            for name in try fm.contentsOfDirectory(atPath: source) where !name.hasPrefix(".") {
                if link(source + "/" + name, staging + "/" + name) != 0 {
                    try fm.copyItem(atPath: source + "/" + name, toPath: staging + "/" + name)
                }
            }
            if fm.fileExists(atPath: target) {
                let old = staging + ".old"
                try fm.moveItem(atPath: target, toPath: old)
                try fm.moveItem(atPath: staging, toPath: target)
                try? fm.removeItem(atPath: old)
            } else {
                try fm.moveItem(atPath: staging, toPath: target)
            }
        } catch let error as UsageError {
            try? fm.removeItem(atPath: staging)
            throw error
        } catch {
            try? fm.removeItem(atPath: staging)
            throw UsageError("cannot put the results into \(target): \((error as NSError).localizedDescription)")
        }
    }
}
