"""LC25000 helpers: the group split, tile loading, strong augmentation and the card metrics.

The split is by original image ((class, group) from tiles.csv), never by file: LC25000 made ~20
rotated/flipped copies of every original image, so a file-level split leaks near-copies of the
validation tiles into training. `make_split` draws, per class, a fixed-seed 75/25 split of that
class's groups and writes it to models/lc25000-split.csv (class,group,split) so it can be checked.
"""
import csv
import io
import os

import numpy as np
from PIL import Image, ImageFilter

import data  # stain_jitter, colour_jitter

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data"))  # ../shared/data from the repo root
LC_DIR = os.path.join(SHARED, "patches", "lc25000")
SPLIT_CSV = os.path.join(HERE, "..", "lc25000-split.csv")
CLASSES = ["colon_aca", "colon_n", "lung_aca", "lung_n", "lung_scc"]


def read_tiles(lc_dir=LC_DIR):
    with open(os.path.join(lc_dir, "tiles.csv")) as f:
        return list(csv.DictReader(f))


def make_split(rows, seed=0, val_frac=0.25, path=SPLIT_CSV):
    """Per-class stratified split of the groups; writes and returns {(class, group): 'train'|'val'}."""
    rng = np.random.default_rng(seed)
    split = {}
    for c in CLASSES:
        groups = sorted({int(r["group"]) for r in rows if r["class"] == c})
        perm = rng.permutation(len(groups))
        n_val = int(round(val_frac * len(groups)))
        for i, gi in enumerate(perm):
            split[(c, groups[gi])] = "val" if i < n_val else "train"
    if path:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "group", "split"])
            for (c, g) in sorted(split):
                w.writerow([c, g, split[(c, g)]])
    return split


def read_split(path=SPLIT_CSV):
    with open(path) as f:
        return {(r["class"], int(r["group"])): r["split"] for r in csv.DictReader(f)}


def load(lc_dir=LC_DIR, split=None):
    """-> dict of x (uint8 N,224,224,3), y, gid (group index unique over classes), files, split names."""
    rows = read_tiles(lc_dir)
    split = split or read_split()
    x = np.stack([np.asarray(Image.open(os.path.join(lc_dir, r["file"])).convert("RGB"), dtype=np.uint8)
                  for r in rows])
    y = np.array([CLASSES.index(r["class"]) for r in rows])
    keys = [(r["class"], int(r["group"])) for r in rows]
    uniq = {k: i for i, k in enumerate(sorted(set(keys)))}
    gid = np.array([uniq[k] for k in keys])
    sp = np.array([split[k] for k in keys])
    return {"x": x, "y": y, "gid": gid, "files": [r["file"] for r in rows], "split": sp,
            "group": np.array([k[1] for k in keys])}


def tune_groups(y, gid, frac, seed=0):
    """Per class, a seeded share `frac` of the given (training) groups: held out inside the training split for
    model choice and temperature fitting. y, gid: per tile. Returns the chosen gids."""
    rng = np.random.default_rng([seed, 1])
    out = []
    for c in range(len(CLASSES)):
        groups = np.unique(gid[y == c])
        n = int(round(frac * len(groups)))
        out.extend(groups[np.sort(rng.permutation(len(groups))[:n])].tolist())
    return np.array(sorted(out), dtype=gid.dtype)


# ---- augmentation --------------------------------------------------------------------------------

def rescale(x, f):
    """Zoom by f (f > 1: magnify, centre crop; f < 1: shrink, mirror-pad) back to the same size."""
    n = x.shape[0]
    m = int(round(n * f))
    if m == n:
        return x
    im = np.asarray(Image.fromarray(x).resize((m, m), Image.BILINEAR))
    if m > n:
        o = (m - n) // 2
        return np.ascontiguousarray(im[o:o + n, o:o + n])
    p = n - m
    return np.pad(im, ((p // 2, p - p // 2), (p // 2, p - p // 2), (0, 0)), mode="symmetric")


def strong_augment(x, rng):
    """Rotation (90-degree + small free angle), flips, scale jitter 0.8-1.25, H&E stain jitter,
    brightness/contrast/saturation jitter, Gaussian blur, JPEG re-encode."""
    x = np.rot90(x, int(rng.integers(4)))
    if rng.random() < 0.5:
        x = x[:, ::-1]
    x = np.ascontiguousarray(x)
    if rng.random() < 0.3:  # free rotation, reflect-filled
        im = Image.fromarray(np.pad(x, ((48, 48), (48, 48), (0, 0)), mode="symmetric"))
        im = im.rotate(float(rng.uniform(-45, 45)), Image.BILINEAR)
        x = np.asarray(im)[48:-48, 48:-48]
    if rng.random() < 0.7:
        x = rescale(x, float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))))
    if rng.random() < 0.8:
        x = data.stain_jitter(x, rng, sigma=0.3, bias=0.05)
    x = data.colour_jitter(x, rng)
    if rng.random() < 0.3:
        x = np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.5)))))
    if rng.random() < 0.5:
        b = io.BytesIO()
        Image.fromarray(x).save(b, "JPEG", quality=int(rng.integers(40, 90)))
        x = np.asarray(Image.open(b).convert("RGB"))
    return np.ascontiguousarray(x, dtype=np.uint8)


