#!/usr/bin/env bash
# Measures how many deep-zoom tiles per second `tessera serve` hands the slide viewer: starts a
# server (no workers) on loopback, uploads SLIDE (default: a generated 30k x 30k slide), then
# fetches distinct, never-cached tiles with CLIENTS parallel clients at full resolution and at
# two zoomed-out levels, and prints tiles/s for each.
# Usage: scripts/bench/viewer-tiles.sh [SLIDE] [TILES per level, default 400] [CLIENTS, default 4]
set -euo pipefail
cd "$(dirname "$0")/../.."
tessera=${TESSERA:-.build/release/tessera}
[ -x "$tessera" ] || tessera=.build/debug/tessera
work=$(mktemp -d)
slide=${1:-}
count=${2:-400}
clients=${3:-4}
if [ -z "$slide" ]; then
  slide=${XDG_CACHE_HOME:-$HOME/.cache}/tessera/viewer-30000.tif
  mkdir -p "$(dirname "$slide")"
  [ -f "$slide" ] || "$tessera" sample-slide "$slide" --width 30000 --height 30000 >/dev/null
fi
"$tessera" serve --data "$work/data" --port 0 --workers 0 --http-threads "$clients" --log-level error >"$work/serve.out" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/.*listening on //p' "$work/serve.out")
job=$(curl -sf -T "$slide" "$base/v1/slides?filename=$(basename "$slide")" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
read -r width height < <("$tessera" inspect "$slide" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["width"], d["height"])')
python3 - "$width" "$height" "$count" "$clients" "$base" "$job" <<'PY'
import math, random, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
width, height, count, clients, base, job = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
top = math.ceil(math.log2(max(width, height)))
random.seed(1)
for level in (top, top - 2, top - 4):
    scale = 2 ** (top - level)
    columns, rows = math.ceil(width / scale / 256), math.ceil(height / scale / 256)
    cells = random.sample([(c, r) for c in range(columns) for r in range(rows)], min(count, columns * rows))
    def get(cell):
        with urllib.request.urlopen(f"{base}/v1/jobs/{job}/tiles/{level}/{cell[0]}/{cell[1]}.jpg") as response:
            return len(response.read())
    start = time.time()
    with ThreadPoolExecutor(clients) as pool:
        sizes = list(pool.map(get, cells))
    seconds = time.time() - start
    print(f"level {level} (1/{scale} of full resolution): {len(cells)} tiles in {seconds:.2f} s = "
          f"{len(cells) / seconds:.0f} tiles/s, {sum(sizes) / len(sizes) / 1024:.1f} KiB per tile")
PY
