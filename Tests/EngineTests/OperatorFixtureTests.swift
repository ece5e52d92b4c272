import Foundation
import Testing
@testable import Engine

/// Operator groups (transformer block, shape subgraphs, segmentation ops, classic CNN ops,
/// fixed-batch graph) vs ONNX Runtime outputs committed by scripts/engine/make_op_fixtures.py.
@Suite struct OperatorFixtureTests {
    struct Entry: Decodable {
        let input_shape: [Int]
        let output_shapes: [[Int]]
    }

    static let names = ["transformer_block", "shape_ops", "segmentation", "classic_cnn", "fixed_batch", "batch_moves", "channel_ops",
                        "shape_conditions", "torch_lrn"]

    static func load(_ name: String) throws -> (Model, Tensor, [[Float]], Entry) {
        let index = try JSONDecoder().decode([String: Entry].self, from: Data(contentsOf: fixtureURL("ops/ops.json")))
        let entry = try #require(index[name])
        let model = try Model(contentsOf: fixtureURL("ops/\(name).onnx").path)
        let input = Tensor(shape: entry.input_shape, data: try readFloats(fixtureURL("ops/\(name).input.bin")))
        let expected = try entry.output_shapes.indices.map { try readFloats(fixtureURL("ops/\(name).out\($0).bin")) }
        return (model, input, expected, entry)
    }

    @Test(arguments: names) func matchesONNXRuntime(name: String) async throws {
        let (model, input, expected, entry) = try Self.load(name)
        #expect(model.warnings.isEmpty, "\(model.warnings)")
        for (threads, micro) in [(1, 16), (2, 1)] {
            let session = try Session(model: model, threads: threads, microBatch: micro)
            let result = try await session.run(input)
            #expect(result.outputs.map(\.shape) == entry.output_shapes)
            for (i, out) in result.outputs.enumerated() {
                #expect(relativeError(out.data, expected[i]) < 1e-4, "\(name) output \(i) threads \(threads)")
            }
        }
    }

    @Test(arguments: names.filter { $0 != "fixed_batch" }) func referenceInterpreterMatchesONNXRuntime(name: String) throws {
        let (model, input, expected, _) = try Self.load(name)
        let outputs = try model.referenceRun(input)
        for (i, out) in outputs.enumerated() {
            #expect(relativeError(out.data, expected[i]) < 1e-4, "\(name) output \(i)")
        }
    }

    @Test func fixedBatchGraphRunsImageByImage() async throws {
        let (model, input, expected, _) = try Self.load("fixed_batch")
        #expect(model.fixedBatch == 1)
        let session = try Session(model: model, threads: 2)
        // Two images (one pass each) and the three of the fixture: every image as ORT ran it alone.
        let two = Tensor(shape: [2, 3, 4, 4], data: Array(input.data.prefix(2 * 48)))
        let result = try await session.run(two)
        #expect(result.outputs[0].shape == [2, 4])
        #expect(relativeError(result.outputs[0].data, Array(expected[0].prefix(8))) < 1e-4)
        let three = try await session.run(input)
        #expect(relativeError(three.outputs[0].data, expected[0]) < 1e-4)
    }

    static let lavlab = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/data/models/lavlab-shell-v1/model_v1.onnx").path

    /// The third-party SegResNet-style segmenter (external weights, symbolic H/W, Resize,
    /// InstanceNormalization, Mish) on a real H&E crop, against ONNX Runtime's output map.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: lavlab), "../shared/data is absent"))
    func lavlabSegmenterMatchesONNXRuntime() async throws {
        #expect(throws: ModelError.self) { try Model(contentsOf: Self.lavlab) } // symbolic H/W needs a shape
        let index = try JSONDecoder().decode([String: Entry].self, from: Data(contentsOf: fixtureURL("ops/ops.json")))
        let entry = try #require(index["lavlab_tile32"])
        let model = try Model(contentsOf: Self.lavlab, inputShape: Array(entry.input_shape.dropFirst()))
        #expect(model.warnings.isEmpty, "\(model.warnings)")
        // GroupNorm (Reshape, InstanceNormalization, Reshape, Mul, Add) + Mish is one fused step,
        // Resize its own: nothing of the network is left on the reference interpreter.
        let labels = model.program.steps.map { $0.label(model.program) }
        #expect(!labels.contains { $0.hasPrefix("reference") }, "\(labels.filter { $0.hasPrefix("reference") })")
        #expect(labels.filter { $0.hasPrefix("groupnorm 8 groups") && $0.hasSuffix("mish") }.count == 25)
        #expect(labels.filter { $0.hasPrefix("resize") }.count == 3)
        let input = Tensor(shape: entry.input_shape, data: try readFloats(fixtureURL("ops/lavlab_tile32.input.bin")))
        let expected = try readFloats(fixtureURL("ops/lavlab_tile32.out0.bin"))
        let result = try await Session(model: model, threads: 2).run(input)
        #expect(result.outputs[0].shape == entry.output_shapes[0])
        #expect(relativeError(result.outputs[0].data, expected) < 1e-3)
    }

