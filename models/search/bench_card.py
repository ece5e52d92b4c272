#!/usr/bin/env python3
"""Measure the teacher and the compact model on Tessera's engine and write the numbers into the cards.

  nice -n 10 python models/search/bench_card.py --tessera-bin .build/release/tessera

Runs `tessera models bench MODEL --batch B --threads 2 --json` (and ONNX Runtime with the same
batch/threads, back to back, so both engines see the same machine load) for
models/densenet121-pathmnist/model.onnx and models/tessera-crc-compact/model.onnx, then stores
metrics.tessera_images_per_second_2_threads (+ speed-up vs the teacher) in both model.json files.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import space  # noqa: E402
from run import default_tessera_bin  # noqa: E402

MODELS = os.path.join(HERE, "..")


def tessera(bin_, path, batch, threads, repeats):
    out = subprocess.run([bin_, "models", "bench", path, "--batch", str(batch), "--threads", str(threads),
                          "--repeats", str(repeats), "--warmup", "1", "--json"], check=True, capture_output=True, text=True,
                         timeout=3600).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera-bin", default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-repeats", type=int, default=3)
    ap.add_argument("--student-repeats", type=int, default=10)
    args = ap.parse_args()
    bin_ = args.tessera_bin or default_tessera_bin()
    res = {}
    for name, reps in [("densenet121-pathmnist", args.teacher_repeats), ("tessera-crc-compact", args.student_repeats)]:
        path = os.path.join(MODELS, name, "model.onnx")
        t = time.time()
        r = tessera(bin_, path, args.batch, args.threads, reps)
        ort_ips = space.ort_images_per_second(path, batch=args.batch, threads=args.threads,
                                              seconds=10.0 if name.startswith("dense") else 6.0, repeats=2)
        res[name] = {"tessera": r, "ort": ort_ips}
        print(f"{name}: tessera {r['images_per_second']:.1f} img/s, onnxruntime {ort_ips:.1f} img/s "
              f"(batch {args.batch}, {args.threads} threads, {time.time() - t:.0f}s)", flush=True)
    tt = res["densenet121-pathmnist"]["tessera"]["images_per_second"]
    ts = res["tessera-crc-compact"]["tessera"]["images_per_second"]
    for name in res:
        card_path = os.path.join(MODELS, name, "model.json")
        card = json.load(open(card_path))
        key = f"batch{args.batch}"
        m = card.setdefault("metrics", {})
        tess = m.get("tessera_images_per_second_2_threads") or {}
        tess[key] = round(res[name]["tessera"]["images_per_second"], 2)
        m["tessera_images_per_second_2_threads"] = tess
        if name == "tessera-crc-compact":
            m["speedup_vs_teacher_tessera_batch64"] = round(ts / tt, 1)
            m["teacher_tessera_images_per_second_2_threads"] = {key: round(tt, 2)}
        m["tessera_bench"] = {"command": f"tessera models bench models/{name}/model.onnx --batch {args.batch} "
                                         f"--threads {args.threads} --json",
                              "onnxruntime_same_session_images_per_second": round(res[name]["ort"], 2),
                              "date": time.strftime("%Y-%m-%d %H:%M")}
        with open(card_path, "w") as f:
            json.dump(card, f, indent=2)
            f.write("\n")
    print(f"speed-up on Tessera: {ts / tt:.1f}x")


if __name__ == "__main__":
    main()
