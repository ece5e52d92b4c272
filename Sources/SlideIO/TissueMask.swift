/// A low-resolution tissue mask: saturation thresholded by Otsu's method (with a floor so
/// blank slides stay blank), then cleaned of specks and small holes.
public struct TissueMask: Sendable {
    /// Mask width in pixels.
    public let width: Int
    /// Mask height in pixels.
    public let height: Int
    /// Level-0 pixels per mask pixel, horizontally.
    public let downsampleX: Double
    /// Level-0 pixels per mask pixel, vertically.
    public let downsampleY: Double
    /// 1 = tissue, 0 = background, row-major.
    public let pixels: [UInt8]
    /// The RGB thumbnail the mask was computed from (width * height * 3).
    public let thumbnail: [UInt8]
    /// Saturation threshold used (0...255).
    public let threshold: Int
    /// Summed-area table of `pixels`, (width+1) x (height+1).
    private let integral: [Int32]

    /// Lowest saturation (0...255) ever counted as tissue.
    public static let minimumThreshold = 20

    /// Builds a mask from an RGB thumbnail of the whole slide.
    public init(thumbnail: [UInt8], width: Int, height: Int, downsampleX: Double, downsampleY: Double) {
        precondition(thumbnail.count == width * height * 3)
        self.width = width
        self.height = height
        self.downsampleX = downsampleX
        self.downsampleY = downsampleY
        self.thumbnail = thumbnail
        var saturation = [UInt8](repeating: 0, count: width * height)
        var histogram = [Int](repeating: 0, count: 256)
        for index in 0..<(width * height) {
            let r = thumbnail[3 * index], g = thumbnail[3 * index + 1], b = thumbnail[3 * index + 2]
            let high = max(r, g, b), low = min(r, g, b)
            // Near-black pixels (scanner borders, pen) carry no usable saturation.
            let value: UInt8 = high < 30 ? 0 : high - low
            saturation[index] = value
            histogram[Int(value)] += 1
        }
        let threshold = max(Self.otsu(histogram), Self.minimumThreshold)
        var mask = saturation.map { $0 > threshold ? UInt8(1) : 0 }
        let speck = max(4, width * height / 4000)
        Self.removeComponents(&mask, width: width, height: height, of: 1, smallerThan: speck)
        Self.removeComponents(&mask, width: width, height: height, of: 0, smallerThan: 2 * speck, keepBorder: true)
        self.pixels = mask
        self.threshold = threshold
        var table = [Int32](repeating: 0, count: (width + 1) * (height + 1))
        for y in 0..<height {
            var row: Int32 = 0
            for x in 0..<width {
                row += Int32(mask[y * width + x])
                table[(y + 1) * (width + 1) + x + 1] = table[y * (width + 1) + x + 1] + row
            }
        }
        self.integral = table
    }

    /// Fraction of tissue (0...1) inside a rectangle given in level-0 pixels.
    public func fraction(x: Double, y: Double, width w: Double, height h: Double) -> Double {
        let x0 = Swift.max(0, Swift.min(width, Int((x / downsampleX).rounded())))
        let y0 = Swift.max(0, Swift.min(height, Int((y / downsampleY).rounded())))
        var x1 = Swift.max(0, Swift.min(width, Int(((x + w) / downsampleX).rounded())))
        var y1 = Swift.max(0, Swift.min(height, Int(((y + h) / downsampleY).rounded())))
        if x1 <= x0 { x1 = Swift.min(width, x0 + 1) }
        if y1 <= y0 { y1 = Swift.min(height, y0 + 1) }
        let area = (x1 - x0) * (y1 - y0)
        guard area > 0 else { return 0 }
        let stride = width + 1
        let sum = integral[y1 * stride + x1] - integral[y0 * stride + x1] - integral[y1 * stride + x0]
            + integral[y0 * stride + x0]
        return Double(sum) / Double(area)
    }

    /// Fraction of the whole slide covered by tissue.
    public var tissueFraction: Double {
        Double(integral[integral.count - 1]) / Double(Swift.max(1, width * height))
    }

