import Foundation
import SlideIO

/// EHO input: Eosin, Hematoxylin and mean Optical Density channels from a per-slide Macenko
/// stain estimate, for models trained on colour-deconvolved tiles (a card's
/// `input.colour_transform: "eho"`, as the lavlab SHELL segmenter is trained).
///
/// Per slide, on the tissue thumbnail: the background intensity `Io` (mean of background
/// pixels, clipped to 200...255), the two stain vectors of Macenko's method (PCA of the optical
/// densities of tissue pixels, the 1st and 99th percentile angles in the plane of the first two
/// components; HistomicsTK's formulation), which of them is eosin and which hematoxylin (closest
/// to HistomicsTK's reference colours), and the 1st/99th percentiles of each channel. Per pixel:
/// optical density `-log10(clip(p, 1, Io) / Io)`, projected on the rows of the stain matrix's
/// inverse (and averaged for OD), scaled to 0...255 between the percentiles and truncated to
/// bytes. Per tile, each channel is then scaled to 0...1 between its minimum and maximum (MONAI's
/// `ScaleIntensity(channel_wise=True)`, as the model's own pipeline does for every tile).
public struct StainTransform: Sendable, Equatable, Codable {
    public var io: Float
    /// Rows of the inverse stain matrix for eosin and hematoxylin.
    public var eosin: [Float]
    public var hematoxylin: [Float]
    /// Percentile ranges of eosin, hematoxylin and optical density on the thumbnail.
    public var low: [Float]
    public var high: [Float]

    /// HistomicsTK's reference stain colours.
    static let referenceHematoxylin: [Double] = [0.65, 0.70, 0.29]
    static let referenceEosin: [Double] = [0.07, 0.99, 0.11]

