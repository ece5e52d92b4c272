/// A dense row-major float32 tensor (NCHW for images): the value type the engine takes and returns.
public struct Tensor: Sendable, Equatable {
    /// Dimensions, outermost first (e.g. `[batch, channels, height, width]`).
    public var shape: [Int]
    /// `shape.reduce(1, *)` elements, row-major.
    public var data: [Float]

    /// Wraps `data`; `data.count` must equal the product of `shape`.
    public init(shape: [Int], data: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 } && shape.reduce(1, *) == data.count,
                     "Tensor: \(data.count) values do not fill shape \(shape)")
        self.shape = shape
        self.data = data
    }

    /// A zero-filled tensor.
    public init(zeros shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    /// Number of elements.
    public var count: Int { data.count }
    /// Number of dimensions.
    public var rank: Int { shape.count }
}

/// Row-major strides of `shape`.
func rowMajorStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var s = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[i] = s
        s *= shape[i]
    }
    return strides
}

/// Formats a shape as `[1, 3, 224, 224]`, with `N` for a dynamic batch written as -1.
func describeShape(_ shape: [Int]) -> String {
    "[" + shape.map { $0 < 0 ? "N" : String($0) }.joined(separator: ", ") + "]"
}
