#!/usr/bin/env python3
"""Re-measure the throughput numbers of a compact-model card (student and teacher, Tessera + ONNX Runtime).

  nice -n 10 python models/search/bench_card.py                       # models/tessera-crc-compact/model.json
  nice -n 10 python models/search/bench_card.py --out /tmp/repro --runs 5

run.py already measures these at the end of the recipe; this script repeats the measurement (e.g. once the
box is quieter, or with a newer engine build) with the same code (`run.measure_throughput`: best of --runs
rounds, each round `tessera models bench MODEL --batch 64 --threads 2 --json` and ONNX Runtime for the
student and the teacher back to back) and rewrites metrics.throughput_batch64_2_threads and the flat
speed keys of the card, and the teacher's own numbers in models/densenet121-pathmnist/model.json.
Other fields (sha256, agreement, ...) are left as the recipe wrote them. --no-measure only copies the
numbers already stored in the compact card into the teacher card.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import default_tessera_bin, measure_throughput  # noqa: E402

MODELS = os.path.join(HERE, "..")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(MODELS, "tessera-crc-compact"), help="folder with model.onnx + model.json")
    ap.add_argument("--teacher", default=os.path.join(MODELS, "densenet121-pathmnist", "model.onnx"))
    ap.add_argument("--tessera-bin", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-measure", action="store_true")
    args = ap.parse_args()
    card_path = os.path.join(args.out, "model.json")
    card = json.load(open(card_path))
    m = card["metrics"]
    if args.no_measure:
        tp = m["throughput_batch64_2_threads"]
    else:
        bin_ = args.tessera_bin or default_tessera_bin()
        if not bin_:
            sys.exit("no tessera binary: build it (swift build -c release --product tessera --scratch-path "
                     ".build-models) or pass --tessera-bin")
        tp = measure_throughput(os.path.join(args.out, "model.onnx"), args.teacher, bin_, args.threads, args.runs)
    m["throughput_batch64_2_threads"] = tp
    m["tessera_images_per_second_2_threads"] = {"batch64": tp["student"]["tessera"]}
    m["teacher_tessera_images_per_second_2_threads"] = {"batch64": tp["teacher"]["tessera"]}
    m["speedup_vs_teacher_tessera_batch64"] = tp["speedup_tessera"]
    m["onnxruntime_images_per_second_2_threads"] = {"batch64": tp["student"]["onnxruntime"]}
    m["teacher_onnxruntime_images_per_second_2_threads"] = {"batch64": tp["teacher"]["onnxruntime"]}
    m["speedup_vs_teacher_onnxruntime_batch64"] = tp["speedup_onnxruntime"]
    with open(card_path, "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    teacher_card = os.path.join(os.path.dirname(args.teacher), "model.json")
    if os.path.exists(teacher_card):
        tc = json.load(open(teacher_card))
        tm = tc.setdefault("metrics", {})
        tm.setdefault("onnxruntime_images_per_second_2_threads", {})["batch64"] = tp["teacher"]["onnxruntime"]
        tm["tessera_images_per_second_2_threads"] = {"batch64": tp["teacher"]["tessera"]}
        tm["tessera_bench"] = {"command": tp.get("tessera_command"), "method": tp["method"], "date": tp["date"],
                               "measured_by": "models/search/bench_card.py (with the compact model, back to back)"}
        with open(teacher_card, "w") as f:
            json.dump(tc, f, indent=2)
            f.write("\n")
    print(json.dumps(tp, indent=1))


if __name__ == "__main__":
    main()
