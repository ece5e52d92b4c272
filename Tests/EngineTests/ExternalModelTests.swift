import Foundation
import Testing
@testable import Engine

/// Env-gated check of any model against ORT outputs written by scripts/engine/check_model.py.
@Suite struct ExternalModelTests {
    static let modelPath = ProcessInfo.processInfo.environment["TESSERA_ENGINE_CHECK_MODEL"]
    static let dataDir = ProcessInfo.processInfo.environment["TESSERA_ENGINE_CHECK_DIR"]

    struct Shapes: Decodable {
        let input_shape: [Int]
        let output_shape: [Int]
    }

    @Test(.enabled(if: modelPath != nil && dataDir != nil))
    func externalModelMatchesONNXRuntime() throws {
        let dir = URL(fileURLWithPath: Self.dataDir!)
        let shapes = try JSONDecoder().decode(Shapes.self, from: Data(contentsOf: dir.appendingPathComponent("shapes.json")))
        let model = try Model(contentsOf: Self.modelPath!)
        let input = Tensor(shape: shapes.input_shape, data: try readFloats(dir.appendingPathComponent("input.bin")))
        let expected = try readFloats(dir.appendingPathComponent("output.bin"))
        for threads in [1, 2] {
            let result = try Session(model: model, threads: threads, microBatch: 1).run(input)
            let err = relativeError(result.outputs[0].data, expected)
            print("ExternalModelTests: \(Self.modelPath!) threads \(threads) relative error \(err)")
            #expect(result.outputs[0].shape == shapes.output_shape)
            #expect(err < 1e-3)
        }
    }
}
