import Foundation
import HTTPServer

extension APIService {
    /// What an answered request means for the audit log: the action and its object, or nil for
    /// requests that are not audited (health, metrics, listings, status reads).
    static func auditedAction(_ request: HTTPRequest, _ response: HTTPResponse) -> (action: String, object: String)? {
        let parts = request.path.split(separator: "/").map(String.init)
        if response.status == 401 { return ("auth_failure", request.method + " " + request.path) }
        switch (request.method, parts) {
        case ("POST", ["v1", "slides"]), ("PUT", ["v1", "slides"]):
            let job = response.headers.first { $0.0 == "Location" }.map { $0.1.replacingOccurrences(of: "/v1/jobs/", with: "job ") }
            let name = safeName(request.query["filename"] ?? "")
            return ("upload", [job, name.isEmpty ? nil : "file \(name)"].compactMap { $0 }.joined(separator: ", "))
        case ("GET", let path) where path.count == 4 && path[0] == "v1" && path[1] == "jobs":
            return (path[3] == "result" ? "result_read" : "download", "job \(path[2]) \(path[3])")
        case ("DELETE", let path) where path.count == 3 && path[0] == "v1" && path[1] == "jobs":
            return ("delete", "job \(path[2])")
        case ("POST", let path) where path.count == 4 && path[0] == "v1" && path[1] == "jobs" && path[3] == "retry":
            return ("retry", "job \(path[2])")
        default:
            return nil
        }
    }

    /// Appends the request to the audit log when it is an audited action.
    func recordAudit(_ request: HTTPRequest, _ response: HTTPResponse) {
        guard let (action, object) = Self.auditedAction(request, response) else { return }
        audit.record(AuditLog.Event(client: presentedToken(request)?.name, address: request.clientAddress,
                                    action: action, object: object, outcome: response.status))
    }
}
