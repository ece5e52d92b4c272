import CVipsShims
import CVips
import Foundation

/// One-time libvips set-up: init, operation cache off (every slide is a new file),
/// the ImageMagick loader blocked (untrusted input must go through OpenSlide/tiff only).
enum VipsRuntime {
    private static let initialisation: Result<Void, SlideError> = {
        // Decode problems reach the caller as errors; libvips' own warnings on stderr would only repeat them.
        setenv("VIPS_WARNING", "0", 0)
        if tessera_vips_init("tessera") != 0 {
            return .failure(.runtimeUnavailable(takeError() ?? "vips_init failed"))
        }
        vips_cache_set_max(0)
        vips_cache_set_max_mem(0)
        tessera_vips_block("VipsForeignLoadMagick")
        return .success(())
    }()

    /// Initialises libvips once; later calls are free.
    static func ensure() throws(SlideError) {
        try initialisation.get()
    }

    /// The libvips error buffer as one line (then cleared), or nil when empty.
    static func takeError() -> String? {
        guard let raw = tessera_vips_error_take() else { return nil }
        defer { tessera_free(raw) }
        let text = String(cString: raw)
        vips_error_clear()
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        var seen = Set<String>()
        let unique = lines.filter { seen.insert($0).inserted }
        return unique.isEmpty ? nil : unique.joined(separator: "; ")
    }

    /// The short name of the loader libvips would pick for `path` (e.g. `openslideload`), or nil.
    static func loaderName(for path: String) -> String? {
        guard let name = vips_foreign_find_load(path) else {
            vips_error_clear()
            return nil
        }
        // libvips answers with the class name, e.g. VipsForeignLoadOpenslideFile: make it `openslideload`.
        var loader = String(cString: name).lowercased()
        if loader.hasPrefix("vipsforeignload") { loader.removeFirst("vipsforeignload".count) }
        for suffix in ["file", "source", "buffer"] where loader.hasSuffix(suffix) {
            loader.removeLast(suffix.count)
        }
        return loader + "load"
    }
}

