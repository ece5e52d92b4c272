#!/usr/bin/env bash
# Load run against a real `tessera serve` on loopback: wrk (16 connections, under the
# per-IP limit of 32) on /healthz and /v1/jobs while uploads run in parallel. Prints p50/p99 latency and counts of 5xx answers, then a JSON line.
#   scripts/bench/http-load.sh [seconds]       (needs: apt-get install wrk; a release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20}
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 1; }
tessera=.build/release/tessera
[ -x "$tessera" ] || swift build -c release --product tessera
scratch=$(mktemp -d)
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$scratch"' EXIT
"$tessera" sample-slide "$scratch/base.tif" --width 3000 --height 2000 >/dev/null
port=18123
"$tessera" serve --data "$scratch/data" --port $port --workers 1 --log-level error > "$scratch/serve.log" 2>&1 &
server=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
# Parallel uploads: distinct content each time (a byte appended), so every upload is stored and queued.
uploads() {
  local n=0 codes=""
  local end=$((SECONDS + seconds))
  while [ $SECONDS -lt $end ]; do
    cp "$scratch/base.tif" "$scratch/u$1.tif"; printf '%s' "$1-$n" >> "$scratch/u$1.tif"
    codes+="$(curl -s -o /dev/null -w '%{http_code}' -T "$scratch/u$1.tif" "http://127.0.0.1:$port/v1/slides?filename=u$1-$n.tif") "
    n=$((n + 1))
  done
  echo "$codes" > "$scratch/codes$1"
}
uploads 1 & up1=$!
uploads 2 & up2=$!
wrk -t2 -c16 -d"${seconds}s" --latency "http://127.0.0.1:$port/healthz" > "$scratch/healthz.txt"
wrk -t2 -c16 -d"${seconds}s" --latency "http://127.0.0.1:$port/v1/jobs?limit=20" > "$scratch/jobs.txt"
wait $up1 $up2 2>/dev/null || true
python3 - "$scratch" <<'PY'
import json, re, sys, pathlib
d = pathlib.Path(sys.argv[1])
def parse(name):
    text = (d / name).read_text()
    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", text)
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v if u == "ms" else v * 1000
    reqs = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    return {"requests": reqs, "requests_per_second": rps, "p50_ms": lat(50), "p99_ms": lat(99), "non_2xx": non2xx}
codes = " ".join((d / f"codes{i}").read_text() for i in (1, 2)).split()
result = {"benchmark": "http_load", "healthz": parse("healthz.txt"), "jobs": parse("jobs.txt"),
          "uploads": len(codes), "upload_5xx": sum(c.startswith("5") for c in codes),
          "upload_codes": sorted(set(codes))}
print(f"{'endpoint':<10} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
for k in ("healthz", "jobs"):
    r = result[k]
    print(f"{k:<10} {r['requests']:>9} {r['requests_per_second']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['non_2xx']:>8}")
print(f"uploads    {result['uploads']} (codes {', '.join(result['upload_codes'])}), 5xx: {result['upload_5xx']}")
print(json.dumps(result))
PY
