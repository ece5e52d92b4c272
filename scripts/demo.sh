#!/usr/bin/env bash
# The main job on an embedded default: generates a sample slide (synthetic H&E-like tissue,
# 0.5 um/px pyramidal JPEG TIFF), inspects it, tiles it, and analyses it with the default model
# through the job queue, writing out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product tessera
tessera=.build/release/tessera
mkdir -p out/demo
slide=out/demo/sample-slide.tif
[ -f "$slide" ] || "$tessera" sample-slide "$slide" --width 8000 --height 6000
"$tessera" inspect "$slide"
echo
"$tessera" tiles "$slide" --mpp 0.5 --tile-size 224 --mask out/demo/tissue-mask.png
echo
"$tessera" run "$slide" --out out/demo/results --data out/demo/data
echo
echo "tissue mask with the tile grid: out/demo/tissue-mask.png"
echo "results (summary.json, tiles.csv, annotations.geojson, heatmap.png, overlay.png): out/demo/results/sample-slide.tif/"
