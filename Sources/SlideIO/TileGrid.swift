/// One patch position of a tile grid.
public struct Tile: Sendable, Equatable {
    /// Grid column.
    public var column: Int
    /// Grid row.
    public var row: Int
    /// Left edge in the read plan's (resampled) pixel space.
    public var x: Int
    /// Top edge in the read plan's pixel space.
    public var y: Int
    /// Fraction of the tile covered by tissue (0...1).
    public var tissueFraction: Double
}

/// A regular grid of square tiles over a slide at a read plan's pixel size, with the tiles
/// whose tissue fraction passes a threshold, in storage (row-major) order.
public struct TileGrid: Sendable {
    /// Level, scale and pixel size the tiles are read at.
    public let plan: ReadPlan
    /// Tile side in pixels.
    public let tileSize: Int
    /// Overlap between neighbouring tiles in pixels.
    public let overlap: Int
    /// Columns in the full grid.
    public let columns: Int
    /// Rows in the full grid.
    public let rows: Int
    /// Minimum tissue fraction a kept tile has.
    public let minimumTissue: Double
    /// Kept tiles, row-major.
    public let tiles: [Tile]

    /// Distance between tile origins.
    public var stride: Int { tileSize - overlap }
    /// Tiles in the full grid (tissue or not).
    public var totalCount: Int { columns * rows }

    /// Lays a grid of whole tiles over the plan's image (a partial strip at the right and bottom
    /// edges is left out) and keeps tiles with at least `minimumTissue` tissue according to `mask`
    /// (all tiles when `mask` is nil).
    /// With `coverEdges` a last column and row are added flush with the right and bottom edges
    /// when the stride leaves a strip uncovered (they overlap their neighbours by more): every
    /// pixel of a plan at least one tile wide and high lies in a tile (segmentation maps).
    public init(plan: ReadPlan, tileSize: Int, overlap: Int = 0, mask: TissueMask?, minimumTissue: Double,
                coverEdges: Bool = false) throws(SlideError) {
        guard tileSize >= 8 && tileSize <= 8192 else { throw .invalidArgument("--tile-size must be between 8 and 8192") }
        guard overlap >= 0 && overlap < tileSize else {
            throw .invalidArgument("--overlap must be at least 0 and smaller than the tile size")
        }
        guard minimumTissue >= 0 && minimumTissue <= 1 else { throw .invalidArgument("--min-tissue must be within 0...1") }
        self.plan = plan
        self.tileSize = tileSize
        self.overlap = overlap
        self.minimumTissue = minimumTissue
        let stride = tileSize - overlap
        func origins(_ length: Int) -> [Int] {
            guard length >= tileSize else { return [] }
            var list = Array(Swift.stride(from: 0, through: length - tileSize, by: stride))
            if coverEdges, let last = list.last, last + tileSize < length { list.append(length - tileSize) }
            return list
        }
        let xs = origins(plan.width), ys = origins(plan.height)
        columns = xs.count
        rows = ys.count
        var kept: [Tile] = []
        let side = Double(tileSize) * plan.downsample
        for row in 0..<rows {
            for column in 0..<columns {
                let x = xs[column], y = ys[row]
                let fraction = mask?.fraction(x: Double(x) * plan.downsample, y: Double(y) * plan.downsample,
                                              width: side, height: side) ?? 1
                if fraction >= minimumTissue && (mask == nil || fraction > 0 || minimumTissue == 0) {
                    kept.append(Tile(column: column, row: row, x: x, y: y, tissueFraction: fraction))
                }
            }
        }
        tiles = kept
    }

    /// The tile's rectangle in level-0 pixels (x, y, width, height).
    public func levelZeroRect(of tile: Tile) -> (x: Double, y: Double, width: Double, height: Double) {
        let d = plan.downsample
        return (Double(tile.x) * d, Double(tile.y) * d, Double(tileSize) * d, Double(tileSize) * d)
    }
}
