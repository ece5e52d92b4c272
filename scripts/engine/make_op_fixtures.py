#!/usr/bin/env python3
"""Writes the operator fixtures of Tests/EngineTests/Fixtures/ops (small hand-built ONNX graphs).

Each graph covers a group of operators labs' models bring (transformer shape subgraphs,
batched MatMul, LayerNormalization, ConvTranspose, Resize modes, LRN, ...). For each:
<name>.onnx, <name>.input.bin and <name>.out<i>.bin (raw little-endian float32, outputs
computed by ONNX Runtime with graph optimisations off), shapes in ops.json.
Usage: python3 scripts/engine/make_op_fixtures.py   (needs onnx, onnxruntime, numpy)
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "Tests", "EngineTests", "Fixtures", "ops")
RNG = np.random.default_rng(11)


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def i64(values):
    return np.array(values, dtype=np.int64)


class G:
    """A tiny graph builder: one float input 'x' with a symbolic (or fixed) batch."""

    def __init__(self, shape, batch="N"):
        self.shape, self.batch = shape, batch
        self.nodes, self.inits, self.outputs, self.n = [], [], [], 0

    def c(self, value):
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type, inputs, outputs=1, **attrs):
        self.n += 1
        outs = [f"{op_type.lower()}{self.n}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self.n}", **attrs))
        return outs[0] if outputs == 1 else outs

    def out(self, *names):
        self.outputs += names

    def model(self, opset):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [self.batch] + self.shape)
        outs = [helper.make_empty_tensor_value_info(n) for n in self.outputs]
        g = helper.make_graph(self.nodes, "ops", [x], outs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        return m


def transformer_block():
    """ViT-like: class token expanded by the input's batch, attention as batched MatMuls,
    Softmax on the last axis, LayerNormalization, Gelu (erf), Split, Where/Equal on shapes."""
    g = G([6, 8])
    n = g.op("Gather", [g.op("Shape", ["x"]), g.c(i64([0]))], axis=0)
    shape = g.op("Concat", [n, g.c(i64([1, 8]))], axis=0)
    # The legacy exporter's expand(-1): Where(Equal(shape, -1), ones, shape).
    fixed = g.op("Where", [g.op("Equal", [shape, g.c(i64([-1, -1, -1]))]), g.c(i64([1, 1, 1])), shape])
    cls = g.op("Expand", [g.c(f32(1, 1, 8)), fixed])
    t = g.op("Concat", [cls, "x"], axis=1)  # [N, 7, 8]
    ln = g.op("LayerNormalization", [t, g.c(f32(8) + 1), g.c(f32(8))], axis=-1, epsilon=1e-6)
    qkv = g.op("MatMul", [ln, g.c(f32(8, 24, scale=0.3))])
    q, k, v = g.op("Split", [qkv, g.c(i64([8, 8, 8]))], outputs=3, axis=2)
    def heads(a):  # [N, 7, 8] -> [N, 2, 7, 4]
        return g.op("Transpose", [g.op("Reshape", [a, g.c(i64([0, 7, 2, 4]))])], perm=[0, 2, 1, 3])
    scores = g.op("Div", [g.op("MatMul", [heads(q), g.op("Transpose", [heads(k)], perm=[0, 1, 3, 2])]), g.c(np.float32(2))])
    att = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), heads(v)])
    merged = g.op("Reshape", [g.op("Transpose", [att], perm=[0, 2, 1, 3]), g.c(i64([0, 7, 8]))])
    h = g.op("Add", [t, merged])
    mlp = g.op("Gelu", [g.op("Add", [g.op("MatMul", [h, g.c(f32(8, 16, scale=0.3))]), g.c(f32(16))])])
    y = g.op("Add", [h, g.op("MatMul", [mlp, g.c(f32(16, 8, scale=0.3))])])
    first = g.op("Squeeze", [g.op("Slice", [y, g.c(i64([0])), g.c(i64([1])), g.c(i64([1]))]), g.c(i64([1]))])
    g.out(first, g.op("Softmax", [y, ], axis=1))
    return g.model(20), f32(3, 6, 8)


def shape_ops():
    """Shape-computing subgraphs folded at load: Range, Mod, Not, ScatterND, Unsqueeze, Tile,
    Gather with a computed index; Max/Min/Sum/Mean of several inputs; Pow/Sqrt/Sub broadcast."""
    g = G([4, 6])
    r = g.op("Range", [g.c(np.int64(0)), g.c(np.int64(6)), g.c(np.int64(1))])
    rolled = g.op("Mod", [g.op("Add", [r, g.c(np.int64(2))]), g.c(np.int64(6))])
    perm = g.op("Gather", ["x", rolled], axis=2)
    mask = g.op("Cast", [g.op("Not", [g.op("Equal", [g.op("Mod", [r, g.c(np.int64(2))]), g.c(np.int64(0))])])], to=1)
    scattered = g.op("ScatterND", [g.c(np.ones((4, 6), np.float32)), g.c(i64([[1], [3]])), g.c(f32(2, 6))])
    a = g.op("Mul", [perm, g.op("Add", [mask, scattered])])
    tiled = g.op("Tile", [g.op("Unsqueeze", [g.c(f32(6)), g.c(i64([0]))]), g.c(i64([4, 1]))])
    m = g.op("Max", [a, "x", tiled])
    s = g.op("Sum", [g.op("Min", ["x", tiled]), m, g.c(f32(6))])
    mean = g.op("Mean", [s, "x"])
    p = g.op("Pow", [g.op("Sqrt", [g.op("Add", [g.op("Abs", [mean]), g.c(np.float32(1))])]), g.c(np.float32(3))])
    y = g.op("Sub", [g.c(f32(4, 1)), g.op("Div", [p, g.c(np.float32(1.5) + np.abs(f32(6)))])])
    g.out(y)
    return g.model(17), f32(2, 4, 6)


def segmentation():
    """U-Net / SegResNet pieces: ConvTranspose (stride 2, k 2; k 3 with pads and output_padding;
    grouped), Resize linear (half_pixel, align_corners, pytorch_half_pixel) and nearest
    (asymmetric floor, half_pixel round_prefer_floor), InstanceNormalization, Mish, Pad."""
    g = G([4, 6, 7])
    up1 = g.op("ConvTranspose", ["x", g.c(f32(4, 3, 2, 2, scale=0.5)), g.c(f32(3))], strides=[2, 2])
    up2 = g.op("ConvTranspose", ["x", g.c(f32(4, 3, 3, 3, scale=0.5))], strides=[2, 2], pads=[1, 1, 1, 1],
               output_padding=[1, 1])
    up3 = g.op("ConvTranspose", ["x", g.c(f32(4, 2, 3, 3, scale=0.5)), g.c(f32(4))], group=2, pads=[1, 1, 1, 1])
    s2 = g.c(np.array([1, 1, 2, 2], np.float32))
    r1 = g.op("Resize", ["x", "", s2], mode="linear", coordinate_transformation_mode="half_pixel")
    r2 = g.op("Resize", ["x", "", "", g.c(i64([9, 11]))], mode="linear", coordinate_transformation_mode="align_corners",
              axes=[2, 3])
    r3 = g.op("Resize", ["x", "", s2], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    r4 = g.op("Resize", ["x", "", "", g.c(i64([9, 10]))], mode="nearest", axes=[-2, -1])
    r5 = g.op("Resize", ["x", "", g.c(np.array([1, 1, 1.5, 1.5], np.float32))], mode="linear",
              coordinate_transformation_mode="pytorch_half_pixel")
    n = g.op("Mish", [g.op("InstanceNormalization", [up1, g.c(f32(3) + 1), g.c(f32(3))], epsilon=1e-5)])
    padded = g.op("Pad", ["x", g.c(i64([0, 0, 1, 2, 0, 0, 2, 1])), g.c(np.float32(0.5))])
    g.out(n, up2, up3, r1, r2, r3, r4, r5, padded)
    return g.model(18), f32(2, 4, 6, 7)


def classic_cnn():
    """AlexNet / GoogLeNet / MobileNetV3 pieces: LRN, HardSigmoid, HardSwish, ReduceMean over
    channels, a Softmax over channels of a map."""
    g = G([6, 5, 5])
    conv = g.op("Conv", ["x", g.c(f32(8, 6, 3, 3, scale=0.3)), g.c(f32(8))], pads=[1, 1, 1, 1])
    lrn = g.op("LRN", [g.op("Relu", [conv])], size=5, alpha=1e-2, beta=0.75, bias=2.0)
    hs = g.op("HardSwish", [lrn])
    gate = g.op("HardSigmoid", [g.op("ReduceMean", [hs], axes=[2, 3], keepdims=1)], alpha=0.2, beta=0.5)
    y = g.op("Mul", [hs, gate])
    g.out(g.op("Softmax", [y], axis=1), g.op("ReduceMean", [y], axes=[1], keepdims=0))
    return g.model(17), f32(2, 6, 5, 5)


def fixed_batch():
    """A graph exported at batch 1 with a literal Reshape to [1, -1] (run image by image)."""
    g = G([3, 4, 4], batch=1)
    conv = g.op("Relu", [g.op("Conv", ["x", g.c(f32(5, 3, 3, 3, scale=0.3))], pads=[1, 1, 1, 1])])
    flat = g.op("Reshape", [conv, g.c(i64([1, -1]))])
    g.out(g.op("Gemm", [flat, g.c(f32(80, 4, scale=0.2)), g.c(f32(4))]))
    return g.model(17), f32(3, 3, 4, 4)


def batch_moves():
    """torch's MultiheadAttention layout: the batch leaves the first axis ([N, S, E] -> [S, N, E]),
    projections and attention on that layout, its Shape-built Reshape, and back (run image by
    image with values that do not keep the batch first)."""
    g = G([5, 8])
    t = g.op("Transpose", ["x"], perm=[1, 0, 2])
    qkv = g.op("Add", [g.op("MatMul", [t, g.c(f32(8, 24, scale=0.3))]), g.c(f32(24))])
    shape = g.op("Shape", [qkv])
    head = g.op("Slice", [shape, g.c(i64([0])), g.c(i64([2]))])
    split = g.op("Reshape", [qkv, g.op("Concat", [head, g.c(i64([3, 8]))], axis=0)])
    q = g.op("Squeeze", [g.op("Slice", [split, g.c(i64([0])), g.c(i64([1])), g.c(i64([2]))]), g.c(i64([2]))])
    k = g.op("Squeeze", [g.op("Slice", [split, g.c(i64([1])), g.c(i64([2])), g.c(i64([2]))]), g.c(i64([2]))])
    qn, kn = g.op("Transpose", [q], perm=[1, 0, 2]), g.op("Transpose", [k], perm=[1, 2, 0])
    attention = g.op("Softmax", [g.op("MatMul", [qn, kn])], axis=-1)
    g.out(g.op("Relu", [g.op("MatMul", [attention, qn])]))
    return g.model(17), f32(3, 5, 8)


def channel_ops():
    """ShuffleNet's channel pieces: Split and Slice along channels, channel shuffle (Reshape to
    [N, g, C/g, H, W], Transpose (0, 2, 1, 3, 4), Reshape back), Concat."""
    g = G([8, 5, 6])
    a, b = g.op("Split", ["x", g.c(i64([3, 5]))], outputs=2, axis=1)
    c = g.op("Slice", ["x", g.c(i64([1])), g.c(i64([8])), g.c(i64([1])), g.c(i64([2]))])
    d = g.op("Slice", ["x", g.c(i64([-4])), g.c(i64([9223372036854775807])), g.c(i64([-3]))])
    cat = g.op("Concat", [a, b, c, d], axis=1)
    shuffled = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [cat, g.c(i64([0, 4, 4, 5, 6]))])], perm=[0, 2, 1, 3, 4]),
                                g.c(i64([0, 16, 5, 6]))])
    g.out(g.op("Relu", [g.op("Conv", [shuffled, g.c(f32(4, 16, 1, 1, scale=0.3))])]))
    return g.model(17), f32(2, 8, 5, 6)


def shape_conditions():
    """If nodes whose condition is a shape test, as torch exports LocalResponseNorm (squeeze a
    dimension only when it is 1): one takes its then branch (with its own initializer, reading a
    value of the outer graph), one its else branch."""
    g = G([6, 5, 5])
    conv = g.op("Conv", ["x", g.c(f32(4, 6, 3, 3, scale=0.3))], pads=[1, 1, 1, 1])
    u = g.op("Unsqueeze", [conv, g.c(i64([1]))])
    one = g.c(i64(1))

    def test(value, dim):
        return g.op("Equal", [g.op("Gather", [g.op("Shape", [value]), g.c(i64(dim))], axis=0), one])

    def branch(name, nodes, output, inits=()):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                                 list(inits))

    scale = numpy_helper.from_array(f32(1, 4, 1, 1), "then_scale")
    squeeze = branch("then", [helper.make_node("Squeeze", [u, g.c(i64([1]))], ["sq"]),
                              helper.make_node("Mul", ["sq", "then_scale"], ["then_out"])], "then_out", [scale])
    keep = branch("else", [helper.make_node("Reshape", [u, g.c(i64([0, 4, 5, 5]))], ["else_out"])], "else_out")
    first = g.op("If", [test(u, 1)], then_branch=squeeze, else_branch=keep)
    negate = branch("then2", [helper.make_node("Neg", [first], ["neg"])], "neg")
    relu = branch("else2", [helper.make_node("Relu", [first], ["relu"])], "relu")
    second = g.op("If", [test(conv, 1)], then_branch=negate, else_branch=relu)
    g.out(g.op("Add", [second, conv]))
    return g.model(17), f32(2, 6, 5, 5)


def torch_lrn():
    """LocalResponseNorm as torch writes it out (no LRN node): squares unsqueezed to [N, 1, C, H, W],
    padded along channels, a 3-D AveragePool with a [5, 1, 1] window, squeezed, then
    (k + alpha * mean) ** beta divides the input."""
    g = G([7, 4, 5])
    x = g.op("Relu", [g.op("Conv", ["x", g.c(f32(9, 7, 3, 3, scale=0.4))], pads=[1, 1, 1, 1])])
    sq = g.op("Unsqueeze", [g.op("Mul", [x, x]), g.c(i64([1]))])
    padded = g.op("Pad", [sq, g.c(i64([0, 0, 2, 0, 0, 0, 0, 2, 0, 0]))])
    mean = g.op("Squeeze", [g.op("AveragePool", [padded], kernel_shape=[5, 1, 1], strides=[1, 1, 1]), g.c(i64([1]))])
    div = g.op("Pow", [g.op("Add", [g.op("Mul", [mean, g.c(np.float32(1e-2))]), g.c(np.float32(2.0))]), g.c(np.float32(0.75))])
    g.out(g.op("Div", [x, div]))
    return g.model(17), f32(2, 7, 4, 5)


CASES = {
    "transformer_block": transformer_block,
    "shape_ops": shape_ops,
    "segmentation": segmentation,
    "classic_cnn": classic_cnn,
    "fixed_batch": fixed_batch,
    "batch_moves": batch_moves,
    "channel_ops": channel_ops,
    "shape_conditions": shape_conditions,
    "torch_lrn": torch_lrn,
}


LAVLAB = os.path.join(ROOT, "..", "shared", "data", "models", "lavlab-shell-v1", "model_v1.onnx")
CMU = os.path.join(ROOT, "..", "shared", "data", "slides", "CMU-1-Small-Region.svs")


def lavlab_tile(size=32):
    """The third-party lavlab SHELL segmenter (not committed; read from ../shared/data) on a
    real H&E crop of CMU-1-Small-Region.svs, RGB scaled to [0, 1]: only input and ORT output
    are written."""
    import subprocess
    import tempfile
    from PIL import Image
    png = os.path.join(tempfile.mkdtemp(), "tile.png")
    subprocess.run(["vips", "crop", CMU, png, "1100", "1400", str(size), str(size)], check=True)
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 255
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
    sess = ort.InferenceSession(LAVLAB, providers=["CPUExecutionProvider"])
    return x, sess.run(None, {sess.get_inputs()[0].name: x})


def lavlab_mask(size=512, x0=1024, y0=1024):
    """The lavlab SHELL segmenter's class mask (argmax of its 3 output maps, one byte per pixel)
    on a real size x size crop of CMU-1-Small-Region.svs at level 0 (RGB / 255): the test reads
    the same pixels through Tessera's slide reader, so only the mask is written."""
    x, _ = lavlab_tile_at(size, x0, y0)
    sess = ort.InferenceSession(LAVLAB, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return y[0].argmax(0).astype(np.uint8)


def lavlab_tile_at(size, x0, y0):
    import subprocess
    import tempfile
    from PIL import Image
    png = os.path.join(tempfile.mkdtemp(), "tile.png")
    subprocess.run(["vips", "crop", CMU, png, str(x0), str(y0), str(size), str(size)], check=True)
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 255
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]), None


