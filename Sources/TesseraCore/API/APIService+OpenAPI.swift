import Foundation
import HTTPServer

extension APIService {
    /// `GET /openapi.json`: the API's OpenAPI 3 document, as shipped in `docs/openapi.json`.
    func openAPIDocument() -> HTTPResponse {
        guard let path = APIDocument.path else {
            return .error(404, "not_found", "the OpenAPI document is not installed (docs/openapi.json next to the binary's tree, "
                          + "/usr/share/doc/tessera/openapi.json or /opt/tessera/openapi.json)")
        }
        return HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: .file(path))
    }
}

/// Where the OpenAPI document is: `docs/openapi.json` up from the executable (build tree, the
/// unpacked tarball), else `/usr/share/doc/tessera/openapi.json` (the Debian package), else
/// `/opt/tessera/openapi.json`.
enum APIDocument {
    static let path: String? = {
        var url = URL(fileURLWithPath: ModelCatalog.executablePath).resolvingSymlinksInPath()
        for _ in 0..<5 {
            url.deleteLastPathComponent()
            let candidate = url.appendingPathComponent("docs/openapi.json").path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        return ["/usr/share/doc/tessera/openapi.json", "/opt/tessera/openapi.json"].first { FileManager.default.fileExists(atPath: $0) }
    }()
}
