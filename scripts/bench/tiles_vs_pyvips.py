#!/usr/bin/env python3
"""Patch reading: Tessera's reader against a Python pyvips region reader, in one run.

Both read the same tissue tiles (224 px, the list Tessera's grid keeps) of the same
generated 20,000 x 20,000 pyramidal JPEG TIFF, once as uint8 and once normalised to float
NCHW (ImageNet mean/std), on one thread; Tessera also on all cores. Prints a table and one
JSON line with the ratios. Needs `pip install pyvips numpy` and a release build of tessera.

    python3 scripts/bench/tiles_vs_pyvips.py [--size 20000] [--tessera .build/release/tessera]
"""
import argparse, csv, json, os, subprocess, sys, tempfile, time

import numpy as np
import pyvips

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def pyvips_pass(path, tiles, size, normalise):
    image = pyvips.Image.new_from_file(path, access="random")
    region = pyvips.Region.new(image)
    scale = (1.0 / (255.0 * STD)).astype(np.float32)
    bias = (-MEAN / STD).astype(np.float32)
    start = time.perf_counter()
    for x, y in tiles:
        patch = np.frombuffer(region.fetch(x, y, size, size), dtype=np.uint8).reshape(size, size, image.bands)
        if normalise:
            out = (patch[:, :, :3].astype(np.float32) * scale + bias).transpose(2, 0, 1)
            out = np.ascontiguousarray(out)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--tessera", default=".build/release/tessera")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()

    bench = json.loads(subprocess.run([args.tessera, "bench", "tiles", "--size", str(args.size), "--json"],
                                      check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    slide = bench["slide"]
    with tempfile.TemporaryDirectory() as scratch:
        listing = os.path.join(scratch, "tiles.csv")
        subprocess.run([args.tessera, "tiles", slide, "--no-read", "--tiles-out", listing, "--json"],
                       check=True, capture_output=True)
        with open(listing) as handle:
            tiles = [(int(row["x"]), int(row["y"])) for row in csv.DictReader(handle)]
    rows = []
    for fmt, normalise in (("u8", False), ("float-nchw", True)):
        seconds = min(pyvips_pass(slide, tiles, 224, normalise) for _ in range(args.passes))
        reference = len(tiles) / seconds
        for row in bench["rows"]:
            if row["format"] == fmt:
                rows.append({"format": fmt, "threads": row["threads"],
                             "tessera_patches_per_second": row["patches_per_second"],
                             "pyvips_1_thread_patches_per_second": reference,
                             "ratio": row["patches_per_second"] / reference,
                             "ratio_per_core": row["patches_per_second_per_core"] / reference})
    print(f"slide {slide}: {len(tiles)} tissue tiles of 224 px")
    print(f"{'format':<11} {'threads':>7} {'tessera/s':>10} {'pyvips/s (1 thr)':>17} {'ratio':>6} {'per core':>9}")
    for r in rows:
        print(f"{r['format']:<11} {r['threads']:>7} {r['tessera_patches_per_second']:>10.0f} "
              f"{r['pyvips_1_thread_patches_per_second']:>17.0f} {r['ratio']:>6.2f} {r['ratio_per_core']:>9.2f}")
    print(f"tessera peak RSS {bench['peak_rss_bytes'] / 2**20:.1f} MiB")
    print(json.dumps({"benchmark": "tiles_vs_pyvips", "tiles": len(tiles), "rows": rows,
                      "peak_rss_bytes": bench["peak_rss_bytes"]}))


if __name__ == "__main__":
    sys.exit(main())