    /// The segmentation group's five Resize nodes (linear and nearest, every coordinate mode it
    /// has, scales and sizes, with and without `axes`) and its InstanceNormalization + Mish run on
    /// the engine's own steps; `matchesONNXRuntime` checks their values.
    @Test func segmentationOpsRunOnFastSteps() throws {
        let (model, _, _, _) = try Self.load("segmentation")
        let labels = model.program.steps.map { $0.label(model.program) }
        #expect(labels.filter { $0.hasPrefix("resize") }.count == 5, "\(labels)")
        #expect(labels.contains { $0.hasPrefix("groupnorm 3 groups") && $0.hasSuffix("mish") }, "\(labels)")
        #expect(!labels.contains { $0.hasPrefix("reference Resize") || $0.hasPrefix("reference InstanceNormalization")
            || $0.hasPrefix("reference Mish") }, "\(labels)")
    }

    /// Attention in torch's `[S, N, E]` layout: the graph runs image by image, the values off the
    /// batch-first layout are kept whole (`batchless`) and the output keeps the batch first.
    @Test func batchLeavingTheFirstAxisRunsImageByImage() throws {
        let (model, _, _, entry) = try Self.load("batch_moves")
        #expect(model.fixedBatch == 1)
        #expect(model.program.slots.contains { $0.batchless && $0.perImage == [5, 1, 8] })
        #expect(model.outputShapes == [Array(entry.output_shapes[0].dropFirst())])
    }

    /// Split, Slice along channels and the channel shuffle are plane copies (`channels` steps),
    /// not reference Transposes through NCHW copies.
    @Test func channelPiecesArePlaneCopies() throws {
        let (model, _, _, _) = try Self.load("channel_ops")
        let labels = model.program.steps.map { $0.label(model.program) }
        #expect(labels.filter { $0.hasPrefix("channels") }.count == 5, "\(labels)")
        #expect(!labels.contains { $0.hasPrefix("reference") }, "\(labels)")
    }

    @Test func heavyNaiveNodeGetsALoadTimeWarning() throws {
        var b = ONNXBuilder()
        b.node("LRN", ["x"], ["y"], name: "norm_big", int: ["size": 5])
        let big = try Model(data: b.data(inputShape: [64, 40, 40]))
        #expect(big.warnings.count == 1)
        #expect(big.warnings.first?.contains("'norm_big' (LRN)") == true)
        let small = try Model(data: b.data(inputShape: [8, 8, 8]))
        #expect(small.warnings.isEmpty)
    }

    @Test func batchedMatMulBroadcastsLikeNumPy() throws {
        let node = Node(name: "mm", opType: "MatMul", inputs: ["a", "b"], outputs: ["y"], attributes: [:])
        var rng = TestRNG(seed: 5)
        let a = Tensor(shape: [2, 1, 3, 4], data: rng.floats(24)), b = Tensor(shape: [3, 4, 5], data: rng.floats(60))
        let y = try Reference.matmul(node, a, b)
        #expect(y.shape == [2, 3, 3, 5])
        for i in 0..<2 { for j in 0..<3 { for r in 0..<3 { for c in 0..<5 {
            var acc: Float = 0
            for p in 0..<4 { acc += a.data[(i * 3 + r) * 4 + p] * b.data[(j * 4 + p) * 5 + c] }
            #expect(abs(y.data[((i * 3 + j) * 3 + r) * 5 + c] - acc) < 1e-5)
        } } } }
        let v = try Reference.matmul(node, Tensor(shape: [4], data: Array(a.data.prefix(4))), b)
        #expect(v.shape == [3, 5])
    }
}
