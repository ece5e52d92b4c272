#!/usr/bin/env python3
"""Writes the whole-model fixtures of Tests/EngineTests/Fixtures (small random-weight models).

For each model: <name>.onnx, <name>.input.bin, <name>.output.bin (raw little-endian float32,
outputs computed by ONNX Runtime) and an entry in models.json with the shapes.
Usage: python3 scripts/engine/make_fixtures.py   (needs torch, onnx, onnxruntime, numpy)
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(__file__))
import tessera_models as tm  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "Tests", "EngineTests", "Fixtures")

MODELS = [
    # name, builder, input size, batch
    ("resnet18_w8_64", lambda: tm.resnet18(width=8, classes=10), 64, 2),
    ("mobilenetv2_w025_64", lambda: tm.mobilenetv2(width_mult=0.25, classes=10), 64, 2),
    ("compact_cnn_32", lambda: tm.compact_cnn(widths=(8, 16, 24, 32), classes=3), 32, 3),
    ("mixed_ops_24", tm.mixed_cnn, 24, 2),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(1234)
    index = {}
    for name, build, size, batch in MODELS:
        model = build()
        path = os.path.join(OUT, name + ".onnx")
        tm.export(model, path, size)
        x = np.random.default_rng(7).standard_normal((batch, 3, size, size)).astype(np.float32)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        y = sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float32)
        with torch.no_grad():
            ty = model(torch.from_numpy(x)).numpy()
        err = np.abs(ty - y).max() / max(np.abs(y).max(), 1e-6)
        assert err < 1e-4, f"{name}: torch vs ORT rel err {err}"
        x.astype("<f4").tofile(os.path.join(OUT, name + ".input.bin"))
        y.astype("<f4").tofile(os.path.join(OUT, name + ".output.bin"))
        index[name] = {"input_shape": list(x.shape), "output_shape": list(y.shape)}
        print(f"{name}: {os.path.getsize(path) / 1024:.0f} KiB onnx, output {list(y.shape)}")
    with open(os.path.join(OUT, "models.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
