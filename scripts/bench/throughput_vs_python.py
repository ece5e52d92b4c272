#!/usr/bin/env python3
"""Tessera against the Python pipeline a user would otherwise write, timed in one run.

Reference pipeline: OpenSlide read_region on the same tissue tiles Tessera keeps (its tile
list is handed over, which is generous: no tissue detection is timed on the Python side),
numpy normalisation, ONNX Runtime with the same thread count, batches of 64, softmax.
Models: the shipped compact model and a ResNet-18 baseline (random weights, 9 classes,
224 px; speed does not depend on the weights). Tessera side: `tessera throughput --json`.
Prints a table and one JSON line with the ratios the MENNDL claim is about.

    pip install openslide-python onnxruntime numpy torch   (torch only to export ResNet-18)
    python3 scripts/bench/throughput_vs_python.py [--threads 2] [--max-seconds 60]
"""
import argparse, csv, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openslide

ROOT = Path(__file__).resolve().parents[2]


def resnet18(path):
    if path.exists():
        return path
    import torch
    import torch.nn as nn

    def block(cin, cout, stride):
        layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)]
        down = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.body, self.down = nn.Sequential(*layers), down
            def forward(self, x):
                return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))
        return Block()

    stages, cin = [], 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        stages += [block(cin, cout, stride), block(cout, cout, 1)]
        cin = cout
    model = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                          nn.MaxPool2d(3, 2, 1), *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 9),
                          nn.Softmax(dim=1)).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(path), input_names=["input"], output_names=["probabilities"],
                      dynamic_axes={"input": {0: "N"}, "probabilities": {0: "N"}}, opset_version=17, dynamo=False)
    return path


def python_pipeline(slide_path, tiles, model_path, threads, max_seconds, level):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    slide = openslide.OpenSlide(slide_path)
    down = slide.level_downsamples[level]
    batch, done, start = [], 0, time.perf_counter()
    for x, y in tiles:
        region = slide.read_region((int(x * down), int(y * down)), level, (224, 224))
        array = np.asarray(region, dtype=np.uint8)[:, :, :3].astype(np.float32) / 255.0
        batch.append(array.transpose(2, 0, 1))
        if len(batch) == 64:
            session.run(None, {name: np.stack(batch)})
            done += len(batch)
            batch = []
            if time.perf_counter() - start > max_seconds:
                break
    if batch:
        session.run(None, {name: np.stack(batch)})
        done += len(batch)
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-seconds", type=float, default=60)
    parser.add_argument("--tessera", default=str(ROOT / ".build/release/tessera"))
    args = parser.parse_args()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tessera"
    resnet = resnet18(cache / "resnet18-9class-224.onnx")
    compact = ROOT / "models/tessera-crc-compact/model.onnx"

    def tessera(model):
        out = subprocess.run([args.tessera, "throughput", "--model", model, "--threads", str(args.threads), "--json"],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    t_compact = tessera("tessera-crc-compact")
    t_resnet = tessera(str(resnet))
    slide = str(cache / t_compact["slides"][0])
    with tempfile.TemporaryDirectory() as scratch:
        listing = os.path.join(scratch, "tiles.csv")
        subprocess.run([args.tessera, "tiles", slide, "--mpp", "0.5", "--tile-size", "224", "--no-read", "--tiles-out", listing],
                       check=True, capture_output=True)
        with open(listing) as handle:
            rows = list(csv.DictReader(handle))
    tiles = [(int(r["x"]), int(r["y"])) for r in rows]
    level = int(rows[0]["level"]) if rows else 0
    per_slide = t_compact["tissue_tiles_per_slide"]
    results = {}
    for label, model in (("compact", compact), ("resnet18", resnet)):
        rate = python_pipeline(slide, tiles, model, args.threads, args.max_seconds, level)
        results[label] = {"python_tiles_per_second": rate, "python_slides_per_hour": rate / per_slide * 3600}
    results["compact"]["tessera_slides_per_hour"] = t_compact["slides_per_hour"]
    results["resnet18"]["tessera_slides_per_hour"] = t_resnet["slides_per_hour"]
    ratio_same = t_compact["slides_per_hour"] / results["compact"]["python_slides_per_hour"]
    ratio_menndl = t_compact["slides_per_hour"] / results["resnet18"]["python_slides_per_hour"]
    print(f"slide {slide}: {per_slide:.0f} tissue tiles, {args.threads} threads")
    print(f"{'pipeline':<34} {'slides/h':>9}")
    print(f"{'Tessera, compact':<34} {t_compact['slides_per_hour']:>9.1f}")
    print(f"{'Tessera, ResNet-18':<34} {t_resnet['slides_per_hour']:>9.1f}")
    print(f"{'Python (OpenSlide+ORT), compact':<34} {results['compact']['python_slides_per_hour']:>9.1f}")
    print(f"{'Python (OpenSlide+ORT), ResNet-18':<34} {results['resnet18']['python_slides_per_hour']:>9.1f}")
    print(f"Tessera/Python on the compact model: {ratio_same:.2f}x (goal >= 1.5x)")
    print(f"Tessera compact / Python ResNet-18:  {ratio_menndl:.1f}x (goal >= 16x)")
    print(json.dumps({"benchmark": "throughput_vs_python", "threads": args.threads, "tiles_per_slide": per_slide,
                      "results": results, "ratio_same_model": ratio_same, "ratio_compact_vs_python_resnet18": ratio_menndl}))


if __name__ == "__main__":
    sys.exit(main())