    /// Otsu's threshold: the cut maximising between-class variance.
    static func otsu(_ histogram: [Int]) -> Int {
        let total = histogram.reduce(0, +)
        guard total > 0 else { return 0 }
        let sumAll = histogram.enumerated().reduce(0.0) { $0 + Double($1.offset * $1.element) }
        var weightBackground = 0, sumBackground = 0.0, best = 0.0, threshold = 0
        for level in 0..<256 {
            weightBackground += histogram[level]
            guard weightBackground > 0 else { continue }
            let weightForeground = total - weightBackground
            guard weightForeground > 0 else { break }
            sumBackground += Double(level * histogram[level])
            let meanBackground = sumBackground / Double(weightBackground)
            let meanForeground = (sumAll - sumBackground) / Double(weightForeground)
            let between = Double(weightBackground) * Double(weightForeground)
                * (meanBackground - meanForeground) * (meanBackground - meanForeground)
            if between > best {
                best = between
                threshold = level
            }
        }
        return threshold
    }

    /// Flips 4-connected components of `value` smaller than `minimum` pixels. With `keepBorder`,
    /// components touching the image edge are kept (background around the tissue, not holes).
    static func removeComponents(_ mask: inout [UInt8], width: Int, height: Int, of value: UInt8,
                                 smallerThan minimum: Int, keepBorder: Bool = false) {
        var visited = [Bool](repeating: false, count: mask.count)
        var stack: [Int] = []
        var component: [Int] = []
        for start in 0..<mask.count where mask[start] == value && !visited[start] {
            stack.append(start)
            visited[start] = true
            component.removeAll(keepingCapacity: true)
            var touchesBorder = false
            while let index = stack.popLast() {
                component.append(index)
                let x = index % width, y = index / width
                if x == 0 || y == 0 || x == width - 1 || y == height - 1 { touchesBorder = true }
                for (nx, ny) in [(x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)]
                where nx >= 0 && ny >= 0 && nx < width && ny < height {
                    let neighbour = ny * width + nx
                    if mask[neighbour] == value && !visited[neighbour] {
                        visited[neighbour] = true
                        stack.append(neighbour)
                    }
                }
            }
            if component.count < minimum && !(keepBorder && touchesBorder) {
                for index in component { mask[index] = value == 1 ? 0 : 1 }
            }
        }
    }
}

extension Slide {
    /// Largest side of the thumbnail tissue detection runs on.
    public static let maskMaxDimension = 1024

    /// Detects tissue on a low-resolution rendering of the slide (read from the coarsest level
    /// that is still at least `maxDimension` px, so level 0 is never read when a level serves).
    public func detectTissue(maxDimension: Int = Slide.maskMaxDimension) throws(SlideError) -> TissueMask {
        let levels = properties.levels
        var chosen = 0
        for (index, level) in levels.enumerated() where Double(max(level.width, level.height)) >= Double(maxDimension) {
            if level.downsample > levels[chosen].downsample { chosen = index }
        }
        if Double(max(levels[0].width, levels[0].height)) < Double(maxDimension) { chosen = 0 }
        let image = try openLevel(chosen)
        let scale = min(1, Double(maxDimension) / Double(max(image.width, image.height)))
        var source = image
        if scale < 1 {
            guard let resized = image.resized(horizontal: scale, vertical: scale) else {
                throw .readFailed(path: properties.path, reason: VipsRuntime.takeError() ?? "resize failed")
            }
            source = resized
        }
        guard source.width > 0, source.height > 0, let pixels = source.renderRGB() else {
            throw .readFailed(path: properties.path, reason: VipsRuntime.takeError() ?? "thumbnail failed")
        }
        return TissueMask(thumbnail: pixels, width: source.width, height: source.height,
                          downsampleX: Double(levels[0].width) / Double(source.width),
                          downsampleY: Double(levels[0].height) / Double(source.height))
    }
}
