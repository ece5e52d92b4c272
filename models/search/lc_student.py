#!/usr/bin/env python3
"""Student experiments on LC25000: distil one architecture from the shipped baseline and score it on the tune groups.

  python models/search/lc_student.py --arch JSON [--views 4] [--epochs 30] [--geo]

The baseline's logits come from models/densenet121-lc25000/model.onnx (ONNX Runtime) on the exact views the
student sees, cached per view in models/search/cache. Scores are on view 0 of the tune groups (held out inside
the training split); the validation groups are printed only with --show-val (for the final run, never for choice).
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import lc  # noqa: E402
import space  # noqa: E402
import train  # noqa: E402
from lc_recipe import cached_ort, ort_session, soft_cache_path, student_logits, view_cache  # noqa: E402


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="The shipped compact model's training: --views 2 --epochs 20 --geo with the arch_json "
                                        "of c08 in models/search/runs/lc25000-seed0/candidates.csv (tune groups 0.963 on one "
                                        "thread, 0.964 in the recipe's two-thread run).")
    ap.add_argument("--arch", required=True,
                    help='architecture JSON of models/search/space.py, e.g. {"res": 112, "stem": 24, "head": 0, "stages": '
                         '[{"type": "dense", "depth": 3, "k": 5, "width": 16, "expand": 1}, ...4 stages]} (the arch_json '
                         'column of candidates.csv)')
    ap.add_argument("--views", type=int, default=2, help="views per training tile: view 0 rotation/flip, the others strong "
                                                          "augmentation (default 2)")
    ap.add_argument("--epochs", type=int, default=8, help="distillation epochs (default 8)")
    ap.add_argument("--geo", action="store_true", help="rotate by a random multiple of 90 degrees and flip every batch")
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the cross-entropy on the true label (default 0.5)")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule (default 3e-3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tune-frac", type=float, default=0.1)
    ap.add_argument("--cache", default=os.path.join(HERE, "cache"))
    ap.add_argument("--baseline", default=os.path.join(MODELS, "densenet121-lc25000", "model.onnx"))
    ap.add_argument("--out", default=None, help="save the state dict here")
    ap.add_argument("--show-val", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    os.makedirs(args.cache, exist_ok=True)
    d = lc.load(split=lc.read_split())
    tr, va = np.flatnonzero(d["split"] == "train"), np.flatnonzero(d["split"] == "val")
    y_tr, g_tr = d["y"][tr], d["gid"][tr]
    tune_g = lc.tune_groups(y_tr, g_tr, args.tune_frac, args.seed)
    is_tune = np.isin(g_tr, tune_g)
    fit_t, tune_t = np.flatnonzero(~is_tune), np.flatnonzero(is_tune)
    split_hash = hashlib.sha1(open(lc.SPLIT_CSV, "rb").read()).hexdigest()[:8]
    bsha = hashlib.sha256(open(args.baseline, "rb").read()).hexdigest()[:8]
    n = len(tr)
    sess = ort_session(args.baseline)
    views = [view_cache(d["x"][tr], j, args.seed, args.cache, split_hash) for j in range(args.views)]
    soft = [cached_ort(soft_cache_path(args.cache, f"view{j}", args.seed, split_hash, bsha), f"baseline logits view {j}",
                       sess, views[j], log_every=40) for j in range(args.views)]
    fit_v = np.concatenate([j * n + fit_t for j in range(args.views)])
    allv = np.concatenate(views)
    alls = np.concatenate(soft)
    y_v = np.tile(y_tr, args.views)
    x_fit, s_fit, y_fit = allv[fit_v], alls[fit_v], y_v[fit_v]
    log(f"fit views {len(x_fit)}; baseline agreement with labels on them {(s_fit.argmax(1) == y_fit).mean():.4f}")
    try:
        arch = json.loads(args.arch)
        space.Student(arch, num_classes=len(lc.CLASSES))
    except (ValueError, KeyError, TypeError) as e:
        sys.exit(f"--arch: not an architecture of models/search/space.py ({e}); e.g. the arch_json column of "
                 "models/search/runs/lc25000-seed0/candidates.csv")
    torch.manual_seed(args.seed)
    m = space.Student(arch, num_classes=len(lc.CLASSES))
    log(f"arch {space.arch_str(arch)} {space.count_macs(m) / 1e6:.1f} MMACs")
    t = time.time()
    train.distill(m, x_fit, s_fit, args.epochs, args.seed, hard=y_fit, geo=args.geo, logits=True, alpha=args.alpha,
                  lr=args.lr, log=log)
    log(f"trained in {time.time() - t:.0f}s")
    x_tune, y_tune = views[0][tune_t], y_tr[tune_t]
    s = lc.scores(y_tune, student_logits(m, x_tune).argmax(1))
    log(f"TUNE bal.acc {s['balanced_accuracy']:.4f} acc {s['accuracy']:.4f}")
    if args.show_val:
        z = student_logits(m, d["x"][va])
        s = lc.scores(d["y"][va], z.argmax(1))
        log(f"VAL bal.acc {s['balanced_accuracy']:.4f} acc {s['accuracy']:.4f}\n{s['cm']}")
    if args.out:
        torch.save(m.state_dict(), args.out)


if __name__ == "__main__":
    main()
