import Foundation
import SlideIO

/// heatmap.png, overlay.png and confidence.png: the slide's thumbnail geometry (one thumbnail
/// pixel = the same slide area in all three) and, to its right, a panel with the slide name,
/// what the picture shows, the legend (class colours with each class's share of the tissue
/// tiles, or the confidence scale) and a scale bar in mm. All three have the same size.
enum SlidePictures {
    static let panelWidth = 260
    static let margin = 14
    static let ink: ClassPalette.RGB = (20, 20, 20)
    static let bold = "DejaVu Sans Bold 15"
    static let small = "DejaVu Sans 12"

    static func write(_ inputs: OutputInputs, summary: JobSummary, directory: String) throws {
        let mask = inputs.mask
        let names = JobOutputs.classNames(inputs)
        let colours = JobOutputs.colours(inputs)
        let cells = tileIndexPerPixel(inputs)
        // The summary's class fractions: of tissue tiles, or of a segmentation map's pixels.
        let shares = names.map { summary.classFractions[$0] ?? 0 }
        // A segmentation map colours each thumbnail pixel by its map block.
        let segmented = inputs.segmentation.map { classPerPixel($0, mask: inputs.mask) }
        let title = Picture.Text(inputs.slideName, x: mask.width + margin, y: margin, colour: ink, font: bold,
                                 wrap: panelWidth - 2 * margin)
        let titleHeight = (try? Picture.size(of: title).height) ?? 18
        let listTop = margin + titleHeight + 44
        let height = max(mask.height, listTop + 22 * names.count + 90)
        let width = mask.width + panelWidth

        func canvas(_ what: String) -> Picture {
            var picture = Picture(width: width, height: height)
            picture.fill(x: mask.width, y: 0, width: 1, height: height, colour: (170, 170, 170))
            picture.add(title)
            picture.add(Picture.Text(what + " · " + inputs.modelName, x: mask.width + margin, y: margin + titleHeight + 8,
                                     colour: (90, 90, 90), font: small, wrap: panelWidth - 2 * margin))
            addScaleBar(&picture, inputs)
            return picture
        }
        func classLegend(_ picture: inout Picture) {
            for (index, name) in names.enumerated() {
                let y = listTop + 22 * index
                picture.fill(x: mask.width + margin, y: y, width: 16, height: 16, colour: (60, 60, 60))
                picture.fill(x: mask.width + margin + 1, y: y + 1, width: 14, height: 14, colour: colours[index])
                picture.add(Picture.Text(name + String(format: "   %.1f %%", 100 * shares[index]), x: mask.width + margin + 26,
                                         y: y + 1, colour: ink, font: small))
            }
        }

        // Class map on white, tissue that was not analysed in light grey.
        var heatmap = canvas(segmented == nil ? "most likely class, share of tissue tiles" : "class map, share of analysed pixels")
        var overlay = canvas(segmented == nil ? "most likely class over the slide" : "class map over the slide")
        var confidence = canvas(segmented == nil ? "probability of the most likely class"
                                : "share of each tile's most frequent class")
        let count = mask.width * mask.height
        let white = [UInt8](repeating: 255, count: count * 3)
        var map = white, blend = mask.thumbnail, sure = white
        let best = inputs.scores.map { JobOutputs.argmax($0) }
        let ramp = (0...255).map { cividis(Double($0) / 255) }
        map.withUnsafeMutableBufferPointer { map in
            blend.withUnsafeMutableBufferPointer { blend in
                sure.withUnsafeMutableBufferPointer { sure in
                    for pixel in 0..<count {
                        let i = 3 * pixel, index = Int(cells[pixel])
                        let klass: Int? = segmented.map { $0[pixel] > 0 ? min(colours.count, Int($0[pixel])) - 1 : nil }
                            ?? (index >= 0 ? best[index] : nil)
                        if let klass {
                            let colour = colours[klass]
                            (map[i], map[i + 1], map[i + 2]) = colour
                            blend[i] = UInt8((Int(blend[i]) * 45 + Int(colour.0) * 55 + 50) / 100)
                            blend[i + 1] = UInt8((Int(blend[i + 1]) * 45 + Int(colour.1) * 55 + 50) / 100)
                            blend[i + 2] = UInt8((Int(blend[i + 2]) * 45 + Int(colour.2) * 55 + 50) / 100)
                        } else if mask.pixels[pixel] == 1 {
                            (map[i], map[i + 1], map[i + 2]) = (232, 232, 232)
                        }
                        if index >= 0 {
                            (sure[i], sure[i + 1], sure[i + 2]) = ramp[Int((min(1, max(0, inputs.scores[index][best[index]])) * 255).rounded())]
                        } else {
                            let grey = (Int(mask.thumbnail[i]) + Int(mask.thumbnail[i + 1]) + Int(mask.thumbnail[i + 2])) / 3
                            let faded = UInt8(255 - (255 - grey) / 4)
                            (sure[i], sure[i + 1], sure[i + 2]) = (faded, faded, faded)
                        }
                    }
                }
            }
        }
        heatmap.paste(map, width: mask.width, height: mask.height, x: 0, y: 0)
        overlay.paste(blend, width: mask.width, height: mask.height, x: 0, y: 0)
        confidence.paste(sure, width: mask.width, height: mask.height, x: 0, y: 0)
        classLegend(&heatmap)
        classLegend(&overlay)
        addConfidenceScale(&confidence, top: listTop, left: mask.width + margin)
        try heatmap.writePNG(to: directory + "/heatmap.png")
        try overlay.writePNG(to: directory + "/overlay.png")
        try confidence.writePNG(to: directory + "/confidence.png")
    }

