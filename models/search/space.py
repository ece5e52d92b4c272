"""Search space of compact CNN tissue classifiers, and the model builder.

Every candidate takes the same interface as the teacher: `input` [N,3,224,224]
RGB in [0,1] at 0.5 um/px (so Tessera tiles exactly like the teacher); the
*working* resolution is a search dimension implemented in-graph by an
AveragePool(k, stride k) pre-downsample (k=1 -> 224, 2 -> 112, 3 -> 74 px).

Searched dimensions:
  res          224 | 112 | 74 working resolution
  stem         16 | 24 | 32 channels, 3x3 stride-2 conv
  4 stages, each: type dense (k x k conv-BN-ReLU, residual when shapes match)
                  or dw (inverted residual: 1x1 expand e -> depthwise k x k -> 1x1 project, residual)
                  depth 1..3, width from a per-stage menu, kernel 3 | 5, expand 2 | 4 (dw only);
                  the first block of each stage has stride 2
  head         0 | 128 | 256: optional 1x1 conv before global average pooling
Output: GlobalAveragePool -> Flatten -> Gemm(9) -> Softmax `probabilities`.
Only ONNX ops Tessera's engine supports are produced: Conv (BN folded at export),
Relu, Add, AveragePool, GlobalAveragePool, Flatten, Gemm, Softmax.
"""
import copy
import json

import numpy as np
import torch
from torch import nn

RES = {224: 1, 112: 2, 74: 3}
STEM = [16, 24, 32]
WIDTHS = [[16, 24, 32], [32, 48, 64], [64, 96, 128], [96, 128, 192, 256]]
DEPTHS = [1, 2, 3]
KERNELS = [3, 5]
EXPANDS = [2, 4]
TYPES = ["dense", "dw"]
HEADS = [0, 128, 256]


def cbr(cin, cout, k, s=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DenseBlock(nn.Module):
    def __init__(self, cin, cout, k, s):
        super().__init__()
        self.body = cbr(cin, cout, k, s, act=False)
        self.res = s == 1 and cin == cout
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.body(x)
        return self.act(y + x if self.res else y)


class DWBlock(nn.Module):
    def __init__(self, cin, cout, k, s, e):
        super().__init__()
        mid = cin * e
        self.body = nn.Sequential(cbr(cin, mid, 1), cbr(mid, mid, k, s, groups=mid), cbr(mid, cout, 1, act=False))
        self.res = s == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return y + x if self.res else y


class Student(nn.Module):
    def __init__(self, arch, num_classes=9):
        super().__init__()
        self.arch = arch
        f = RES[arch["res"]]
        self.pre = nn.AvgPool2d(f, f) if f > 1 else nn.Identity()
        c = arch["stem"]
        layers = [cbr(3, c, 3, 2)]
        for st in arch["stages"]:
            for i in range(st["depth"]):
                s = 2 if i == 0 else 1
                if st["type"] == "dense":
                    layers.append(DenseBlock(c, st["width"], st["k"], s))
                else:
                    layers.append(DWBlock(c, st["width"], st["k"], s, st["expand"]))
                c = st["width"]
        if arch.get("head"):
            layers.append(cbr(c, arch["head"], 1))
            c = arch["head"]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def logits(self, x):
        x = self.features(self.pre(x))
        return self.fc(torch.flatten(self.pool(x), 1))

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


def count_params(model):
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model, size=224):
    """MACs of Conv2d + Linear for one image (BN/activations/pooling ignored; same rule as macs.py)."""
    total = [0]

    def conv_hook(m, i, o):
        total[0] += o.shape[1] * o.shape[2] * o.shape[3] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, i, o):
        total[0] += m.in_features * m.out_features

    hs = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hs.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hs.append(m.register_forward_hook(lin_hook))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was)
    for h in hs:
        h.remove()
    return int(total[0])


def sample_arch(rng):
    stages = []
    for i in range(4):
        t = TYPES[rng.integers(len(TYPES))]
        stages.append({"type": t, "depth": int(DEPTHS[rng.integers(len(DEPTHS))]),
                       "width": int(WIDTHS[i][rng.integers(len(WIDTHS[i]))]),
                       "k": int(KERNELS[rng.integers(len(KERNELS))]),
                       "expand": int(EXPANDS[rng.integers(len(EXPANDS))]) if t == "dw" else 1})
    return {"res": int(list(RES)[rng.integers(len(RES))]), "stem": int(STEM[rng.integers(len(STEM))]),
            "stages": stages, "head": int(HEADS[rng.integers(len(HEADS))])}


def mutate(arch, rng):
    a = copy.deepcopy(arch)
    what = rng.integers(6)
    if what == 0:
        a["res"] = int(list(RES)[rng.integers(len(RES))])
    elif what == 1:
        a["stem"] = int(STEM[rng.integers(len(STEM))])
    elif what == 2:
        a["head"] = int(HEADS[rng.integers(len(HEADS))])
    else:
        i = int(rng.integers(4))
        st = a["stages"][i]
        key = ["type", "depth", "width", "k"][rng.integers(4)]
        if key == "type":
            st["type"] = "dw" if st["type"] == "dense" else "dense"
            st["expand"] = int(EXPANDS[rng.integers(len(EXPANDS))]) if st["type"] == "dw" else 1
        elif key == "depth":
            st["depth"] = int(DEPTHS[rng.integers(len(DEPTHS))])
        elif key == "width":
            st["width"] = int(WIDTHS[i][rng.integers(len(WIDTHS[i]))])
        else:
            st["k"] = int(KERNELS[rng.integers(len(KERNELS))])
    return a


def arch_str(a):
    """Compact one-line description, e.g. r112-s24-[dw3k3e4w24|dense2k3w48|...]-h128"""
    parts = []
    for st in a["stages"]:
        e = f"e{st['expand']}" if st["type"] == "dw" else ""
        parts.append(f"{st['type']}{st['depth']}k{st['k']}{e}w{st['width']}")
    return f"r{a['res']}-s{a['stem']}-[{'|'.join(parts)}]-h{a['head']}"


def arch_json(a):
    return json.dumps(a, sort_keys=True, separators=(",", ":"))


class Logits(nn.Module):
    """Wraps a model with a .logits(x) method so the exported graph ends in raw logits (no Softmax)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.logits(x)


def export_onnx(model, path, output="probabilities"):
    """output="probabilities": the model's forward (softmax); output="logits": raw logits."""
    model = copy.deepcopy(model).eval()
    if output == "logits":
        model = Logits(model)
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), path, input_names=["input"],
                      output_names=[output],
                      dynamic_axes={"input": {0: "N"}, output: {0: "N"}},
                      opset_version=17, do_constant_folding=True, dynamo=False,
                      training=torch.onnx.TrainingMode.EVAL)
    return path


def ort_images_per_second(path, batch=64, threads=2, seconds=3.0, repeats=3):
    """Best-of-`repeats` ONNX Runtime throughput (best = least disturbed by other load on the box)."""
    import time
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, 3, 224, 224), dtype=np.float32)
    sess.run(None, {"input": x})
    best = 0.0
    for _ in range(repeats):
        n, t = 0, time.time()
        while time.time() - t < seconds / repeats or n < 1:
            sess.run(None, {"input": x})
            n += 1
        best = max(best, batch * n / (time.time() - t))
    return best
