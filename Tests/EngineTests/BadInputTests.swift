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