    /// For each thumbnail pixel, the segmentation map's value (class + 1, 0 = not analysed) of
    /// the map block under its centre.
    static func classPerPixel(_ map: SegmentationMap, mask: TissueMask) -> [UInt8] {
        var values = [UInt8](repeating: 0, count: mask.width * mask.height)
        let perBlock = Double(map.cell) * map.downsample
        guard perBlock > 0, map.cellsWide > 0 else { return values }
        let columnOf = (0..<mask.width).map { Int((Double($0) + 0.5) * mask.downsampleX / perBlock) }
        for y in 0..<mask.height {
            let row = Int((Double(y) + 0.5) * mask.downsampleY / perBlock)
            guard row < map.cellsHigh else { continue }
            for x in 0..<mask.width where columnOf[x] < map.cellsWide {
                values[y * mask.width + x] = map.cells[row * map.cellsWide + columnOf[x]]
            }
        }
        return values
    }

    /// For each thumbnail pixel, the index of the tile whose cell holds its centre, or -1.
    static func tileIndexPerPixel(_ inputs: OutputInputs) -> [Int32] {
        let mask = inputs.mask, grid = inputs.grid
        let step = inputs.levelZeroStep
        let columns = max(1, grid.columns)
        var byCell = [Int32](repeating: -1, count: columns * max(1, grid.rows))
        for (index, tile) in grid.tiles.enumerated() where index < inputs.scores.count {
            byCell[tile.row * columns + tile.column] = Int32(index)
        }
        var cells = [Int32](repeating: -1, count: mask.width * mask.height)
        guard step > 0 else { return cells }
        let columnOf = (0..<mask.width).map { Int((Double($0) + 0.5) * mask.downsampleX / step) }
        cells.withUnsafeMutableBufferPointer { cells in
            for y in 0..<mask.height {
                let row = Int((Double(y) + 0.5) * mask.downsampleY / step)
                guard row < grid.rows else { continue }
                for x in 0..<mask.width where columnOf[x] < grid.columns {
                    cells[y * mask.width + x] = byCell[row * columns + columnOf[x]]
                }
            }
        }
        return cells
    }

    /// A bar of a round number of mm (or µm) at the thumbnail's scale, at the panel's bottom.
    static func addScaleBar(_ picture: inout Picture, _ inputs: OutputInputs) {
        let left = inputs.mask.width + margin, bottom = picture.height - margin
        guard let mpp = inputs.slideMPP, mpp > 0 else {
            picture.add(Picture.Text("no scale: the slide has no MPP", x: left, y: bottom - 16, colour: ink, font: small))
            return
        }
        let pixelsPerMM = 1000 / (mpp * inputs.mask.downsampleX)
        let room = Double(panelWidth - 2 * margin)
        let lengths = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]
        let length = lengths.last { $0 * pixelsPerMM <= room } ?? lengths[0]
        let bar = max(1, Int((length * pixelsPerMM).rounded()))
        picture.fill(x: left, y: bottom - 6, width: bar, height: 6, colour: ink)
        picture.fill(x: left, y: bottom - 12, width: 2, height: 12, colour: ink)
        picture.fill(x: left + bar - 2, y: bottom - 12, width: 2, height: 12, colour: ink)
        let label = length >= 1 ? String(format: "%g mm", length) : String(format: "%g µm", length * 1000)
        picture.add(Picture.Text(label, x: left, y: bottom - 32, colour: ink, font: small))
    }

    /// The colour ramp of confidence.png with its ticks.
    static func addConfidenceScale(_ picture: inout Picture, top: Int, left: Int) {
        let length = panelWidth - 2 * margin
        for offset in 0..<length {
            picture.fill(x: left + offset, y: top, width: 1, height: 18, colour: cividis(Double(offset) / Double(length - 1)))
        }
        for (tick, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
            let x = left + Int(tick * Double(length - 1))
            picture.fill(x: min(x, left + length - 2), y: top + 18, width: 2, height: 5, colour: ink)
            picture.add(Picture.Text(label, x: max(left, min(x - 6, left + length - 14)), y: top + 26, colour: ink, font: small))
        }
        picture.add(Picture.Text("pale: tissue not analysed", x: left, y: top + 50, colour: (90, 90, 90), font: small))
    }

    /// Cividis (Nuñez et al. 2018), a ramp readable with colour-vision deficiencies, at 0...1.
    static func cividis(_ t: Double) -> ClassPalette.RGB {
        let stops: [(Double, Double, Double)] = [(0, 34, 78), (59, 73, 108), (124, 123, 120), (188, 175, 111), (253, 231, 55)]
        let position = min(1, max(0, t)) * Double(stops.count - 1)
        let low = min(stops.count - 2, Int(position)), fraction = position - Double(low)
        let a = stops[low], b = stops[low + 1]
        return (UInt8((a.0 + (b.0 - a.0) * fraction).rounded()), UInt8((a.1 + (b.1 - a.1) * fraction).rounded()),
                UInt8((a.2 + (b.2 - a.2) * fraction).rounded()))
    }
}
