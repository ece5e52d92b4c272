#!/usr/bin/env python3
"""Tessera vs ONNX Runtime (FP32, CPU) throughput on the same ONNX models, threads and batch.

With --calibration DIR (real tiles, e.g. ../shared/data/patches/lc25000) it also measures
ONNX Runtime INT8 (static QDQ, U8S8, per-channel, calibrated on the same patches Tessera's
`models quantize` takes: the top-left patch of images spread evenly over the sorted file list),
OpenVINO (its default precision, when the `openvino` package is installed), Tessera INT8 and BF16,
and reports Tessera's best precision over the faster of ORT INT8 and OpenVINO.

Generates the benchmark models with torch (random weights) into a cache dir outside git,
times ONNX Runtime (intra-op threads = --threads, sequential execution, all graph
optimisations) and `tessera models bench --json` (a release build), alternating the two
--rounds times and keeping each one's best median, and prints a table and one JSON line
with the Tessera/ORT ratios (and Tessera's 2-thread / 1-thread scaling).

  swift build -c release --scratch-path .build-engine-rel
  python3 scripts/engine/compare_ort.py [--tessera .build-engine-rel/release/tessera]
      [--models compact_cnn_96,compact_cnn_224,resnet18_224,path/to/any.onnx] [--batches 1,16,64] [--threads 1,2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

MODELS = {
    # name: (builder, input size)
    "compact_cnn_96": (lambda tm: tm.compact_cnn(), 96),
    "compact_cnn_224": (lambda tm: tm.compact_cnn(), 224),
    "resnet18_224": (lambda tm: tm.resnet18(), 224),
    "mobilenetv2_224": (lambda tm: tm.mobilenetv2(), 224),
}


def ensure_model(name, cache):
    if name.endswith(".onnx"):  # an existing model file, e.g. models/<name>/model.onnx
        return name
    path = os.path.join(cache, name + ".onnx")
    if not os.path.exists(path):
        sys.path.insert(0, HERE)
        import torch  # noqa: F401
        import tessera_models as tm
        build, size = MODELS[name]
        torch.manual_seed(0)
        tm.export(build(tm), path + ".tmp", size)
        os.replace(path + ".tmp", path)
    return path


def calibration_patches(directory, size, limit):
    """The patches `tessera models quantize` uses (unit normalisation: pixels / 255), NCHW."""
    from PIL import Image
    exts = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
    files = sorted(os.path.relpath(os.path.join(d, f), directory)
                   for d, _, fs in os.walk(directory) for f in fs if f.lower().endswith(exts))
    n = min(limit, len(files))
    out = []
    for i in range(n):
        img = np.asarray(Image.open(os.path.join(directory, files[i * len(files) // n])).convert("RGB"))
        out.append(img[:size, :size].astype(np.float32).transpose(2, 0, 1) / 255)
    return np.stack(out)


def ort_int8_model(path, patches, cache):
    """Static QDQ quantisation (U8 activations, S8 per-channel weights) calibrated on `patches`,
    written to the cache (keyed by the model's path)."""
    stem = os.path.join(cache, os.path.abspath(path).strip("/").replace("/", "_")[:-5])
    out = stem + ".ort-int8.onnx"
    if os.path.exists(out):
        return out
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    import onnxruntime as ort
    name = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: patches[i:i + 16]} for i in range(0, len(patches), 16)])

        def get_next(self):
            return next(self.items, None)

    pre = stem + ".pre.onnx"
    quant_pre_process(path, pre)
    quantize_static(pre, out + ".tmp", Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.replace(out + ".tmp", out)
    return out


def bench_openvino(path, batch, threads, repeats, warmup):
    import openvino as ov
    core = ov.Core()
    model = core.read_model(path)
    shape = [batch] + [int(d) for d in model.inputs[0].get_partial_shape()[1:].to_shape()]
    model.reshape({model.inputs[0].get_any_name(): shape})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                 "PERFORMANCE_HINT": "LATENCY"})
    req = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        req.infer({0: x})
    times = []
    start = time.perf_counter()
    while len(times) < repeats:
        t0 = time.perf_counter()
        req.infer({0: x})
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - start > 10:
            break
    ms = statistics.median(times) * 1000
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    return {"ms_per_batch": ms, "images_per_second": batch / ms * 1000, "precision": str(precision)}


