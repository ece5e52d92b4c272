#!/usr/bin/env python3
"""Writes the QDQ fixture of Tests/EngineTests/Fixtures/qdq: a small CNN (convs with ReLU, a residual
add, a max pool, global pool, Gemm) built from numpy weights, quantised by ONNX Runtime's
quantize_static (QDQ format, uint8 activations, int8 per-channel weights) on 32 calibration images,
and the outputs of both models on 4 other images computed by ONNX Runtime:
  qdq_cnn.onnx, float_cnn.onnx, qdq_cnn.input.bin, qdq_cnn.qdq_out.bin (ORT running the QDQ model),
  qdq_cnn.float_out.bin (ORT running the float model); raw little-endian float32, input [4, 3, 32, 32].
Usage: python3 scripts/engine/make_qdq_fixture.py   (needs onnx, onnxruntime, numpy)
"""
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "Tests", "EngineTests", "Fixtures", "qdq")
RNG = np.random.default_rng(5)


def conv_w(cout, cin, k):
    return (RNG.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)


def build():
    inits, nodes = [], []

    def c(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def conv(x, y, cout, cin, k, stride=1, pad=1):
        nodes.append(helper.make_node("Conv", [x, c(y + "_w", conv_w(cout, cin, k)), c(y + "_b", RNG.standard_normal(cout) * 0.1)],
                                      [y], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))

    conv("x", "c0", 16, 3, 3)
    nodes.append(helper.make_node("Relu", ["c0"], ["r0"]))
    conv("r0", "c1", 32, 16, 3, stride=2)
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    conv("r1", "c2", 32, 32, 3)
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    conv("r2", "c3", 32, 32, 3)
    nodes.append(helper.make_node("Add", ["c3", "r1"], ["a3"]))
    nodes.append(helper.make_node("Relu", ["a3"], ["r3"]))
    nodes.append(helper.make_node("MaxPool", ["r3"], ["p3"], kernel_shape=[2, 2], strides=[2, 2]))
    conv("p3", "c4", 64, 32, 3)
    nodes.append(helper.make_node("Relu", ["c4"], ["r4"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["r4"], ["g"]))
    nodes.append(helper.make_node("Flatten", ["g"], ["f"]))
    nodes.append(helper.make_node("Gemm", ["f", c("fc_w", RNG.standard_normal((4, 64)) * 0.3), c("fc_b", RNG.standard_normal(4) * 0.1)],
                                  ["y"], transB=1))
    graph = helper.make_graph(nodes, "qdq_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class Reader(CalibrationDataReader):
    def __init__(self, images):
        self.items = iter([{"x": images[i:i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self.items, None)


def run(path, x):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def main():
    os.makedirs(OUT, exist_ok=True)
    model = build()
    float_path = os.path.join(OUT, "float_cnn.onnx")
    onnx.save(model, float_path)
    calibration = RNG.random((32, 3, 32, 32), dtype=np.float32)
    qdq_path = os.path.join(OUT, "qdq_cnn.onnx")
    with tempfile.TemporaryDirectory():
        quantize_static(float_path, qdq_path, Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    x = RNG.random((4, 3, 32, 32), dtype=np.float32)
    x.tofile(os.path.join(OUT, "qdq_cnn.input.bin"))
    run(qdq_path, x).astype(np.float32).tofile(os.path.join(OUT, "qdq_cnn.qdq_out.bin"))
    run(float_path, x).astype(np.float32).tofile(os.path.join(OUT, "qdq_cnn.float_out.bin"))
    ops = sorted({n.op_type for n in onnx.load(qdq_path).graph.node})
    print("wrote", OUT, "QDQ ops:", ops)


if __name__ == "__main__":
    main()
