import Foundation
import SlideIO

/// `tessera inspect` output: what a slide is, with no free-text metadata or label pixels.
public struct SlideReport: Codable, Sendable, Equatable {
    /// One level as reported.
    public struct Level: Codable, Sendable, Equatable {
        public var width: Int
        public var height: Int
        public var downsample: Double
        public var mpp: Double?
    }

    public var path: String
    public var format: String
    public var vendor: String
    public var width: Int
    public var height: Int
    public var levels: [Level]
    public var mppX: Double?
    public var mppY: Double?
    public var mppSource: String
    public var objectivePower: Double?
    public var associatedImages: [String]

    enum CodingKeys: String, CodingKey {
        case path, format, vendor, width, height, levels
        case mppX = "mpp_x", mppY = "mpp_y", mppSource = "mpp_source"
        case objectivePower = "objective_power", associatedImages = "associated_images"
    }

    public init(_ properties: SlideProperties) {
        path = properties.path
        format = properties.loader.hasSuffix("load") ? String(properties.loader.dropLast(4)) : properties.loader
        vendor = properties.vendor
        width = properties.width
        height = properties.height
        levels = properties.levels.map { level in
            Level(width: level.width, height: level.height, downsample: level.downsample,
                  mpp: properties.mppX.map { $0 * level.downsample })
        }
        mppX = properties.mppX
        mppY = properties.mppY
        mppSource = properties.mppSource.rawValue
        objectivePower = properties.objectivePower
        associatedImages = properties.associatedImages
    }

    /// Human-readable lines.
    public var text: String {
        let mppText: String
        if let mppX {
            mppText = String(format: "%.4f x %.4f um/px (", mppX, mppY ?? mppX) + mppSource + ")"
        } else {
            mppText = "unknown (no MPP metadata; pass --slide-mpp)"
        }
        let objective = objectivePower.map { String(format: "%gx", $0) } ?? "unknown"
        let associated = associatedImages.isEmpty ? "none" : associatedImages.joined(separator: ", ")
        var lines: [String] = []
        lines.append("slide:        " + path)
        lines.append("format:       " + format + " (" + vendor + ")")
        lines.append("size:         \(width) x \(height) px")
        lines.append("mpp:          " + mppText)
        lines.append("objective:    " + objective)
        lines.append("associated:   " + associated)
        lines.append("levels:")
        for (index, level) in levels.enumerated() {
            let mpp = level.mpp.map { String(format: "%.3f um/px", $0) } ?? "-"
            lines.append(String(format: "  %2d  %7d x %-7d  downsample %8.3f  ", index, level.width, level.height,
                                level.downsample) + mpp)
        }
        return lines.joined(separator: "\n")
    }
}

/// Encodes reports as stable, single-line JSON.
public enum JSONOutput {
    /// One-line JSON with sorted keys.
    public static func line<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value), let text = String(data: data, encoding: .utf8) else {
            return "{}"
        }
        return text
    }
}
