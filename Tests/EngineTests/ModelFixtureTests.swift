import Foundation
import Testing
@testable import Engine

/// Whole models vs ONNX Runtime outputs committed by scripts/engine/make_fixtures.py.
@Suite(.serialized) struct ModelFixtureTests {
    struct Entry: Decodable {
        let input_shape: [Int]
        let output_shape: [Int]
    }

    static let names = ["resnet18_w8_64", "mobilenetv2_w025_64", "compact_cnn_32", "mixed_ops_24"]

    @Test(arguments: names) func matchesONNXRuntime(name: String) async throws {
        let index = try JSONDecoder().decode([String: Entry].self, from: Data(contentsOf: fixtureURL("models.json")))
        let entry = try #require(index[name])
        let model = try Model(contentsOf: fixtureURL("\(name).onnx").path)
        let input = Tensor(shape: entry.input_shape, data: try readFloats(fixtureURL("\(name).input.bin")))
        let expected = try readFloats(fixtureURL("\(name).output.bin"))
        for (threads, micro) in [(1, 16), (2, 1), (2, 16)] { // (2, 16): one micro-batch split inside each step
            let session = try Session(model: model, threads: threads, microBatch: micro)
            let result = try await session.run(input, embedding: true)
            #expect(result.outputs[0].shape == entry.output_shape)
            #expect(relativeError(result.outputs[0].data, expected) < 1e-3, "\(name) threads \(threads)")
            let emb = try #require(result.embedding)
            #expect(emb.shape.first == entry.input_shape[0])
        }
    }

    @Test func embeddingFeedsTheHead() throws {
        let model = try Model(contentsOf: fixtureURL("compact_cnn_32.onnx").path)
        #expect(model.embeddingShape == [32])
        #expect(model.flopsPerImage > 0)
        let session = try Session(model: model)
        let input = Tensor(shape: [3, 3, 32, 32], data: try readFloats(fixtureURL("compact_cnn_32.input.bin")))
        let withEmbedding = try session.run(input, embedding: true)
        let without = try session.run(input)
        #expect(without.embedding == nil)
        #expect(withEmbedding.outputs == without.outputs)
        #expect(withEmbedding.embedding?.shape == [3, 32])
    }
}
