import Foundation
import Testing

/// Locations of the shared real test material and scratch space.
enum TestData {
    /// The repository root (three levels above this file).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// `../shared/data` next to the repository.
    static let shared = root.deletingLastPathComponent().appendingPathComponent("shared/data")
    /// Whether the shared material is present (tests that need it are skipped, with this reason, when not).
    static let available = FileManager.default.fileExists(atPath: shared.appendingPathComponent("slides").path)

    static func slide(_ name: String) -> String { shared.appendingPathComponent("slides/\(name)").path }
    static func odd(_ name: String) -> String { shared.appendingPathComponent("odd-inputs/\(name)").path }

    /// A fresh temporary directory.
    static func temporaryDirectory() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-tests-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Writes a binary PPM whose pixel (x, y) is (x % 256, y % 256, (x / 256 + 7 * (y / 256)) % 256).
    static func writeCoordinatePPM(width: Int, height: Int, to url: URL) throws {
        var data = Data("P6\n\(width) \(height)\n255\n".utf8)
        data.reserveCapacity(data.count + width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                data.append(contentsOf: [UInt8(x % 256), UInt8(y % 256), UInt8((x / 256 + 7 * (y / 256)) % 256)])
            }
        }
        try data.write(to: url)
    }
}

extension Trait where Self == ConditionTrait {
    /// Skips a test when `../shared/data` is absent.
    static var needsSharedData: Self {
        .enabled(if: TestData.available, "../shared/data is absent: real-slide tests skipped")
    }
}
