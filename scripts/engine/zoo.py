#!/usr/bin/env python3
"""Bring-your-own-model zoo: the architectures labs use, exported from torch (random weights),
each loaded by Tessera and checked and timed against ONNX Runtime (FP32, CPU) in one run.

Per model it prints load status (or the one-line load error), the max relative error of
Tessera's first output against ONNX Runtime's on the same random batch, and images/s of both
at --batch and --threads; then a table and one JSON line.

  swift build -c release --scratch-path .build-engine-rel
  python3 scripts/engine/zoo.py [--models resnet18,vit_b_16,...] [--batch 4] [--threads 2] [--rounds 3] [--markdown]

Needs torch, torchvision (its model definitions only; torchvision's compiled operators are not
needed: `torchvision._meta_registrations` is stubbed before the import), onnx, onnxruntime.
Exported models are cached outside git (--cache).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def torchvision_models():
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision.models as tvm
    import torchvision.models.segmentation as seg
    return tvm, seg


def unet(torch):
    """A small U-Net: conv blocks, max-pool down, ConvTranspose up, skip Concats."""
    nn = torch.nn

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self, w=16, classes=3):
            super().__init__()
            self.d1, self.d2, self.d3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.mid = block(4 * w, 8 * w)
            self.u3, self.c3 = nn.ConvTranspose2d(8 * w, 4 * w, 2, 2), block(8 * w, 4 * w)
            self.u2, self.c2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2), block(4 * w, 2 * w)
            self.u1, self.c1 = nn.ConvTranspose2d(2 * w, w, 2, 2), block(2 * w, w)
            self.head = nn.Conv2d(w, classes, 1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            a = self.d1(x)
            b = self.d2(self.pool(a))
            c = self.d3(self.pool(b))
            m = self.mid(self.pool(c))
            c = self.c3(torch.cat([self.u3(m), c], 1))
            b = self.c2(torch.cat([self.u2(c), b], 1))
            a = self.c1(torch.cat([self.u1(b), a], 1))
            return self.head(a)

    return UNet()


def alexnet_lrn(torch):
    """The original AlexNet (Krizhevsky 2012) with LocalResponseNorm after conv1 and conv2."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, 4, 2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))


class FirstOutput:
    """Wraps a segmentation model returning a dict to return its 'out' map."""

    def __new__(cls, torch, model):
        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, x):
                return self.m(x)["out"]
        return Wrapped()


def build(name, torch):
    tvm, seg = torchvision_models()
    table = {
        "resnet18": (lambda: tvm.resnet18(), 224),
        "resnet34": (lambda: tvm.resnet34(), 224),
        "resnet50": (lambda: tvm.resnet50(), 224),
        "densenet121": (lambda: tvm.densenet121(), 224),
        "efficientnet_b0": (lambda: tvm.efficientnet_b0(), 224),
        "mobilenet_v3_large": (lambda: tvm.mobilenet_v3_large(), 224),
        "shufflenet_v2_x1_0": (lambda: tvm.shufflenet_v2_x1_0(), 224),
        "regnet_y_400mf": (lambda: tvm.regnet_y_400mf(), 224),
        "squeezenet1_0": (lambda: tvm.squeezenet1_0(), 224),
        "inception_v3": (lambda: tvm.inception_v3(aux_logits=False, init_weights=True), 299),
        "convnext_tiny": (lambda: tvm.convnext_tiny(), 224),
        "vit_b_16": (lambda: tvm.vit_b_16(), 224),
        "swin_t": (lambda: tvm.swin_t(), 224),
        "unet_convtranspose": (lambda: unet(torch), 256),
        "lraspp_mobilenet_v3": (lambda: FirstOutput(torch, seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)), 256),
        "deeplabv3_resnet50": (lambda: FirstOutput(torch, seg.deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=False)), 256),
        "alexnet_lrn": (lambda: alexnet_lrn(torch), 224),
    }
    make, size = table[name]
    return make().eval(), size


DEFAULT = ("resnet18,resnet34,resnet50,densenet121,efficientnet_b0,mobilenet_v3_large,shufflenet_v2_x1_0,"
           "regnet_y_400mf,squeezenet1_0,inception_v3,convnext_tiny,vit_b_16,swin_t,unet_convtranspose,"
           "lraspp_mobilenet_v3,deeplabv3_resnet50,alexnet_lrn")


