"""Count multiply-accumulates (MACs) of an ONNX classifier for one image.

Counts Conv (incl. grouped/depthwise) and Gemm/MatMul; everything else
(BN, activations, pooling, adds) is ignored, which is the usual convention.
"""
import onnx
from onnx import shape_inference


def count_macs_onnx(path_or_model, size, channels=3):
    m = onnx.load(path_or_model) if isinstance(path_or_model, str) else path_or_model
    # pin the batch/spatial dims so shape inference gives concrete shapes
    inp = m.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    for d, v in zip(dims, [1, channels, size, size]):
        d.ClearField("dim_param")
        d.dim_value = v
    m = shape_inference.infer_shapes(m)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    total = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]  # [Cout, Cin/g, kh, kw]
            out = shapes[n.output[0]]  # [1, Cout, H, W]
            total += out[1] * out[2] * out[3] * w[1] * w[2] * w[3]
        elif n.op_type in ("Gemm", "MatMul"):
            w = inits.get(n.input[1])
            if w is not None:
                total += w[0] * w[1]
    return total


if __name__ == "__main__":
    import sys
    print(count_macs_onnx(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 224))
