import Foundation

/// A loaded, compiled ONNX model: immutable and `Sendable`; share one across sessions.
public struct Model: Sendable {
    let graph: Graph
    let program: Program

    /// Name of the graph input.
    public var inputName: String { graph.inputName }
    /// Per-image input shape (without the batch dimension), e.g. `[3, 224, 224]`.
    public let inputShape: [Int]
    /// Graph output names, in order.
    public var outputNames: [String] { graph.outputNames }
    /// Per-image shape of each output.
    public var outputShapes: [[Int]] { program.outputValues.map { program.slots[$0].perImage } }
    /// Per-image shape of the embedding (the input of the last Gemm/MatMul), if the model has one.
    public var embeddingShape: [Int]? { program.embeddingValue.map { program.slots[$0].perImage } }
    /// Multiply-adds x 2 of the convolutions and dense layers, per image.
    public var flopsPerImage: Double { program.flopsPerImage }
    /// The ONNX opset the model was exported with.
    public var opset: Int { graph.opset }
    /// The settings the model was compiled with.
    public var options: EngineOptions { program.options }
    /// The instruction-set level its kernels run at.
    public var isa: CPUISA { CPUISA(rawValue: Int(program.isa)) ?? .portable }
    /// Number of compiled steps (after fusion).
    public var stepCount: Int { program.steps.count }
    /// Load-time warnings: nodes that run on the naive reference interpreter with significant FLOPs.
    public var warnings: [String] { program.warnings }
    /// The batch size the graph pins (a literal batch in its input or a Reshape); batches are
    /// run in pieces of this size (the last one padded). nil when the batch is free.
    public var fixedBatch: Int? { program.fixedBatch }
    /// A QDQ model (QuantizeLinear / DequantizeLinear pairs): it brings its own INT8 activation ranges.
    public var bringsCalibration: Bool { !graph.quantizationRanges.isEmpty }

    /// Whether the ONNX file at `path` is a QDQ model, read without compiling it (false when it cannot be read).
    public static func bringsCalibration(path: String) -> Bool {
        (try? ONNXImport.load(path: path))?.quantizationRanges.isEmpty == false
    }

    /// Loads and compiles the `.onnx` file at `path`. `inputShape` (per image, e.g. `[3, 224, 224]`)
    /// is required only when the file leaves spatial dimensions symbolic.
    /// `options.precision == .int8` needs the activation ranges of ``calibrate(_:)``; layers
    /// without a range (and depthwise convolutions) stay fp32.
    public init(contentsOf path: String, inputShape: [Int]? = nil, options: EngineOptions = EngineOptions(),
                calibration: Calibration? = nil) throws {
        try self.init(graph: ONNXImport.load(path: path), inputShape: inputShape, options: options, calibration: calibration)
    }

    /// Loads and compiles serialized ONNX bytes (external data resolves against `baseDirectory`).
    public init(data: Data, baseDirectory: String? = nil, inputShape: [Int]? = nil,
                options: EngineOptions = EngineOptions(), calibration: Calibration? = nil) throws {
        try self.init(graph: ONNXImport.decode(data, baseDirectory: baseDirectory), inputShape: inputShape,
                      options: options, calibration: calibration)
    }

    init(graph: Graph, inputShape: [Int]?, options: EngineOptions, calibration given: Calibration?) throws {
        // a QDQ model brings its own activation ranges; a calibration given is used instead
        let calibration = given ?? (graph.quantizationRanges.isEmpty ? nil : Calibration(ranges: graph.quantizationRanges))
        switch options.precision {
        case .fp32: break
        case .int8:
            guard calibration != nil else {
                throw ModelError.invalidArgument("int8 needs a calibration: run `tessera models quantize MODEL --calibration DIR` first (a QDQ model brings its own)")
            }
        case .bf16: break
        case .auto:
            throw ModelError.invalidArgument("precision auto is chosen per model by the application (fp32, bf16 or int8 here)")
        }
        let declared = Array(graph.inputDims.dropFirst())
        let shape: [Int]
        if let inputShape {
            guard inputShape.count == declared.count,
                  zip(inputShape, declared).allSatisfy({ $1 == nil || $0 == $1 }), inputShape.allSatisfy({ $0 > 0 }) else {
                throw ModelError.inputShapeMismatch(expected: describeShape([-1] + declared.map { $0 ?? 0 }),
                                                    got: describeShape([-1] + inputShape))
            }
            shape = inputShape
        } else {
            guard declared.allSatisfy({ $0 != nil }) else {
                throw ModelError.invalidGraph(reason: "input '\(graph.inputName)' has symbolic non-batch dimensions; pass its per-image shape (inputShape; --input-shape C,H,W on the command line)")
            }
            shape = declared.map { $0! }
        }
        self.graph = graph
        self.inputShape = shape
        self.program = try Compiler.compile(graph, inputShape: shape, options: options, calibration: calibration)
    }