def bench_ort(path, batch, threads, repeats, warmup):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [batch] + [int(d) for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    times = []
    start = time.perf_counter()
    while len(times) < repeats:
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - start > 10:
            break
    ms = statistics.median(times) * 1000
    return {"ms_per_batch": ms, "images_per_second": batch / ms * 1000}


def bench_tessera(binary, path, batch, threads, repeats, warmup, precision="fp32"):
    out = subprocess.run([binary, "models", "bench", path, "--batch", str(batch), "--threads", str(threads),
                          "--repeats", str(repeats), "--warmup", str(warmup), "--precision", precision, "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", default=os.path.join(ROOT, ".build-engine-rel", "release", "tessera"))
    ap.add_argument("--models", default="compact_cnn_96,compact_cnn_224,resnet18_224")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate ORT and Tessera this many times and keep each one's best median "
                         "(robust to other load on a shared machine)")
    ap.add_argument("--cache", default=os.environ.get("TESSERA_BENCH_CACHE",
                                                      os.path.expanduser("~/.cache/tessera/engine-bench")))
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--calibration", help="directory of real tiles: adds ORT INT8, OpenVINO and Tessera INT8")
    ap.add_argument("--calibration-limit", type=int, default=64)
    args = ap.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    if args.calibration:
        return reduced_precision(args)

    rows = []
    for name in args.models.split(","):
        path = ensure_model(name, args.cache)
        for threads in [int(t) for t in args.threads.split(",")]:
            for batch in [int(b) for b in args.batches.split(",")]:
                o = t = None
                for _ in range(max(1, args.rounds)):
                    oo = bench_ort(path, batch, threads, args.repeats, args.warmup)
                    tt = bench_tessera(args.tessera, path, batch, threads, args.repeats, args.warmup)
                    if o is None or oo["images_per_second"] > o["images_per_second"]:
                        o = oo
                    if t is None or tt["images_per_second"] > t["images_per_second"]:
                        t = tt
                rows.append({"model": name, "batch": batch, "threads": threads,
                             "ort_images_per_second": round(o["images_per_second"], 2),
                             "tessera_images_per_second": round(t["images_per_second"], 2),
                             "tessera_gflops": round(t["gflops"], 1),
                             "ratio": round(t["images_per_second"] / o["images_per_second"], 3)})
                r = rows[-1]
                print(f"  {name:18s} b{batch:<3d} t{threads}  ORT {r['ort_images_per_second']:9.1f} img/s  "
                      f"Tessera {r['tessera_images_per_second']:9.1f} img/s ({r['tessera_gflops']:.0f} GFLOP/s)  "
                      f"ratio {r['ratio']:.2f}", file=sys.stderr, flush=True)

    sep = "|" if args.markdown else " "
    head = ["model", "batch", "threads", "ORT img/s", "Tessera img/s", "Tessera GFLOP/s", "Tessera/ORT"]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(["---"] * len(head)) + "|")
    else:
        print(f"{head[0]:18s} {head[1]:>5s} {head[2]:>7s} {head[3]:>10s} {head[4]:>14s} {head[5]:>16s} {head[6]:>12s}")
    for r in rows:
        cells = [r["model"], str(r["batch"]), str(r["threads"]), f"{r['ort_images_per_second']:.1f}",
                 f"{r['tessera_images_per_second']:.1f}", f"{r['tessera_gflops']:.1f}", f"{r['ratio']:.2f}"]
        if args.markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print(f"{cells[0]:18s} {cells[1]:>5s} {cells[2]:>7s} {cells[3]:>10s} {cells[4]:>14s} {cells[5]:>16s} {cells[6]:>12s}")
    scaling = {}
    for r in rows:
        if r["threads"] == 2:
            one = next((q for q in rows if q["model"] == r["model"] and q["batch"] == r["batch"] and q["threads"] == 1), None)
            if one:
                scaling[f"{r['model']}@b{r['batch']}"] = round(r["tessera_images_per_second"] / one["tessera_images_per_second"], 3)
    print(json.dumps({"rows": rows, "tessera_2t_over_1t": scaling}, sort_keys=True))


