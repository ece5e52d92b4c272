/// Which level to read and how to resample it to reach a target pixel size.
public struct ReadPlan: Sendable, Equatable {
    /// The pyramid level pixels are read from.
    public var level: Int
    /// Microns per pixel of that level (nil when the slide MPP is unknown and no target was set).
    public var levelMPP: Double?
    /// Microns per pixel of the patches handed out (the effective MPP).
    public var mpp: Double?
    /// Output pixels per level pixel (1 = read the level as is, < 1 = shrink).
    public var scale: Double
    /// Width of the (resampled) image the tile grid covers.
    public var width: Int
    /// Height of the (resampled) image the tile grid covers.
    public var height: Int
    /// Level-0 pixels per output pixel.
    public var downsample: Double

    /// Whether pixels are resampled after reading.
    public var isResampled: Bool { scale != 1 }

    /// The exact shrinks a plan snaps to (besides 1), which libjpeg can also do while decoding.
    static let shrinkDenominators = [2, 4, 8]
    /// 2, 4 or 8 when the plan shrinks its level by exactly that much; nil otherwise.
    public var shrinkDenominator: Int? { Self.shrinkDenominators.first { scale * Double($0) == 1 } }
}

extension Slide {
    /// Relative MPP difference under which a level is read as is rather than resampled.
    public static let mppTolerance = 0.02

    /// Chooses the coarsest level at or finer than `targetMPP` (so no detail is invented) and the
    /// scale that brings it to the target (snapped to 1, 1/2, 1/4 or 1/8 within `mppTolerance`);
    /// never level 0 when a coarser level serves.
    /// With `targetMPP` nil, reads level 0 unresampled.
    /// - Throws: `SlideError.mppUnknown` when a target is set but the slide MPP is unknown.
    public func plan(targetMPP: Double?) throws(SlideError) -> ReadPlan {
        let levels = properties.levels
        guard let target = targetMPP else {
            return ReadPlan(level: 0, levelMPP: properties.mppX, mpp: properties.mppX, scale: 1,
                            width: levels[0].width, height: levels[0].height, downsample: 1)
        }
        guard target > 0, target.isFinite else { throw .invalidArgument("--mpp must be a positive number") }
        guard let base = properties.mppX else { throw .mppUnknown(path: properties.path) }
        var chosen = 0
        for (index, level) in levels.enumerated() where base * level.downsample <= target * (1 + Self.mppTolerance) {
            if level.downsample >= levels[chosen].downsample { chosen = index }
        }
        let levelMPP = base * levels[chosen].downsample
        var scale = levelMPP / target
        // Within the tolerance the scale snaps to 1 (read as is) or to 1/2, 1/4, 1/8: an exact
        // shrink, which libjpeg can also do while decoding (`DecodeRoute.reducedJPEG`).
        if abs(scale - 1) <= Self.mppTolerance {
            scale = 1
        } else if let denominator = ReadPlan.shrinkDenominators.first(where: { abs(scale * Double($0) - 1) <= Self.mppTolerance }) {
            scale = 1 / Double(denominator)
        }
        let width = Int((Double(levels[chosen].width) * scale).rounded(.down))
        let height = Int((Double(levels[chosen].height) * scale).rounded(.down))
        return ReadPlan(level: chosen, levelMPP: levelMPP, mpp: levelMPP / scale, scale: scale,
                        width: width, height: height, downsample: levels[chosen].downsample / scale)
    }
}
