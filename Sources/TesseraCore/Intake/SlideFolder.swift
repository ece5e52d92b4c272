import Foundation

/// The slide files a command line names: files as given, folders expanded to the slides in them
/// (sub-folders too with `recursive`), in name order.
public enum SlideFolder {
    /// File extensions taken from a folder (a file named explicitly is always taken).
    public static let slideExtensions: Set<String> = ["svs", "tif", "tiff", "ndpi", "vms", "vmu", "scn", "mrxs", "svslide",
                                                      "bif", "btf", "qptiff"]

    /// The inputs with folders expanded.
    /// - Throws: `UsageError` for a folder with no slide in it.
    public static func expand(_ paths: [String], recursive: Bool) throws -> [String] {
        var result: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
                result.append(path)
                continue
            }
            let found = slides(in: path, recursive: recursive)
            guard !found.isEmpty else {
                throw UsageError("\(path): no slide files in this folder" + (recursive ? "" : " (--recursive takes sub-folders too)"))
            }
            result += found
        }
        return result
    }

    /// Slide files in `folder`; a MIRAX slide's data folder (same stem as its .mrxs) is part of it, not a sub-folder.
    static func slides(in folder: String, recursive: Bool) -> [String] {
        let entries = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
        let mirax = Set(entries.filter { $0.lowercased().hasSuffix(".mrxs") }.map { ($0 as NSString).deletingPathExtension })
        var result: [String] = []
        for name in entries where !name.hasPrefix(".") {
            let path = folder + "/" + name
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                if recursive && !mirax.contains(name) { result += slides(in: path, recursive: true) }
            } else if slideExtensions.contains((name as NSString).pathExtension.lowercased()) {
                result.append(path)
            }
        }
        return result
    }
}
