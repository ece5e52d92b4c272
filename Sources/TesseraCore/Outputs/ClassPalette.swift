import Foundation

/// Colours for class maps, safe for the common colour-vision deficiencies: Paul Tol's "muted"
/// scheme for the NCT-CRC-HE classes (tumour alone in the red family; every benign class in
/// another hue family or lightness), Okabe-Ito for other classes, and the model card's own
/// colours where it names them (`"colours": {"TUM": "#882255", ...}` or `[r, g, b]`).
public enum ClassPalette {
    public typealias RGB = (UInt8, UInt8, UInt8)

    static let known: [String: RGB] = [
        "TUM": (136, 34, 85),     // wine: the only red
        "STR": (221, 204, 119),   // sand
        "NORM": (17, 119, 51),    // green
        "MUS": (68, 170, 153),    // teal
        "LYM": (51, 34, 136),     // indigo
        "MUC": (136, 204, 238),   // cyan
        "ADI": (153, 153, 51),    // olive
        "DEB": (102, 68, 0),      // brown
        "BACK": (200, 200, 200),  // grey
    ]
    /// Okabe & Ito (2008), without black.
    static let generic: [RGB] = [
        (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
        (204, 121, 167), (120, 120, 120),
    ]

    /// The colour of class `index` named `name`.
    public static func colour(_ index: Int, name: String?) -> RGB {
        if let name, let colour = known[name] { return colour }
        return generic[index % generic.count]
    }

    /// One colour per class: the card's where it names one, else the built-in palette.
    public static func colours(for classes: [String], cardJSON: Data?) -> [RGB] {
        let named = cardColours(cardJSON)
        return classes.enumerated().map { named[$0.element] ?? colour($0.offset, name: $0.element) }
    }

    /// `#rrggbb` text of a colour.
    public static func hex(_ colour: RGB) -> String { String(format: "#%02x%02x%02x", colour.0, colour.1, colour.2) }

    /// The card's `colours` (or `colors`) object.
    static func cardColours(_ cardJSON: Data?) -> [String: RGB] {
        guard let cardJSON, let card = try? JSONSerialization.jsonObject(with: cardJSON) as? [String: Any],
              let entries = (card["colours"] ?? card["colors"]) as? [String: Any] else { return [:] }
        var colours: [String: RGB] = [:]
        for (name, value) in entries {
            if let text = value as? String, text.hasPrefix("#"), text.count == 7, let packed = UInt32(text.dropFirst(), radix: 16) {
                colours[name] = (UInt8(packed >> 16 & 255), UInt8(packed >> 8 & 255), UInt8(packed & 255))
            } else if let parts = value as? [NSNumber], parts.count == 3 {
                colours[name] = (parts[0].uint8Value, parts[1].uint8Value, parts[2].uint8Value)
            }
        }
        return colours
    }
}