def light_augment(x, rng):
    x = np.rot90(x, int(rng.integers(4)))
    if rng.random() < 0.5:
        x = x[:, ::-1]
    return np.ascontiguousarray(x)


# ---- metrics --------------------------------------------------------------------------------------

def softmax(z, T=1.0):
    z = z / T
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def confusion(y, pred, k=len(CLASSES)):
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (y, pred), 1)
    return m


def scores(y, pred, k=len(CLASSES)):
    cm = confusion(y, pred, k)
    rec = np.diag(cm) / np.maximum(cm.sum(1), 1)
    prec = np.diag(cm) / np.maximum(cm.sum(0), 1)
    return {"accuracy": float(np.trace(cm) / cm.sum()), "balanced_accuracy": float(rec.mean()),
            "recall": rec, "precision": prec, "cm": cm}


def ece(p, y, bins=15):
    conf, pred = p.max(1), p.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    e = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            e += m.mean() * abs(float((pred[m] == y[m]).mean()) - float(conf[m].mean()))
    return float(e)


def fit_temperature(logits, y):
    """Temperature minimising the validation NLL (golden-section search on log T in [-3, 3])."""
    def nll(logt):
        p = softmax(logits, np.exp(logt))
        return -float(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).mean())
    a, b = -3.0, 3.0
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(80):
        if nll(c) < nll(d):
            b = d
        else:
            a = c
        c, d = b - g * (b - a), a + g * (b - a)
    return float(np.exp((a + b) / 2))


def bootstrap(y, pred, gid, n=2000, seed=0):
    """95% CIs by resampling groups (original images) with replacement."""
    rng = np.random.default_rng(seed)
    groups = np.unique(gid)
    idx_by_g = {g: np.flatnonzero(gid == g) for g in groups}
    acc, bal, rec, prec, cms = [], [], [], [], []
    for _ in range(n):
        gs = rng.choice(groups, size=len(groups), replace=True)
        idx = np.concatenate([idx_by_g[g] for g in gs])
        s = scores(y[idx], pred[idx])
        acc.append(s["accuracy"]); bal.append(s["balanced_accuracy"])
        rec.append(s["recall"]); prec.append(s["precision"]); cms.append(s["cm"])
    q = lambda a: np.percentile(np.asarray(a), [2.5, 97.5], axis=0)  # noqa: E731
    return {"accuracy": q(acc), "balanced_accuracy": q(bal), "recall": q(rec), "precision": q(prec), "cm": q(cms)}


def report(logits, y, gid, T, classes=CLASSES, seed=0):
    """Card metrics block: point estimates + 95% group-bootstrap CIs, ECE before/after temperature."""
    pred = logits.argmax(1)
    s, ci = scores(y, pred, len(classes)), bootstrap(y, pred, gid, seed=seed)
    r3 = lambda v: round(float(v), 4)  # noqa: E731
    pc = {c: {"precision": r3(s["precision"][i]), "precision_ci95": [r3(ci["precision"][0][i]), r3(ci["precision"][1][i])],
              "recall": r3(s["recall"][i]), "recall_ci95": [r3(ci["recall"][0][i]), r3(ci["recall"][1][i])],
              "tiles": int(s["cm"][i].sum())}
          for i, c in enumerate(classes)}
    return {
        "tiles": int(len(y)), "groups": int(len(np.unique(gid))),
        "accuracy": r3(s["accuracy"]), "accuracy_ci95": [r3(v) for v in ci["accuracy"]],
        "balanced_accuracy": r3(s["balanced_accuracy"]), "balanced_accuracy_ci95": [r3(v) for v in ci["balanced_accuracy"]],
        "per_class": pc,
        "confusion": {"rows": "true class", "columns": "predicted class", "classes": list(classes),
                      "matrix": s["cm"].tolist(),
                      "ci95_low": np.rint(ci["cm"][0]).astype(int).tolist(),
                      "ci95_high": np.rint(ci["cm"][1]).astype(int).tolist()},
        "ece_15_bins": {"before_temperature": r3(ece(softmax(logits), y)), "after_temperature": r3(ece(softmax(logits, T), y)),
                        "temperature": round(T, 4)},
        "ci_method": "95% percentile bootstrap over groups (original LC25000 images), 2000 resamples, seed 0",
    }
