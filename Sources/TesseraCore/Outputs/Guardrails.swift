import Foundation
import SlideIO

/// Flags tiles a model should not be trusted on: tiles whose colours are not those of a
/// brightfield H&E stain (the only kind of image Tessera's classifiers were trained on; a
/// fluorescence scan otherwise gets confident tumour calls), and tiles the model itself is unsure
/// of. Computed from the slide thumbnail under each tile and the tile's probabilities, so it costs
/// nothing at inference time and needs nothing stored with the checkpoints.
public struct Guardrails: Codable, Sendable, Equatable {
    /// Why a tile is flagged.
    public enum Flag: String, Codable, Sendable, CaseIterable {
        /// Dark surroundings: a fluorescence or darkfield image, not brightfield.
        case dark
        /// Tissue colours outside H&E's pink/purple range (green/yellow, or blue without red).
        case colour
        /// Top class probability below ``Guardrails/lowConfidence``.
        case lowConfidence = "low_confidence"
    }

    /// A tile is low-confidence when its most likely class has a probability under this.
    public static let lowConfidence: Float = 0.6
    /// The slide gets a warning when more than this share of its tissue tiles is flagged for colour.
    public static let slideWarningShare = 0.5

    /// Tissue tiles analysed.
    public var tiles: Int
    /// Tiles with any flag.
    public var tilesFlagged: Int
    /// Tiles whose colours are not brightfield H&E (`dark` or `colour`).
    public var tilesOutOfDistribution: Int
    /// Tiles flagged `low_confidence`.
    public var tilesLowConfidence: Int
    /// Share of tiles with any flag.
    public var shareFlagged: Double
    /// Set when most tiles are out of distribution: the classes on this slide mean nothing.
    public var slideWarning: String?
    /// What the flags mean.
    public var rules: String

    enum CodingKeys: String, CodingKey {
        case tiles, rules
        case tilesFlagged = "tiles_flagged", tilesOutOfDistribution = "tiles_out_of_distribution"
        case tilesLowConfidence = "tiles_low_confidence", shareFlagged = "share_flagged", slideWarning = "slide_warning"
    }

    /// Per-tile flags (in grid order) and their summary.
    static func assess(mask: TissueMask, grid: TileGrid, scores: [[Float]]) -> (flags: [[Flag]], summary: Guardrails) {
        var flags: [[Flag]] = []
        flags.reserveCapacity(scores.count)
        for (index, tile) in grid.tiles.enumerated() where index < scores.count {
            var tileFlags = colourFlags(mask: mask, rect: grid.levelZeroRect(of: tile))
            if (scores[index].max() ?? 0) < lowConfidence { tileFlags.append(.lowConfidence) }
            flags.append(tileFlags)
        }
        let ood = flags.filter { $0.contains(.dark) || $0.contains(.colour) }.count
        let low = flags.filter { $0.contains(.lowConfidence) }.count
        let flagged = flags.filter { !$0.isEmpty }.count
        let n = max(1, flags.count)
        let warning = !flags.isEmpty && Double(ood) / Double(n) > slideWarningShare
            ? String(format: "%.0f%% of the tissue tiles do not look like brightfield H&E (dark surroundings or non-H&E colours, "
                     + "e.g. a fluorescence scan); the model was trained on H&E, so its classes on this slide are not meaningful",
                     100 * Double(ood) / Double(n))
            : nil
        let summary = Guardrails(
            tiles: flags.count, tilesFlagged: flagged, tilesOutOfDistribution: ood, tilesLowConfidence: low,
            shareFlagged: Double(flagged) / Double(n), slideWarning: warning,
            rules: "dark: the tile's background is darker than 100/255 (brightfield backgrounds are white), or a tile "
                + "that is all tissue averages under 50/255; "
                + "colour: the tile's tissue pixels are green/yellow (G >= R and G >= B) or blue without red (R < 0.5 B); "
                + String(format: "low_confidence: top class probability under %.2f", lowConfidence))
        return (flags, summary)
    }

    /// Colour flags of one tile from the thumbnail pixels it covers.
    static func colourFlags(mask: TissueMask, rect: (x: Double, y: Double, width: Double, height: Double)) -> [Flag] {
        let x0 = max(0, min(mask.width - 1, Int(rect.x / mask.downsampleX)))
        let y0 = max(0, min(mask.height - 1, Int(rect.y / mask.downsampleY)))
        let x1 = max(x0 + 1, min(mask.width, Int(((rect.x + rect.width) / mask.downsampleX).rounded(.up))))
        let y1 = max(y0 + 1, min(mask.height, Int(((rect.y + rect.height) / mask.downsampleY).rounded(.up))))
        var background = 0.0, backgroundCount = 0.0
        var tissue = (r: 0.0, g: 0.0, b: 0.0), tissueCount = 0.0
        for y in y0..<y1 {
            for x in x0..<x1 {
                let i = y * mask.width + x
                let r = Double(mask.thumbnail[3 * i]), g = Double(mask.thumbnail[3 * i + 1]), b = Double(mask.thumbnail[3 * i + 2])
                if mask.pixels[i] == 0 {
                    background += (r + g + b) / 3
                    backgroundCount += 1
                } else {
                    tissue.r += r
                    tissue.g += g
                    tissue.b += b
                    tissueCount += 1
                }
            }
        }
        var flags: [Flag] = []
        // Brightfield backgrounds are near white; a dark background is fluorescence or darkfield.
        // A tile that is all tissue is judged by the tissue itself (densely stained H&E is dark
        // too, but not this dark).
        let pixels = backgroundCount + tissueCount
        if backgroundCount >= 0.1 * pixels {
            if background / backgroundCount < 100 { flags.append(.dark) }
        } else if tissueCount > 0, (tissue.r + tissue.g + tissue.b) / (3 * tissueCount) < 50 {
            flags.append(.dark)
        }
        if tissueCount > 0 {
            let r = tissue.r / tissueCount, g = tissue.g / tissueCount, b = tissue.b / tissueCount
            if (g >= r && g >= b) || r < 0.5 * b { flags.append(.colour) }
        }
        return flags
    }
}
