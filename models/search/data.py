"""Patch cutting from real H&E slides + teacher soft-label caching.

Sets (all 224x224 uint8 RGB, NHWC), spatially disjoint:
  cmu_train   CMU-1-Small-Region.svs (skin H&E, 0.499 um/px), rows y < 80 % of the slide,
              random offsets, three "levels": native 0.5 um/px with 0.8-1.25x scale jitter,
              the pyramid-TIFF re-save level 0 (JPEG Q90 re-encode) and level 1 (1.0 um/px);
              flips / 90-degree rotations / colour jitter applied BEFORE the teacher labels it.
  tcga_train  tcga-cr-7395-01a-01-ts1.svs columns x < 60 % (levels 0 and 1), same augmentation;
              used only by run.py --split region (the default).
  cmu_val     CMU rows y >= 80 %, native, no augmentation   } the search's agreement objective
  tcga_val    TCGA columns 60-72 %, level 0, no augmentation } (tcga_val only with --split region)
  test        TCGA columns x >= 72 %, levels 0 (~0.5 um/px) and 1 (~1.0 um/px), no augmentation:
              never trained or searched on; the numbers in the model card.
Tissue filter: fraction of pixels with HSV saturation > 0.07 must be >= 0.5 (cmu_train keeps
up to 8 % low-tissue patches so the student also learns the teacher's behaviour on background).
Teacher labels: the 9-way probabilities of models/densenet121-pathmnist/model.onnx (ONNX Runtime).
"""
import hashlib
import json
import os
import time

import numpy as np
from PIL import Image

SLIDES = "../shared/data/slides"
CMU = "CMU-1-Small-Region.svs"
CMU_PYR = "CMU-1-Small-Region-pyramid-jpeg.tif"
TCGA = "tcga-cr-7395-01a-01-ts1.svs"
P = 224
VAL_SPLIT = 0.8


def tissue_fraction(x):
    """x: uint8 HxWx3. Fraction of pixels with HSV saturation > 0.07."""
    f = x.astype(np.float32)
    mx, mn = f.max(2), f.min(2)
    sat = (mx - mn) / np.maximum(mx, 1.0)
    return float((sat > 0.07).mean())


def colour_jitter(x, rng):
    """Brightness/contrast/saturation/per-channel gain jitter, mild (stain variation)."""
    f = x.astype(np.float32) / 255.0
    f = f * rng.uniform(0.92, 1.08, size=3)[None, None, :]          # per-channel gain (hue/stain)
    f = f * rng.uniform(0.9, 1.1)                                     # brightness
    m = f.mean()
    f = (f - m) * rng.uniform(0.85, 1.15) + m                         # contrast
    g = f.mean(2, keepdims=True)
    f = (f - g) * rng.uniform(0.8, 1.2) + g                           # saturation
    return np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)


# H&E stain matrix (Ruifrok & Johnston); rows = optical density of haematoxylin, eosin, DAB
_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32)
_HED /= np.linalg.norm(_HED, axis=1, keepdims=True)
_HED_INV = np.linalg.inv(_HED).astype(np.float32)


def stain_jitter(x, rng, sigma=0.25, bias=0.05):
    """Stronger stain variation: scale/shift the haematoxylin, eosin and residual concentrations
    (colour deconvolution), the usual HED augmentation for H&E; applied before the teacher labels it."""
    od = -np.log(np.maximum(x.astype(np.float32), 1.0) / 255.0)
    c = od.reshape(-1, 3) @ _HED_INV
    c = c * rng.uniform(1 - sigma, 1 + sigma, size=3)[None, :] + rng.uniform(-bias, bias, size=3)[None, :]
    rgb = 255.0 * np.exp(-np.maximum(c, 0.0) @ _HED)
    return np.clip(rgb.reshape(x.shape) + 0.5, 0, 255).astype(np.uint8)


def augment_colour(x, rng, stain_share=0.5):
    if rng.random() < stain_share:
        x = stain_jitter(x, rng)
    return colour_jitter(x, rng)


def geo(x, rng):
    k = int(rng.integers(4))
    x = np.rot90(x, k)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    return np.ascontiguousarray(x)


def _read(slide, level, x, y, size):
    ds = slide.level_downsamples[level]
    im = slide.read_region((int(round(x * ds)), int(round(y * ds))), level, (size, size)).convert("RGB")
    return im


def cut_train(slides_dir, n, seed, min_tissue=0.5, background_share=0.08):
    import openslide
    rng = np.random.default_rng(seed)
    svs = openslide.OpenSlide(os.path.join(slides_dir, CMU))
    pyr = openslide.OpenSlide(os.path.join(slides_dir, CMU_PYR))
    W, H = svs.level_dimensions[0]
    ymax0 = int(H * VAL_SPLIT)
    out, meta = [], []
    n_bg = 0
    while len(out) < n:
        r = rng.random()
        if r < 0.6:      # native svs, scale jitter
            s = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
            size = int(round(P * s))
            x = int(rng.integers(0, W - size)); y = int(rng.integers(0, ymax0 - size))
            im = _read(svs, 0, x, y, size).resize((P, P), Image.BILINEAR)
            src = "cmu-svs-L0"
        elif r < 0.8:    # pyramid tif level 0 (JPEG re-encode)
            x = int(rng.integers(0, W - P)); y = int(rng.integers(0, ymax0 - P))
            im = _read(pyr, 0, x, y, P); src = "cmu-tif-L0"
        else:            # pyramid tif level 1 (1.0 um/px)
            w1, h1 = pyr.level_dimensions[1]
            ymax1 = int(h1 * VAL_SPLIT)
            x = int(rng.integers(0, w1 - P)); y = int(rng.integers(0, ymax1 - P))
            im = _read(pyr, 1, x, y, P); src = "cmu-tif-L1"
        a = np.asarray(im, dtype=np.uint8)
        tf = tissue_fraction(a)
        if tf < min_tissue:
            if n_bg >= background_share * n:
                continue
            n_bg += 1
        a = augment_colour(geo(a, rng), rng)
        out.append(a); meta.append(src)
    return np.stack(out), meta


