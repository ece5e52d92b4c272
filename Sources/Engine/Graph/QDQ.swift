import Foundation

/// Quantised ONNX in (QDQ, as ONNX Runtime's `quantize_static` writes it): `QuantizeLinear` ->
/// `DequantizeLinear` pairs around activations, `DequantizeLinear` of int8 / int32 initializers for
/// weights and biases. At load the weight and bias DequantizeLinear nodes are folded into fp32
/// constants, and each activation pair becomes a Clip to the range the pair can represent,
/// `[(qmin - zp) * s, (qmax - zp) * s]`, its consumers reading the clipped float tensor; that range
/// is recorded as the clipped tensor's INT8 calibration (``Graph/quantizationRanges``), so the model runs on Tessera's INT8
/// path (7-bit activations over that range, the weights requantised per output channel: the same
/// integers where the model's weights are symmetric per channel) without a calibration file, and
/// on the FP32 path with its dequantised weights.
enum QDQ {
    static let ops: Set<String> = ["QuantizeLinear", "DequantizeLinear"]

    static func strip(_ graph: inout Graph, elementTypes: [String: Int]) throws {
        // Branches are not rewritten: their nodes could read a renamed tensor or hold Q/DQ pairs.
        if let branching = graph.nodes.first(where: { $0.opType == "If" }) {
            throw branching.error("If in a quantised (QDQ) model is not supported")
        }
        var consumers: [String: [Node]] = [:]
        for node in graph.nodes { for input in node.inputs where !input.isEmpty { consumers[input, default: []].append(node) } }
        let outputs = Set(graph.outputNames)
        /// (scale, zero point, qmin, qmax) of a Q/DQ node's constant scalar parameters.
        func parameters(_ node: Node) throws -> (s: Float, zp: Float, qmin: Float, qmax: Float) {
            guard let sName = node.input(1), let s = graph.constants[sName], s.data.count == 1 else {
                throw node.error("an activation's scale must be one constant value (per-tensor)")
            }
            var zp: Float = 0, type = 2
            if let zName = node.input(2) {
                guard let z = graph.constants[zName], z.data.count == 1 else {
                    throw node.error("an activation's zero point must be one constant value")
                }
                zp = z.data[0]
                type = elementTypes[zName] ?? 2
            }
            switch type {
            case 2: return (s.data[0], zp, 0, 255)
            case 3: return (s.data[0], zp, -128, 127)
            default: throw node.error("zero point of element type \(type): only uint8 and int8 are supported")
            }
        }
        var rename: [String: String] = [:]
        var kept: [Node] = []
        for node in graph.nodes {
            switch node.opType {
            case "DequantizeLinear":
                guard let x = node.input(0) else { throw node.error("no input") }
                if let q = graph.constants[x] {
                    // weights / bias: fold to fp32, per tensor or per slice along `axis`
                    guard let sName = node.input(1), let s = graph.constants[sName] else { throw node.error("scale must be constant") }
                    let z = node.input(2).flatMap { graph.constants[$0] }
                    var axis = node.int("axis", 1)
                    if axis < 0 { axis += q.shape.count }
                    let channels = s.data.count
                    guard channels == 1 || (axis < q.shape.count && q.shape[axis] == channels), z == nil || z!.data.count == channels else {
                        throw node.error("scale of \(channels) values does not match axis \(axis) of \(q.shape)")
                    }
                    let inner = channels == 1 ? 1 : q.shape[(axis + 1)...].reduce(1, *)
                    let data = q.data.indices.map { i -> Float in
                        let c = channels == 1 ? 0 : (i / inner) % channels
                        return (q.data[i] - (z?.data[c] ?? 0)) * s.data[c]
                    }
                    graph.constants[node.outputs[0]] = Tensor(shape: q.shape, data: data)
                } else if let source = rename[x] {
                    rename[node.outputs[0]] = source
                } else {
                    throw node.error("dequantises '\(x)', which is neither a constant nor a QuantizeLinear output")
                }
            case "QuantizeLinear":
                guard let x = node.input(0), let y = node.outputs.first else { throw node.error("no input") }
                guard !outputs.contains(y), (consumers[y] ?? []).allSatisfy({ $0.opType == "DequantizeLinear" }) else {
                    throw node.error("its codes are used without DequantizeLinear; only QDQ models (QuantizeLinear -> DequantizeLinear) are supported")
                }
                let p = try parameters(node)
                for dq in consumers[y] ?? [] {
                    let d = try parameters(dq)
                    guard d.s == p.s, d.zp == p.zp else { throw dq.error("scale or zero point differs from its QuantizeLinear") }
                }
                // The pair saturates at the range it can represent (ONNX Runtime drops a ReLU before it,
                // the range starting at 0 does its work): a Clip to that range keeps this, and fuses into
                // the producing layer's epilogue.
                let range = [(p.qmin - p.zp) * p.s, (p.qmax - p.zp) * p.s]
                let clipped = y + "::qdq"
                graph.constants[clipped + ".min"] = Tensor(shape: [], data: [range[0]])
                graph.constants[clipped + ".max"] = Tensor(shape: [], data: [range[1]])
                kept.append(Node(name: node.name, opType: "Clip", inputs: [rename[x] ?? x, clipped + ".min", clipped + ".max"],
                                 outputs: [clipped], attributes: ["min": .float(range[0]), "max": .float(range[1])]))  // opset 10 reads these
                graph.quantizationRanges[clipped] = range
                rename[y] = clipped
            default:
                var n = node
                n.inputs = n.inputs.map { rename[$0] ?? $0 }
                kept.append(n)
            }
        }
        graph.nodes = kept
        graph.outputNames = graph.outputNames.map { rename[$0] ?? $0 }
    }
}
