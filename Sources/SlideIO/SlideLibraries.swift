import CVipsShims
import CVips

/// Versions of the libraries slides are read with, for `tessera doctor`.
public enum SlideLibraries {
    /// libvips' version, e.g. `8.14.1`.
    public static var vipsVersion: String { String(cString: vips_version_string()) }

    /// Initialises libvips; the one-line reason when it cannot be.
    public static func initialisationError() -> String? {
        do {
            try VipsRuntime.ensure()
            return nil
        } catch {
            return error.description
        }
    }

    /// Whether libvips has its OpenSlide loader (`openslideload`): without it SVS, NDPI and
    /// MIRAX slides cannot be read.
    public static var hasOpenSlideLoader: Bool {
        guard initialisationError() == nil else { return false }
        return vips_type_find("VipsOperation", "openslideload") != 0
    }

    /// OpenSlide's version (the library libvips loads), or nil when it is not there.
    public static var openSlideVersion: String? {
        guard hasOpenSlideLoader, let version = tessera_openslide_version() else { return nil }
        return String(cString: version)
    }
}