def cut_eval(slides_dir, name, levels, n_per_level, seed, y_from=0.0, x_from=0.0, x_to=1.0,
             min_tissue=0.5, augment=False):
    """Random 224 px patches lying fully inside [x_from, x_to) x [y_from, 1) of the slide (fractions)."""
    import openslide
    rng = np.random.default_rng(seed)
    s = openslide.OpenSlide(os.path.join(slides_dir, name))
    out, meta = [], []
    for lvl, n in zip(levels, n_per_level):
        w, h = s.level_dimensions[lvl]
        y0, x0, x1 = int(h * y_from), int(w * x_from), int(w * x_to)
        got, tries = 0, 0
        while got < n and tries < 50 * n:
            tries += 1
            size = P
            if augment and lvl == 0:   # 0.8-1.25x scale jitter at native resolution
                size = int(round(P * float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))))
            x = int(rng.integers(x0, x1 - size)); y = int(rng.integers(y0, h - size))
            im = _read(s, lvl, x, y, size)
            if size != P:
                im = im.resize((P, P), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
            if tissue_fraction(a) < min_tissue:
                continue
            if augment:
                a = augment_colour(geo(a, rng), rng)
            out.append(a); meta.append(f"{name}:L{lvl}:{x},{y}"); got += 1
    return np.stack(out), meta


def teacher_probs(x_uint8, teacher_onnx, threads=2, bs=16, log_every=1000):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(teacher_onnx, so, providers=["CPUExecutionProvider"])
    outs, t0 = [], time.time()
    for i in range(0, len(x_uint8), bs):
        xb = x_uint8[i:i + bs].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        outs.append(sess.run(["probabilities"], {"input": np.ascontiguousarray(xb)})[0])
        if log_every and (i // bs) % max(1, log_every // bs) == 0 and i:
            print(f"  teacher {i}/{len(x_uint8)} ({(i) / (time.time() - t0):.1f} img/s)", flush=True)
    return np.concatenate(outs).astype(np.float32)


TCGA_TRAIN_X = 0.60   # TCGA columns [0, 0.60) -> "tcga-train" (used only by --split region)
TCGA_VAL_X = 0.72     # TCGA columns [0.60, 0.72) -> "tcga-val"   (used only by --split region)
                      # TCGA columns [0.72, 1.0) -> test, never trained on or searched on


def build(cache_dir, slides_dir, teacher_onnx, n_train, n_tcga_train, n_val, n_test_l0, n_test_l1, seed, threads=2):
    """Cut patches + run the teacher once; cached in cache_dir keyed by the settings."""
    key = json.dumps([n_train, n_tcga_train, n_val, n_test_l0, n_test_l1, seed, os.path.getsize(teacher_onnx), 3])
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = os.path.join(cache_dir, f"patches-{tag}.npz")
    if os.path.exists(path):
        print("using cached patches + teacher labels:", path, flush=True)
        d = np.load(path, allow_pickle=False)
        return {k: d[k] for k in d.files}, path
    os.makedirs(cache_dir, exist_ok=True)
    t0 = time.time()
    sets = {}
    sets["cmu_train"] = cut_train(slides_dir, n_train, seed)
    n1 = n_tcga_train // 3
    sets["tcga_train"] = cut_eval(slides_dir, TCGA, [0, 1], [n_tcga_train - n1, n1], seed + 3,
                                  x_to=TCGA_TRAIN_X, augment=True)
    sets["cmu_val"] = cut_eval(slides_dir, CMU, [0], [n_val // 2], seed + 1, y_from=VAL_SPLIT)
    sets["tcga_val"] = cut_eval(slides_dir, TCGA, [0], [n_val // 2], seed + 4, x_from=TCGA_TRAIN_X, x_to=TCGA_VAL_X)
    sets["test"] = cut_eval(slides_dir, TCGA, [0, 1], [n_test_l0, n_test_l1], seed + 2, x_from=TCGA_VAL_X)
    print("cut " + ", ".join(f"{k}={len(v[0])}" for k, v in sets.items()) + f" patches in {time.time() - t0:.0f}s", flush=True)
    t0 = time.time()
    allx = np.concatenate([v[0] for v in sets.values()])
    probs = teacher_probs(allx, teacher_onnx, threads)
    print(f"teacher labelled {len(allx)} patches in {time.time() - t0:.0f}s", flush=True)
    d, i = {}, 0
    for k, (x, m) in sets.items():
        d["x_" + k], d["p_" + k], d["src_" + k] = x, probs[i:i + len(x)], np.array(m)
        i += len(x)
    np.savez(path, **d)
    return d, path


def load_tiles(d):
    import glob
    classes = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
    files = sorted(glob.glob(os.path.join(d, "*.tif")))
    x = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f in files])
    y = np.array([classes.index(os.path.basename(f).split("-")[0]) for f in files])
    return [os.path.basename(f) for f in files], x, y
