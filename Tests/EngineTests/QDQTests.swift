import Foundation
import Testing
@testable import Engine

/// Quantised ONNX in: a QDQ model written by ONNX Runtime's `quantize_static` (uint8 activations,
/// int8 per-channel weights; `scripts/engine/make_qdq_fixture.py`) loads without a calibration
/// file and runs on the INT8 path, close to ONNX Runtime running the same QDQ model; on the FP32
/// path (dequantised weights, the pairs' clamps kept) close to the float model it was made from.
@Suite struct QDQTests {
    static let input = try! readFloats(fixtureURL("qdq/qdq_cnn.input.bin"))

    func run(_ precision: Precision, isa: CPUISA? = nil) throws -> (out: [Float], model: Model) {
        var options = EngineOptions()
        options.precision = precision
        options.isa = isa
        let model = try Model(contentsOf: fixtureURL("qdq/qdq_cnn.onnx").path, options: options)
        let out = try Session(model: model, threads: 2, microBatch: 3).run(Tensor(shape: [4, 3, 32, 32], data: Self.input))
        return (out.outputs[0].data, model)
    }

    @Test func runsOnTheInt8PathWithItsOwnRanges() throws {
        let (out, model) = try run(.int8)
        #expect(model.bringsCalibration)
        let int8Steps = model.program.steps.filter { step in
            switch step {
            case let .conv(c): c.q8 != nil
            case let .gemm(g): g.q8 != nil
            default: false
            }
        }.count
        #expect(int8Steps == 6, "5 convs and the Gemm on the int8 kernels: \(int8Steps)")
        let ort = try readFloats(fixtureURL("qdq/qdq_cnn.qdq_out.bin"))
        // 7-bit activations over the model's 8-bit ranges: not ONNX Runtime's bits (1.4% of the largest logit here)
        #expect(relativeError(out, ort) < 0.03, "\(relativeError(out, ort))")
        // every level the CPU runs gives the same bits
        for isa in CPUISA.allCases.filter(\.isSupported) { #expect(try run(.int8, isa: isa).out == out, "\(isa)") }
    }

    @Test func runsOnTheFP32PathCloseToTheFloatModel() throws {
        let (out, model) = try run(.fp32)
        #expect(model.bringsCalibration)
        let float = try readFloats(fixtureURL("qdq/qdq_cnn.float_out.bin"))
        #expect(relativeError(out, float) < 0.04, "\(relativeError(out, float))")
        let qdq = try readFloats(fixtureURL("qdq/qdq_cnn.qdq_out.bin"))
        #expect(relativeError(out, qdq) < 0.02, "\(relativeError(out, qdq))")
    }

    /// Codes used without DequantizeLinear, or a DequantizeLinear of a computed tensor, are refused
    /// at load, naming the node.
    @Test func refusesWhatIsNotQDQ() throws {
        var b = ONNXBuilder()
        b.constant("s", [], [0.1])
        b.node("QuantizeLinear", ["x", "s"], ["y"], name: "q0")
        #expect { try b.model(inputShape: [3, 4, 4]) } throws: { "\($0)".contains("q0") && "\($0)".contains("DequantizeLinear") }
        var c = ONNXBuilder()
        c.constant("s", [], [0.1])
        c.node("Relu", ["x"], ["r"])
        c.node("DequantizeLinear", ["r", "s"], ["y"], name: "dq0")
        #expect { try c.model(inputShape: [3, 4, 4]) } throws: { "\($0)".contains("dq0") }
    }
}
