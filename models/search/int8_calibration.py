"""Builds the INT8 calibration folder of an LC25000 model: one tile per *training* group, 16 per
class, seed 0, as symlinks (validation groups never calibrate), then prints the quantize command.

    python models/search/int8_calibration.py OUT_DIR
    tessera models quantize densenet121-lc25000 --calibration OUT_DIR --limit 80
"""
import csv, os, random, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "..", "shared", "data", "patches", "lc25000")


def main(out):
    split = {(r["class"], r["group"]): r["split"] for r in csv.DictReader(open(os.path.join(ROOT, "models", "lc25000-split.csv")))}
    rows = [r for r in csv.DictReader(open(os.path.join(DATA, "tiles.csv"))) if split.get((r["class"], r["group"])) == "train"]
    random.Random(0).shuffle(rows)
    seen, by_class = set(), {}
    for row in rows:
        key = (row["class"], row["group"])
        if key not in seen:
            seen.add(key)
            by_class.setdefault(row["class"], []).append(row)
    os.makedirs(out, exist_ok=True)
    count = 0
    for name, picked in sorted(by_class.items()):
        for row in picked[:16]:
            link = os.path.join(out, "%s_%s" % (name, os.path.basename(row["file"])))
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(DATA, row["file"])), link)
            count += 1
    print("%d calibration tiles in %s; now: tessera models quantize MODEL --calibration %s --limit %d" % (count, out, out, count))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "calibration-lc25000")
