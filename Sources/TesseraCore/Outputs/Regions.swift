import Foundation

/// regions.geojson: one QuPath annotation per class, the union of its tiles' cells as a
/// MultiPolygon (outlines traced on the grid, holes kept) with its area in mm². For a
/// segmentation model the cells are blocks of its class map (``SegmentationMap/cell`` pixels
/// square, each the class most of its pixels have) and the area counts the map's pixels.
enum Regions {
    struct Point: Hashable { var x: Int, y: Int }

    static func write(_ inputs: OutputInputs, to path: String) throws {
        let names = JobOutputs.classNames(inputs)
        var cells = [[Point]](repeating: [], count: names.count)
        if let map = inputs.segmentation {
            // A segmentation map: the union of its blocks per class; areas count the map's pixels.
            for y in 0..<map.cellsHigh { for x in 0..<map.cellsWide {
                let value = Int(map.cells[y * map.cellsWide + x])
                if value > 0 && value <= names.count { cells[value - 1].append(Point(x: x, y: y)) }
            } }
            let pixelArea = map.mpp.map { pow($0 / 1000, 2) }
            let analysed = max(1, map.classPixels.reduce(0, +))
            try write(cells: cells, names: names, inputs: inputs, step: Double(map.cell) * map.downsample, to: path) { index in
                let pixels = index < map.classPixels.count ? map.classPixels[index] : 0
                let area = pixelArea.map { String(format: "%.6f", Double(pixels) * $0) } ?? "null"
                return "\"area_mm2\":\(area),\"pixels\":\(pixels),\"pixel_share\":" + String(format: "%.6f", Double(pixels) / Double(analysed))
            }
            return
        }
        for (index, tile) in inputs.grid.tiles.enumerated() where index < inputs.scores.count {
            cells[JobOutputs.argmax(inputs.scores[index])].append(Point(x: tile.column, y: tile.row))
        }
        try write(cells: cells, names: names, inputs: inputs, step: inputs.levelZeroStep, to: path) { index in
            let count = cells[index].count
            let area = inputs.cellAreaMM2.map { String(format: "%.6f", Double(count) * $0) } ?? "null"
            let share = String(format: "%.6f", Double(count) / Double(max(1, inputs.scores.count)))
            return "\"area_mm2\":\(area),\"tiles\":\(count),\"tile_share\":\(share)"
        }
    }

