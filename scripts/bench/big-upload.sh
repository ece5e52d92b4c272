#!/usr/bin/env bash
# Uploads a body larger than 2 GiB to a real `tessera serve` and reports the server's resident
# memory before and after (VmRSS, VmHWM from /proc): the body streams to disk, never to memory.
# The body is not a slide, so the server answers 422 after storing and checking it.
#   scripts/bench/big-upload.sh [MiB]     (default 2200)
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-2200}
tessera=.build/release/tessera
[ -x "$tessera" ] || swift build -c release --product tessera
scratch=$(mktemp -d)
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$scratch"' EXIT
port=18125
"$tessera" serve --data "$scratch/data" --port $port --workers 0 --log-level error > "$scratch/serve.log" 2>&1 &
server=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
before=$(awk '/VmRSS/{print $2}' /proc/$server/status)
start=$(date +%s.%N)
code=$(head -c "$((mib * 1024 * 1024))" /dev/zero | curl -s -o "$scratch/body" -w '%{http_code}' -T - \
  -H "Content-Length: $((mib * 1024 * 1024))" "http://127.0.0.1:$port/v1/slides?filename=big.svs")
end=$(date +%s.%N)
after=$(awk '/VmRSS/{print $2}' /proc/$server/status)
peak=$(awk '/VmHWM/{print $2}' /proc/$server/status)
left=$(find "$scratch/data/uploads" "$scratch/data/slides" -type f | wc -l)
python3 - "$mib" "$code" "$before" "$after" "$peak" "$start" "$end" "$left" <<'PY'
import json, sys
mib, code, before, after, peak, start, end, left = sys.argv[1:]
seconds = float(end) - float(start)
r = {"benchmark": "big_upload", "bytes": int(mib) * 2**20, "status": int(code), "seconds": round(seconds, 2),
     "mib_per_second": round(int(mib) / seconds, 1), "rss_before_mib": int(before) / 1024,
     "rss_after_mib": int(after) / 1024, "rss_peak_mib": int(peak) / 1024, "files_left": int(left)}
print(f"uploaded {mib} MiB in {seconds:.1f} s ({r['mib_per_second']} MiB/s), answer {code}")
print(f"server RSS: before {r['rss_before_mib']:.1f} MiB, after {r['rss_after_mib']:.1f} MiB, peak {r['rss_peak_mib']:.1f} MiB; files left {left}")
print(json.dumps(r))
PY
