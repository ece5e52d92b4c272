#!/usr/bin/env python3
"""Compare two runs of the recipe (reproducibility check) and optionally record the comparison in a card.

  python models/search/compare_runs.py models/tessera-crc-compact /tmp/repro [--write]

Prints, side by side, the chosen architecture, MACs, params, sha256 of model.onnx, agreement numbers,
9-tile accuracy and the throughput numbers of both cards. With --write, stores the comparison as
`reproducibility` in the first card (the committed one).
"""
import argparse
import json
import os

KEYS = [
    ("architecture_str", lambda c: c["architecture_str"]),
    ("chosen candidate", lambda c: c["search"]["chosen"]),
    ("macs", lambda c: c["macs"]),
    ("params", lambda c: c["params"]),
    ("sha256 model.onnx", lambda c: c["sha256"][:16]),
    ("teacher_agreement_test", lambda c: c["metrics"]["teacher_agreement_test"]),
    ("teacher_agreement_test_level0_0.5um", lambda c: c["metrics"]["teacher_agreement_test_level0_0.5um"]),
    ("balanced_agreement_test", lambda c: c["metrics"]["balanced_agreement_test"]),
    ("teacher_agreement_search_val", lambda c: c["metrics"]["teacher_agreement_search_val"]),
    ("accuracy_nct_crc_he_9_tiles", lambda c: c["metrics"]["accuracy_nct_crc_he_9_tiles"]),
    ("agreement_with_teacher_9_tiles", lambda c: c["metrics"]["agreement_with_teacher_9_tiles"]),
    ("tessera images/s student", lambda c: c["metrics"]["throughput_batch64_2_threads"]["student"]["tessera"]),
    ("tessera images/s teacher", lambda c: c["metrics"]["throughput_batch64_2_threads"]["teacher"]["tessera"]),
    ("speedup_tessera", lambda c: c["metrics"]["throughput_batch64_2_threads"].get("speedup_tessera")),
    ("onnxruntime images/s student", lambda c: c["metrics"]["throughput_batch64_2_threads"]["student"]["onnxruntime"]),
    ("onnxruntime images/s teacher", lambda c: c["metrics"]["throughput_batch64_2_threads"]["teacher"]["onnxruntime"]),
    ("recipe_seconds", lambda c: c["provenance"]["recipe_seconds"]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    ca = json.load(open(os.path.join(args.a, "model.json")))
    cb = json.load(open(os.path.join(args.b, "model.json")))
    rows = []
    for name, get in KEYS:
        try:
            va, vb = get(ca), get(cb)
        except (KeyError, TypeError):
            continue
        rows.append({"what": name, "run1": va, "run2": vb, "same": va == vb})
        print(f"{name:38s} {str(va):>40s} {str(vb):>40s} {'same' if va == vb else 'DIFFERS'}")
    same_cm = ca["metrics"]["confusion_matrix_test"]["matrix"] == cb["metrics"]["confusion_matrix_test"]["matrix"]
    print(f"{'confusion matrix':38s} {'identical' if same_cm else 'DIFFERS'}")
    rows.append({"what": "confusion_matrix_test", "same": same_cm})
    if args.write:
        ca["reproducibility"] = {"run1": ca["command"], "run2": cb["command"] + f" (into {args.b})",
                                 "comparison": rows, "note": args.note}
        with open(os.path.join(args.a, "model.json"), "w") as f:
            json.dump(ca, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