def reduced_precision(args):
    """ORT FP32 / INT8, OpenVINO, Tessera FP32 / INT8 / BF16 in one run (best of --rounds, alternating)."""
    import onnxruntime as ort
    try:
        import openvino  # noqa: F401
        have_ov = True
    except ImportError:
        have_ov = False
    rows = []
    for name in args.models.split(","):
        path = ensure_model(name, args.cache)
        if os.path.abspath(os.path.dirname(path)) != os.path.abspath(args.cache):
            # a model file of its own (e.g. a shipped models/<name>/model.onnx): `models quantize` writes the
            # calibration beside the file it is given, so give it a copy in the cache and leave the model folder alone
            import hashlib
            import shutil
            digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]
            copy = os.path.join(args.cache, f"given-{digest}.onnx")
            if not os.path.exists(copy):
                shutil.copyfile(path, copy)
            path = copy
        size = [int(d) for d in ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0].shape[1:]][-1]
        patches = calibration_patches(args.calibration, size, args.calibration_limit)
        q8 = ort_int8_model(path, patches, args.cache)
        subprocess.run([args.tessera, "models", "quantize", path, "--calibration", args.calibration,
                        "--limit", str(args.calibration_limit)], check=True, capture_output=True)
        for threads in [int(t) for t in args.threads.split(",")]:
            for batch in [int(b) for b in args.batches.split(",")]:
                best = {}
                def keep(key, value):
                    if key not in best or value > best[key]:
                        best[key] = value
                for _ in range(max(1, args.rounds)):
                    keep("ort_fp32", bench_ort(path, batch, threads, args.repeats, args.warmup)["images_per_second"])
                    keep("tessera_fp32", bench_tessera(args.tessera, path, batch, threads, args.repeats, args.warmup)["images_per_second"])
                    keep("ort_int8", bench_ort(q8, batch, threads, args.repeats, args.warmup)["images_per_second"])
                    keep("tessera_int8", bench_tessera(args.tessera, path, batch, threads, args.repeats, args.warmup, "int8")["images_per_second"])
                    keep("tessera_bf16", bench_tessera(args.tessera, path, batch, threads, args.repeats, args.warmup, "bf16")["images_per_second"])
                    if have_ov:
                        keep("openvino", bench_openvino(path, batch, threads, args.repeats, args.warmup)["images_per_second"])
                rival = max(best["ort_int8"], best.get("openvino", 0))
                row = {"model": name, "batch": batch, "threads": threads, **{k: round(v, 1) for k, v in best.items()},
                       "best_tessera_over_best_rival": round(max(best["tessera_fp32"], best["tessera_int8"], best["tessera_bf16"]) / rival, 3)}
                rows.append(row)
                print("  " + json.dumps(row), file=sys.stderr, flush=True)
    cols = ["ort_fp32", "ort_int8", "openvino", "tessera_fp32", "tessera_int8", "tessera_bf16", "best_tessera_over_best_rival"]
    print("| model | batch | threads | " + " | ".join(cols) + " |")
    print("|" + "|".join(["---"] * (3 + len(cols))) + "|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['threads']} | " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")
    print(json.dumps({"rows": rows, "openvino": have_ov}, sort_keys=True))


if __name__ == "__main__":
    main()