def export(name, cache):
    import torch
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, name + ".onnx")
    size_file = path + ".size"
    if not os.path.exists(path):
        torch.manual_seed(0)
        model, size = build(name, torch)
        # torchvision zero-initialises some classifier heads (ViT, Swin): random ones, so the
        # logits are not all equal to the bias and the error check means something.
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.abs().sum():
                torch.nn.init.normal_(m.weight, std=0.02)
        # Random BN statistics, so normalisation layers are not identities.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        x = torch.randn(1, 3, size, size)
        torch.onnx.export(model, x, path[:-5] + ".tmp.onnx", input_names=["input"], output_names=["output"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)
        os.replace(path[:-5] + ".tmp.onnx", path)
        with open(size_file, "w") as f:
            f.write(str(size))
    with open(size_file) as f:
        return path, int(f.read())


def ort_session(path, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def time_ort(sess, x, repeats):
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return x.shape[0] / statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", default=os.path.join(ROOT, ".build-engine-rel", "release", "tessera"))
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="time ONNX Runtime and Tessera in turn this many times and keep each one's best round "
                         "(evens out a neighbour's load on a shared host)")
    ap.add_argument("--cache", default=os.environ.get("TESSERA_BENCH_CACHE",
                                                      os.path.expanduser("~/.cache/tessera/engine-zoo")))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    work = tempfile.mkdtemp(prefix="tessera-zoo-")
    rows = []
    for name in args.models.split(","):
        row = {"model": name, "loads": False}
        try:
            path, size = export(name, args.cache)
        except Exception as e:  # noqa: BLE001 - an export failure is a row, not the end of the run
            row["error"] = f"export failed: {str(e).splitlines()[0][:120]}"
            rows.append(row)
            print(f"  {name}: {row['error']}", file=sys.stderr, flush=True)
            continue
        x = np.random.default_rng(1).standard_normal((args.batch, 3, size, size)).astype(np.float32)
        sess = ort_session(path, args.threads)
        y = sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float32)
        xin, yout = os.path.join(work, name + ".in.bin"), os.path.join(work, name + ".out.bin")
        x.astype("<f4").tofile(xin)
        y.astype("<f4").tofile(yout)
        ort_best, t = 0.0, None
        for _ in range(max(1, args.rounds)):
            ort_best = max(ort_best, time_ort(sess, x, args.repeats))
            r = subprocess.run([args.tessera, "models", "bench", path, "--batch", str(args.batch), "--threads",
                                str(args.threads), "--repeats", str(args.repeats), "--warmup", "1", "--input-file", xin,
                                "--expect", yout, "--json"], capture_output=True, text=True)
            if r.returncode != 0:  # a failed round is reported, whatever earlier rounds gave
                row["error"] = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1][:160]
                t = None
                break
            got = json.loads(r.stdout.strip().splitlines()[-1])
            if t is None or got["images_per_second"] > t["images_per_second"]:
                t = got
        row["ort_images_per_second"] = round(ort_best, 2)
        if t is not None:
            row.update(loads=True, max_relative_error=t.get("max_relative_error"),
                       tessera_images_per_second=round(t["images_per_second"], 2),
                       ratio=round(t["images_per_second"] / row["ort_images_per_second"], 3),
                       warnings=len(t.get("warnings", [])))
        rows.append(row)
        print(f"  {name}: {row}", file=sys.stderr, flush=True)

    head = ["model", "loads", "max rel err", "Tessera img/s", "ORT img/s", "Tessera/ORT", "note"]
    lines = []
    for r in rows:
        err = r.get("max_relative_error")
        lines.append([r["model"], "yes" if r["loads"] else "no", "-" if err is None else f"{err:.1e}",
                      f"{r['tessera_images_per_second']:.1f}" if r["loads"] else "-",
                      f"{r['ort_images_per_second']:.1f}" if "ort_images_per_second" in r else "-",
                      f"{r['ratio']:.2f}" if r["loads"] else "-",
                      r.get("error", f"{r['warnings']} slow-node warnings" if r.get("warnings") else "")])
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(["---"] * len(head)) + "|")
        for cells in lines:
            print("| " + " | ".join(cells) + " |")
    else:
        for cells in [head] + lines:
            print(f"{cells[0]:22s} {cells[1]:>5s} {cells[2]:>11s} {cells[3]:>13s} {cells[4]:>10s} {cells[5]:>11s}  {cells[6]}")
    print(json.dumps({"batch": args.batch, "threads": args.threads, "rounds": max(1, args.rounds), "rows": rows}, sort_keys=True))


if __name__ == "__main__":
    main()
