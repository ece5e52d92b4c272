import Foundation
import Testing
@testable import Engine

@Suite struct BadInputTests {
    func tempFile(_ data: Data) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-\(UUID().uuidString).onnx").path
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func truncatedFile() throws {
        let full = try Data(contentsOf: fixtureURL("compact_cnn_32.onnx"))
        for cut in [10, full.count / 3, full.count - 7] {
            let path = try tempFile(full.prefix(cut))
            defer { try? FileManager.default.removeItem(atPath: path) }
            #expect { try Model(contentsOf: path) } throws: { error in
                guard let e = error as? ModelError else { return false }
                switch e {
                case .notONNX, .invalidTensor, .invalidGraph: return true
                default: return false
                }
            }
        }
    }

    @Test func textFileAndMissingFile() throws {
        let path = try tempFile(Data("hello, this is not a model\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: ModelError.self) { try Model(contentsOf: path) }
        do { _ = try Model(contentsOf: path) } catch { #expect("\(error)".contains("not an ONNX model")) }
        #expect(throws: ModelError.self) { try Model(contentsOf: "/nonexistent/model.onnx") }
        #expect(throws: ModelError.self) { try Model(data: Data()) }
    }

    @Test func unsupportedOperatorNamesOpAndNode() throws {
        var b = ONNXBuilder()
        b.node("Relu", ["x"], ["r"])
        b.node("LSTM", ["r"], ["y"], name: "encoder/lstm_1")
        #expect(throws: ModelError.unsupportedOperator(op: "LSTM", node: "encoder/lstm_1")) {
            try b.model(inputShape: [3, 4])
        }
        let description = ModelError.unsupportedOperator(op: "LSTM", node: "encoder/lstm_1").description
        #expect(description.contains("LSTM") && description.contains("encoder/lstm_1"))
    }

    /// An If is lowered when its condition is known at load time (a shape test); one that tests
    /// the image's pixels is a load error naming the node, and an unsupported op inside a branch
    /// is named too.
    @Test func ifNodesWhoseConditionDependsOnPixelsAreRefused() throws {
        func branch(_ op: String, _ output: String) -> Onnx_AttributeProto {
            var n = Onnx_NodeProto()
            n.opType = op
            n.name = "inner_\(op)"
            n.input = ["x"]
            n.output = [output]
            var g = Onnx_GraphProto()
            g.node = [n]
            var out = Onnx_ValueInfoProto()
            out.name = output
            g.output = [out]
            var a = Onnx_AttributeProto()
            a.type = .graph
            a.g = g
            return a
        }
        func model(then op: String) throws -> Model {
            var b = ONNXBuilder()
            b.constant("zero", [], [0])
            b.node("ReduceMean", ["x"], ["mean"], ints: ["axes": [1, 2]], int: ["keepdims": 0])
            b.node("Greater", ["mean", "zero"], ["positive"])
            b.node("If", ["positive"], ["y"], name: "pixel_test")
            var thenBranch = branch(op, "t"), elseBranch = branch("Neg", "e")
            thenBranch.name = "then_branch"
            elseBranch.name = "else_branch"
            b.nodes[b.nodes.count - 1].attribute = [thenBranch, elseBranch]
            return try b.model(inputShape: [3, 4])
        }
        do {
            _ = try model(then: "Relu")
            Issue.record("an If on the pixels loaded")
        } catch {
            #expect("\(error)".contains("pixel_test") && "\(error)".contains("depends on the image"), "\(error)")
        }
        #expect(throws: ModelError.unsupportedOperator(op: "LSTM", node: "inner_LSTM")) { try model(then: "LSTM") }
    }

    @Test func wrongInputShape() throws {
        let model = try Model(contentsOf: fixtureURL("compact_cnn_32.onnx").path)
        let session = try Session(model: model)
        #expect(throws: ModelError.inputShapeMismatch(expected: "[N, 3, 32, 32]", got: "[2, 3, 31, 32]")) {
            try session.run(Tensor(zeros: [2, 3, 31, 32]))
        }
        #expect(throws: ModelError.self) { try session.run(Tensor(zeros: [3, 32, 32])) }
        #expect(throws: ModelError.self) { try session.run(Tensor(zeros: [0, 3, 32, 32])) }
        #expect(throws: ModelError.self) { try Session(model: model, threads: 0) }
    }

    @Test func invalidNodeAttributes() throws {
        var b = ONNXBuilder()
        b.constant("w", [2, 3, 3, 3], [Float](repeating: 0.1, count: 54))
        b.node("Conv", ["x", "w"], ["y"], name: "bad_conv", ints: ["kernel_shape": [3, 3]], int: ["group": 2])
        #expect { try b.model(inputShape: [3, 8, 8]) } throws: { error in
            "\(error)".contains("bad_conv")
        }
    }
}
