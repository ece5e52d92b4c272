import CMicroHTTPD

/// Facts about the linked libmicrohttpd.
public enum HTTPLibrary {
    /// libmicrohttpd's version (`MHD_get_version`), e.g. `0.9.75`.
    public static var version: String { MHD_get_version().map { String(cString: $0) } ?? "unknown" }
}
