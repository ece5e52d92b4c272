import Foundation

/// A bearer token of the API: a secret with an optional name. A line `name:secret` names it
/// (the name is what the audit log records; the secret never leaves memory); a bare secret is
/// an unnamed token.
public struct APIToken: Sendable {
    public let name: String?
    let secret: [UInt8]

    public init(_ line: String) {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        let nameCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
        if let colon = trimmed.firstIndex(of: ":"), colon != trimmed.startIndex,
           trimmed[..<colon].allSatisfy(nameCharacters.contains), trimmed.index(after: colon) != trimmed.endIndex {
            name = String(trimmed[..<colon])
            secret = Array(trimmed[trimmed.index(after: colon)...].utf8)
        } else {
            name = nil
            secret = Array(trimmed.utf8)
        }
    }

    /// Whether `presented` is this token's secret, in time independent of where they differ.
    func matches(_ presented: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: secret.count ^ presented.count)
        for index in 0..<max(secret.count, presented.count) {
            difference |= (index < secret.count ? secret[index] : 0) ^ (index < presented.count ? presented[index] : 0)
        }
        return difference == 0
    }
}
