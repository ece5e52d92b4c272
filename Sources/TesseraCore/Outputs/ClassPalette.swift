/// Colours for class maps: fixed for the NCT-CRC-HE classes, a generic palette otherwise.
public enum ClassPalette {
    static let known: [String: (UInt8, UInt8, UInt8)] = [
        "ADI": (245, 215, 110), "BACK": (190, 190, 190), "DEB": (140, 90, 50), "LYM": (110, 60, 180),
        "MUC": (120, 190, 230), "MUS": (220, 70, 70), "NORM": (60, 170, 80), "STR": (240, 150, 50),
        "TUM": (150, 0, 40),
    ]
    static let generic: [(UInt8, UInt8, UInt8)] = [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
        (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    ]

    /// The colour of class `index` named `name`.
    public static func colour(_ index: Int, name: String?) -> (UInt8, UInt8, UInt8) {
        if let name, let colour = known[name] { return colour }
        return generic[index % generic.count]
    }
}
