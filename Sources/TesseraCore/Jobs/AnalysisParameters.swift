import Foundation

/// What a job asks for beyond slide and model. Stored as canonical JSON in the job row, so the
/// same slide, model and parameters dedupe to one job.
public struct AnalysisParameters: Codable, Sendable, Equatable {
    /// Target microns per pixel; nil uses the model card's.
    public var mpp: Double?
    /// Slide MPP to assume when the slide does not record one.
    public var slideMPP: Double?
    /// Minimum tissue fraction of a tile.
    public var minTissue: Double
    /// Tile overlap in pixels.
    public var overlap: Int
    /// Whether to write per-tile embeddings.
    public var embeddings: Bool
    /// Marks the job as one measurement run's own, so a repeated measurement of the same slide on
    /// a shared queue (which outlives the run) is not deduplicated into an earlier job. Usually nil.
    public var run: String?

    public init(mpp: Double? = nil, slideMPP: Double? = nil, minTissue: Double = 0.5, overlap: Int = 0, embeddings: Bool = false) {
        self.mpp = mpp
        self.slideMPP = slideMPP
        self.minTissue = minTissue
        self.overlap = overlap
        self.embeddings = embeddings
    }

    enum CodingKeys: String, CodingKey {
        case mpp, overlap, embeddings, run
        case slideMPP = "slide_mpp", minTissue = "min_tissue"
    }

    /// Canonical JSON (sorted keys) for the job row.
    public var canonicalJSON: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
    }

    /// Parses a job row's parameters (defaults for anything missing).
    public static func parse(_ json: String) -> AnalysisParameters {
        (try? JSONDecoder().decode(AnalysisParameters.self, from: Data(json.utf8))) ?? AnalysisParameters()
    }
}