def run_ort(model, x):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    fixed = sess.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed != x.shape[0]:  # a fixed-batch graph: image by image
        parts = [sess.run(None, {"x": x[i:i + fixed]}) for i in range(0, x.shape[0], fixed)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
    return sess.run(None, {"x": x})


def main():
    os.makedirs(OUT, exist_ok=True)
    index = {}
    for name, build in CASES.items():
        model, x = build()
        onnx.save(model, os.path.join(OUT, name + ".onnx"))
        ys = run_ort(model, x)
        x.astype("<f4").tofile(os.path.join(OUT, name + ".input.bin"))
        for i, y in enumerate(ys):
            y.astype("<f4").tofile(os.path.join(OUT, f"{name}.out{i}.bin"))
        index[name] = {"input_shape": list(x.shape), "output_shapes": [list(y.shape) for y in ys]}
        print(f"{name}: {len(model.graph.node)} nodes, outputs {[list(y.shape) for y in ys]}")
    if os.path.exists(LAVLAB):
        x, ys = lavlab_tile()
        x.astype("<f4").tofile(os.path.join(OUT, "lavlab_tile32.input.bin"))
        ys[0].astype("<f4").tofile(os.path.join(OUT, "lavlab_tile32.out0.bin"))
        index["lavlab_tile32"] = {"input_shape": list(x.shape), "output_shapes": [list(ys[0].shape)]}
        print(f"lavlab_tile32: output {list(ys[0].shape)}")
        mask = lavlab_mask()
        mask.tofile(os.path.join(OUT, "lavlab_mask512.u8"))
        index["lavlab_mask512"] = {"input_shape": [1, 3, 512, 512], "output_shapes": [list(mask.shape)]}
        print(f"lavlab_mask512: classes {np.bincount(mask.ravel(), minlength=3).tolist()}")
    with open(os.path.join(OUT, "ops.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