    /// The ranges of the inputs of every ungrouped convolution and dense layer, measured by running
    /// this model (compile it fp32) on the images of `input` in micro-batches of 16. Deterministic:
    /// the same images give the same ranges.
    public func calibrate(_ input: Tensor) throws -> Calibration {
        let batch = try validate(input)
        let program = self.program
        var watched: [Int: Int] = [:]
        for (i, step) in program.steps.enumerated() {
            switch step {
            case let .conv(c) where c.groups == 1 && c.kind != .depthwise: watched[i] = c.input
            case let .gemm(g): watched[i] = g.input
            // A strided 1x1 conv compiled (fp32) as a pool picking its pixels + a pointwise conv: its
            // int8 build reads the pool's input, so that is the range to record.
            case let .pool(p) where program.slots[p.output].name.hasSuffix(Compiler.stridedPixelsSuffix): watched[i] = p.input
            default: break
            }
        }
        let capacity = min(batch, 16)
        let ws = Workspace(program: program, capacity: capacity)
        var ranges: [String: [Float]] = [:]
        let perImage = inputShape.reduce(1, *)
        try input.data.withUnsafeBufferPointer { buf in
            var start = 0
            while start < batch {
                let nb = min(capacity, batch - start)
                let ex = Executor(program: program, ws: ws, nb: nb)
                try ex.run(input: buf.baseAddress! + start * perImage) { i in
                    guard let v = watched[i] else { return }
                    let p = ex.ptr(v), n = program.slots[v].count * nb
                    var lo = Float.infinity, hi = -Float.infinity
                    for j in 0..<n { lo = min(lo, p[j]); hi = max(hi, p[j]) }
                    let name = program.slots[v].name
                    if let old = ranges[name] { ranges[name] = [min(old[0], lo), max(old[1], hi)] } else { ranges[name] = [lo, hi] }
                }
                start += nb
            }
        }
        return Calibration(ranges: ranges, images: batch)
    }

    /// Checks that `tensor` is a batch of this model's inputs and returns the batch size.
    func validate(_ tensor: Tensor) throws -> Int {
        guard tensor.rank == inputShape.count + 1, Array(tensor.shape.dropFirst()) == inputShape, tensor.shape[0] > 0 else {
            throw ModelError.inputShapeMismatch(expected: describeShape([-1] + inputShape), got: describeShape(tensor.shape))
        }
        return tensor.shape[0]
    }

    /// Runs the unoptimised reference interpreter (naive ops on the original graph). For tests.
    func referenceRun(_ input: Tensor) throws -> [Tensor] {
        _ = try validate(input)
        var values = graph.constants
        values[graph.inputName] = input
        func run(_ nodes: [Node]) throws {
            for node in nodes {
                let ins: [Tensor?] = node.inputs.map { $0.isEmpty ? nil : values[$0] }
                if node.opType == "If" {
                    guard let condition = ins.first ?? nil, condition.count == 1 else { throw node.error("condition is not one value") }
                    let branch = try node.branch(condition.data[0] != 0)
                    values.merge(branch.constants) { current, _ in current }
                    try run(branch.nodes)
                    for (from, to) in zip(branch.outputNames, node.outputs) where !to.isEmpty { values[to] = values[from] }
                    continue
                }
                let outs = try Reference.evaluate(node, ins, opset: graph.opset)
                for (name, t) in zip(node.outputs, outs) where !name.isEmpty { values[name] = t }
            }
        }
        try run(graph.nodes)
        return try graph.outputNames.map {
            guard let t = values[$0] else { throw ModelError.invalidGraph(reason: "output \($0) not computed") }
            return t
        }
    }
}

/// Outputs of one batch: one tensor per graph output, plus the embedding when requested.
public struct InferenceResult: Sendable {
    /// One tensor per ``Model/outputNames`` entry, `[batch] + outputShape`.
    public var outputs: [Tensor]
    /// `[batch] + embeddingShape` when requested and the model has one.
    public var embedding: Tensor?
}
