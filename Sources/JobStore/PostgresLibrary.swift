extension PostgresLibrary {
    /// libpq's version as text, e.g. `15.18` (from `version`: major * 10000 + minor since PostgreSQL 10).
    public static var versionString: String {
        version >= 100_000 ? "\(version / 10_000).\(version % 10_000)" : "\(version / 10_000).\(version / 100 % 100).\(version % 100)"
    }

    /// A connection URL with its password replaced by `***`, for messages.
    public static func redacted(_ url: String) -> String { PostgresConnection.redacted(url) }
}