    /// One annotation per class with cells: `step` level-0 pixels per cell, `measurements` the
    /// JSON members of the class's measurements object.
    static func write(cells: [[Point]], names: [String], inputs: OutputInputs, step: Double, to path: String,
                      measurements: (Int) -> String) throws {
        let colours = JobOutputs.colours(inputs)
        var features: [String] = []
        for (index, name) in names.enumerated() where !cells[index].isEmpty {
            let polygons = outline(cells[index]).map { rings in
                "[" + rings.map { ring in
                    "[" + (ring + [ring[0]]).map { "[\(coordinate($0.x, step)),\(coordinate($0.y, step))]" }.joined(separator: ",") + "]"
                }.joined(separator: ",") + "]"
            }
            let colour = colours[index]
            features.append("{\"type\":\"Feature\",\"id\":\"\(Provenance.uuid(inputs, "region", index))\",\"geometry\":"
                + "{\"type\":\"MultiPolygon\",\"coordinates\":[\(polygons.joined(separator: ","))]},\"properties\":"
                + "{\"objectType\":\"annotation\",\"name\":\"\(name)\",\"classification\":{\"name\":\"\(name)\",\"color\":"
                + "[\(colour.0),\(colour.1),\(colour.2)]},\"measurements\":{\(measurements(index))}}}")
        }
        try ("{\"type\":\"FeatureCollection\",\"features\":[" + features.joined(separator: ",") + "]}\n")
            .write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// A grid coordinate in level-0 pixels, as short as exact.
    static func coordinate(_ value: Int, _ step: Double) -> String {
        let pixels = Double(value) * step
        return pixels == pixels.rounded() ? String(Int(pixels)) : String(format: "%.2f", pixels)
    }

    /// The union of unit cells as polygons, each an outer ring followed by its holes, in grid
    /// corner coordinates. Cells that touch only at a corner stay separate polygons.
    static func outline(_ cells: [Point]) -> [[[Point]]] {
        let occupied = Set(cells)
        // Directed boundary edges with the region on their right (y grows downwards).
        var outgoing: [Point: [Point]] = [:]
        func add(_ a: Point, _ b: Point) { outgoing[a, default: []].append(b) }
        for cell in cells {
            let (x, y) = (cell.x, cell.y)
            if !occupied.contains(Point(x: x, y: y - 1)) { add(Point(x: x, y: y), Point(x: x + 1, y: y)) }
            if !occupied.contains(Point(x: x + 1, y: y)) { add(Point(x: x + 1, y: y), Point(x: x + 1, y: y + 1)) }
            if !occupied.contains(Point(x: x, y: y + 1)) { add(Point(x: x + 1, y: y + 1), Point(x: x, y: y + 1)) }
            if !occupied.contains(Point(x: x - 1, y: y)) { add(Point(x: x, y: y + 1), Point(x: x, y: y)) }
        }
        var rings: [[Point]] = []
        let starts = outgoing.keys.sorted { ($0.y, $0.x) < ($1.y, $1.x) }
        for start in starts {
            while let first = outgoing[start]?.first {
                var ring = [start]
                take(start, first, &outgoing)
                var previous = start, current = first
                while current != start {
                    ring.append(current)
                    let direction = (current.x - previous.x, current.y - previous.y)
                    // Turn right first (towards the region), so corner-touching cells separate.
                    let turns = [(-direction.1, direction.0), direction, (direction.1, -direction.0)]
                    let options = outgoing[current] ?? []
                    guard let next = turns.lazy.map({ Point(x: current.x + $0.0, y: current.y + $0.1) })
                        .first(where: options.contains) else { break }
                    take(current, next, &outgoing)
                    previous = current
                    current = next
                }
                rings.append(simplified(ring))
            }
        }
        // Positive shoelace area (y down, region on the right) = outer ring; negative = hole.
        let outers = rings.filter { signedArea($0) > 0 }
        var polygons = outers.map { [$0] }
        for hole in rings where signedArea(hole) < 0 {
            // A point just inside the region next to the hole's first edge lies in its outer ring only.
            let a = hole[0], dx = (hole[1].x - a.x).signum(), dy = (hole[1].y - a.y).signum()
            let probe = (Double(a.x) + 0.5 * Double(dx) - 0.25 * Double(dy), Double(a.y) + 0.5 * Double(dy) + 0.25 * Double(dx))
            if let owner = outers.firstIndex(where: { contains($0, probe) }) { polygons[owner].append(hole) }
        }
        return polygons
    }

    private static func take(_ from: Point, _ to: Point, _ outgoing: inout [Point: [Point]]) {
        guard var list = outgoing[from], let position = list.firstIndex(of: to) else { return }
        list.remove(at: position)
        outgoing[from] = list.isEmpty ? nil : list
    }

    /// Drops corners where the ring goes straight on.
    static func simplified(_ ring: [Point]) -> [Point] {
        guard ring.count > 3 else { return ring }
        var kept: [Point] = []
        for (index, point) in ring.enumerated() {
            let before = ring[(index + ring.count - 1) % ring.count], after = ring[(index + 1) % ring.count]
            let cross = (point.x - before.x) * (after.y - point.y) - (point.y - before.y) * (after.x - point.x)
            if cross != 0 { kept.append(point) }
        }
        return kept
    }

    static func signedArea(_ ring: [Point]) -> Int {
        var sum = 0
        for index in ring.indices {
            let a = ring[index], b = ring[(index + 1) % ring.count]
            sum += a.x * b.y - b.x * a.y
        }
        return sum / 2
    }

    /// Even-odd ray cast.
    static func contains(_ ring: [Point], _ point: (Double, Double)) -> Bool {
        var inside = false
        for index in ring.indices {
            let a = ring[index], b = ring[(index + 1) % ring.count]
            let (ax, ay, bx, by) = (Double(a.x), Double(a.y), Double(b.x), Double(b.y))
            if (ay > point.1) != (by > point.1), point.0 < (bx - ax) * (point.1 - ay) / (by - ay) + ax { inside.toggle() }
        }
        return inside
    }
}
