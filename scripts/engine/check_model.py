#!/usr/bin/env python3
"""Checks Tessera's output on any ONNX model against ONNX Runtime (no committed fixture needed).

Writes a random input and ORT's outputs as raw float32 next to a copy in a temp dir, then runs
the env-gated EngineTests case `externalModelMatchesONNXRuntime` on it.
  python3 scripts/engine/check_model.py models/densenet121-pathmnist/model.onnx [--batch 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--scratch-path", default=".build-engine")
    args = ap.parse_args()
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [args.batch] + [int(d) for d in inp.shape[1:]]
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    y = sess.run(None, {inp.name: x})[0].astype(np.float32)
    out = tempfile.mkdtemp(prefix="tessera-check-")
    x.astype("<f4").tofile(os.path.join(out, "input.bin"))
    y.astype("<f4").tofile(os.path.join(out, "output.bin"))
    with open(os.path.join(out, "shapes.json"), "w") as f:
        json.dump({"input_shape": list(x.shape), "output_shape": list(y.shape)}, f)
    env = dict(os.environ, TESSERA_ENGINE_CHECK_MODEL=os.path.abspath(args.model), TESSERA_ENGINE_CHECK_DIR=out)
    r = subprocess.run(["swift", "test", "--scratch-path", args.scratch_path, "--filter",
                        "EngineTests.ExternalModelTests"], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [l for l in (r.stdout + r.stderr).splitlines() if "External" in l or "✘" in l or "relative error" in l]
    print("\n".join(lines))
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