    /// Estimates the transform from a tissue mask's thumbnail.
    public static func estimate(from mask: TissueMask) throws -> StainTransform {
        let n = mask.width * mask.height
        let rgb = mask.thumbnail
        var tissue = [Bool](repeating: false, count: n)
        for i in 0..<n { tissue[i] = mask.pixels[i] != 0 }
        // Background intensity from background pixels that are not pure white.
        var sum = 0.0, count = 0, sumAll = 0.0, countAll = 0
        for i in 0..<n where !tissue[i] {
            let r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2]
            let mean = (Double(r) + Double(g) + Double(b))
            sumAll += mean; countAll += 3
            if !(r == 255 && g == 255 && b == 255) { sum += mean; count += 3 }
        }
        let io: Double = count >= 300 ? min(255, max(200, sum / Double(count)))
            : countAll >= 300 ? min(255, max(200, sumAll / Double(countAll))) : 240
        // Scaled optical densities (HistomicsTK's SDA) of tissue pixels, 3 x m.
        let scale = 255 / log(io)
        var sda: [(Double, Double, Double)] = []
        sda.reserveCapacity(n)
        for i in 0..<n where tissue[i] {
            func d(_ v: UInt8) -> Double { max(0, -log(max(Double(v), 1e-10) / io) * scale) }
            sda.append((d(rgb[3 * i]), d(rgb[3 * i + 1]), d(rgb[3 * i + 2])))
        }
        guard sda.count >= 16 else {
            throw SlideError.invalidArgument("the EHO colour transform needs tissue to estimate stains from; the slide's tissue mask is empty")
        }
        // Principal components of the (uncentred) densities: eigenvectors of m m^T.
        var c = [[Double]](repeating: [0, 0, 0], count: 3)
        for p in sda {
            let v = [p.0, p.1, p.2]
            for a in 0..<3 { for b in 0..<3 { c[a][b] += v[a] * v[b] } }
        }
        let (values, vectors) = symmetricEigen(c)
        let order = (0..<3).sorted { values[$0] > values[$1] }
        let pc1 = vectors[order[0]], pc2 = vectors[order[1]]
        // Project on the first two components, keep the strong ones, angle of each.
        var projected: [(Double, Double)] = []
        for p in sda {
            let v = [p.0, p.1, p.2]
            let a: Double = v[0] * pc1[0] + v[1] * pc1[1] + v[2] * pc1[2]
            let b: Double = v[0] * pc2[0] + v[1] * pc2[1] + v[2] * pc2[2]
            if (a * a + b * b).squareRoot() > 16 { projected.append((a, b)) }
        }
        guard projected.count >= 2 else {
            throw SlideError.invalidArgument("the EHO colour transform found too little stain in the tissue to estimate stains from")
        }
        let angles = projected.map { p -> Double in
            let norm = (p.0 * p.0 + p.1 * p.1).squareRoot()
            let x = p.0 / norm, y = p.1 / norm
            return (1 - y) * (x > 0 ? 1 : x < 0 ? -1 : 0)
        }
        let sorted = angles.indices.sorted { angles[$0] < angles[$1] }
        func percentileVector(_ q: Double) -> [Double] {
            let index = min(sorted.count - 1, Int(q * Double(sorted.count) + 0.5))
            let p = projected[sorted[index]]
            return (0..<3).map { pc1[$0] * p.0 + pc2[$0] * p.1 }
        }
        func unit(_ v: [Double]) -> [Double] {
            let norm = v.map { $0 * $0 }.reduce(0, +).squareRoot()
            return norm > 0 ? v.map { $0 / norm } : v
        }
        let s0 = unit(percentileVector(0.01)), s1 = unit(percentileVector(0.99))
        let s2 = unit([s0[1] * s1[2] - s0[2] * s1[1], s0[2] * s1[0] - s0[0] * s1[2], s0[0] * s1[1] - s0[1] * s1[0]])
        let stains = [s0, s1, s2] // columns of the stain matrix
        func closest(_ reference: [Double]) -> Int {
            let r = unit(reference)
            var best = 0, bestDot = -1.0
            for j in 0..<3 {
                let dot: Double = abs(stains[j][0] * r[0] + stains[j][1] * r[1] + stains[j][2] * r[2])
                if dot > bestDot { bestDot = dot; best = j }
            }
            return best
        }
        var h = closest(referenceHematoxylin), e = closest(referenceEosin)
        if h == e || h == 2 || e == 2 { (h, e) = (0, 1) }
        guard let inverse = invert3(stains) else {
            throw SlideError.invalidArgument("the EHO colour transform's stain matrix is singular for this slide")
        }
        let eosin = inverse[e].map(Float.init), hematoxylin = inverse[h].map(Float.init)
        // Percentiles of each channel over the whole thumbnail.
        let iof = Float(io), density = densities(iof)
        var channels = [[Float]](repeating: [], count: 3)
        for i in 0..<n {
            let od = (density[Int(rgb[3 * i])], density[Int(rgb[3 * i + 1])], density[Int(rgb[3 * i + 2])])
            channels[0].append(od.0 * eosin[0] + od.1 * eosin[1] + od.2 * eosin[2])
            channels[1].append(od.0 * hematoxylin[0] + od.1 * hematoxylin[1] + od.2 * hematoxylin[2])
            channels[2].append((od.0 + od.1 + od.2) / 3)
        }
        var low: [Float] = [], high: [Float] = []
        for values in channels {
            let s = values.sorted()
            func percentile(_ q: Double) -> Float {
                let position = q * Double(s.count - 1), lower = Int(position.rounded(.down))
                let upper = min(lower + 1, s.count - 1), t = Float(position - Double(lower))
                return s[lower] + (s[upper] - s[lower]) * t
            }
            var lo = percentile(0.01), hi = percentile(0.99)
            if hi <= lo + 1e-8 { (lo, hi) = (0, 1) }
            low.append(lo); high.append(hi)
        }
        return StainTransform(io: iof, eosin: eosin, hematoxylin: hematoxylin, low: low, high: high)
    }

    /// Optical density `-log10(clip(v, 1, io) / io)` of each byte value.
    static func densities(_ io: Float) -> [Float] {
        (0..<256).map { v in -log10(min(max(Float(v), 1), io) / io) }
    }

    /// Replaces `count` planar RGB patches (NCHW floats, pixel / 255) by their EHO channels,
    /// each scaled to 0...1 between its minimum and maximum within the patch, then normalised
    /// with the card's `(v - mean) / std`.
    public func apply(to floats: UnsafeMutablePointer<Float>, count: Int, side: Int, normalisation: Normalisation) {
        let plane = side * side
        let ranges = (0..<3).map { high[$0] - low[$0] + 1e-8 }
        let density = Self.densities(io)
        let (e0, e1, e2) = (eosin[0], eosin[1], eosin[2]), (h0, h1, h2) = (hematoxylin[0], hematoxylin[1], hematoxylin[2])
        let (l0, l1, l2) = (low[0], low[1], low[2]), (r0, r1, r2) = (ranges[0], ranges[1], ranges[2])
        @inline(__always) func byte(_ v: Float) -> UInt8 { UInt8(min(255, max(0, (v * 255).rounded()))) }
        // As bytes, truncated like the model's own pipeline.
        @inline(__always) func level(_ v: Float, _ l: Float, _ r: Float) -> Float { Float(Int(min(1, max(0, (v - l) / r)) * 255)) }
        for n in 0..<count {
            let base = floats + n * 3 * plane
            var lo: (Float, Float, Float) = (255, 255, 255), hi: (Float, Float, Float) = (0, 0, 0)
            for i in 0..<plane {
                let od = (density[Int(byte(base[i]))], density[Int(byte(base[plane + i]))], density[Int(byte(base[2 * plane + i]))])
                let a = level(od.0 * e0 + od.1 * e1 + od.2 * e2, l0, r0)
                let b = level(od.0 * h0 + od.1 * h1 + od.2 * h2, l1, r1)
                let c = level((od.0 + od.1 + od.2) / 3, l2, r2)
                base[i] = a; base[plane + i] = b; base[2 * plane + i] = c
                lo = (min(lo.0, a), min(lo.1, b), min(lo.2, c))
                hi = (max(hi.0, a), max(hi.1, b), max(hi.2, c))
            }
            for (channel, (l, h)) in [(lo.0, hi.0), (lo.1, hi.1), (lo.2, hi.2)].enumerated() {
                let p = base + channel * plane
                let mean = normalisation.mean[channel], std = normalisation.std[channel]
                // (v - l) / (h - l), or 0 for a flat channel, then (v - mean) / std.
                let scale = h > l ? 1 / ((h - l) * std) : 0, shift = h > l ? -(l / (h - l) + mean) / std : -mean / std
                for i in 0..<plane { p[i] = p[i] * scale + shift }
            }
        }
    }

    /// Eigen-decomposition of a symmetric 3 x 3 matrix (cyclic Jacobi): values and unit vectors.
    static func symmetricEigen(_ m: [[Double]]) -> ([Double], [[Double]]) {
        var a = m
        var v: [[Double]] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
        for _ in 0..<50 {
            let off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2]
            if off < 1e-22 * max(1, a[0][0] * a[0][0] + a[1][1] * a[1][1] + a[2][2] * a[2][2]) { break }
            for (p, q) in [(0, 1), (0, 2), (1, 2)] where a[p][q] != 0 {
                let theta = (a[q][q] - a[p][p]) / (2 * a[p][q])
                let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
                let c = 1 / (t * t + 1).squareRoot(), s = t * c
                for k in 0..<3 {
                    let akp = a[k][p], akq = a[k][q]
                    a[k][p] = c * akp - s * akq; a[k][q] = s * akp + c * akq
                }
                for k in 0..<3 {
                    let apk = a[p][k], aqk = a[q][k]
                    a[p][k] = c * apk - s * aqk; a[q][k] = s * apk + c * aqk
                }
                for k in 0..<3 {
                    let vkp = v[k][p], vkq = v[k][q]
                    v[k][p] = c * vkp - s * vkq; v[k][q] = s * vkp + c * vkq
                }
            }
        }
        return ([a[0][0], a[1][1], a[2][2]], (0..<3).map { j in (0..<3).map { v[$0][j] } })
    }

    /// The inverse of the 3 x 3 matrix whose columns are `columns`, as rows.
    static func invert3(_ columns: [[Double]]) -> [[Double]]? {
        let m = (0..<3).map { r in (0..<3).map { c in columns[c][r] } }
        let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        guard abs(det) > 1e-12 else { return nil }
        let inv = 1 / det
        return [
            [(m[1][1] * m[2][2] - m[1][2] * m[2][1]) * inv, (m[0][2] * m[2][1] - m[0][1] * m[2][2]) * inv, (m[0][1] * m[1][2] - m[0][2] * m[1][1]) * inv],
            [(m[1][2] * m[2][0] - m[1][0] * m[2][2]) * inv, (m[0][0] * m[2][2] - m[0][2] * m[2][0]) * inv, (m[0][2] * m[1][0] - m[0][0] * m[1][2]) * inv],
            [(m[1][0] * m[2][1] - m[1][1] * m[2][0]) * inv, (m[0][1] * m[2][0] - m[0][0] * m[2][1]) * inv, (m[0][0] * m[1][1] - m[0][1] * m[1][0]) * inv],
        ]
    }
}
