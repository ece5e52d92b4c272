#!/usr/bin/env bash
# End-to-end checks of the tessera binary on real and odd inputs: every bad input gives a
# one-line error and exit code 1 (never a crash or a hang); the acceptance numbers hold.
set -uo pipefail
cd "$(dirname "$0")/.."
tessera=${TESSERA:-.build/debug/tessera}
data=../shared/data
passed=0; failed=0
check() { # name, condition
  if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1"; fi
}
run() { # stdout to $out, stderr to $err, exit code to $rc; 120 s limit so a hang fails
  out=$(timeout 120 "$tessera" "$@" 2>/tmp/tessera-cli-err); rc=$?; err=$(cat /tmp/tessera-cli-err)
}
run inspect /nonexistent.svs
check "missing file: exit 1, one line" '[ $rc -eq 1 ] && [ $(printf "%s\n" "$err" | wc -l) -eq 1 ]'
run run /nonexistent.svs --job-memory 4X
check "a budget typo names the flag and the subcommand" '[ $rc -eq 64 ] && grep -q "job-memory 4X: give a size" <<<"$err" && grep -q "tessera run --help" <<<"$err"'
if [ -d "$data" ]; then
  for file in "$data"/odd-inputs/*; do
    run tiles "$file" --slide-mpp 0.5 --tile-size 64 --json
    check "$(basename "$file"): exit 0 or 1 (got $rc)" '[ $rc -eq 0 ] || { [ $rc -eq 1 ] && [ $(printf "%s\n" "$err" | wc -l) -eq 1 ]; }'
  done
  head -c 1000000 "$data/slides/CMU-1-Small-Region.svs" > /tmp/tessera-cli-cut.svs
  run inspect /tmp/tessera-cli-cut.svs
  check "truncated SVS: exit 1, one line saying incomplete" \
    '[ $rc -eq 1 ] && grep -q "incomplete slide (truncated" <<<"$err" && [ $(printf "%s\n" "$err" | wc -l) -eq 1 ]'
  rm -f /tmp/tessera-cli-cut.svs
  run inspect "$data/slides/CMU-1-Small-Region.svs" --json
  check "CMU inspect: 2220 x 2967, mpp 0.499" \
    'python3 -c "import json,sys; d=json.loads(sys.argv[1]); assert (d[\"width\"],d[\"height\"],d[\"mpp_x\"],d[\"mpp_y\"])==(2220,2967,0.499,0.499)" "$out"'
  run tiles "$data/slides/CMU-1-Small-Region.svs" --mpp 0.5 --tile-size 224 --mask /tmp/tessera-cli-mask.png --json
  check "CMU tiles: 0 < tiles_tissue < tiles_total, mask written" \
    'python3 -c "import json,sys; d=json.loads(sys.argv[1]); assert 0 < d[\"tiles_tissue\"] < d[\"tiles_total\"]" "$out" && [ -s /tmp/tessera-cli-mask.png ]'
  run tiles "$data/slides/tcga-cr-7395-01a-01-ts1.svs" --mpp 0.5
  check "TCGA without --slide-mpp: says MPP unknown" '[ $rc -eq 1 ] && grep -q "MPP) is unknown" <<<"$err"'
  run tiles "$data/slides/tcga-cr-7395-01a-01-ts1.svs" --mpp 0.5 --slide-mpp 0.25 --json
  check "TCGA with --slide-mpp 0.25: reads level 1" 'python3 -c "import json,sys; d=json.loads(sys.argv[1]); assert d[\"level\"]==1 and d[\"tiles_tissue\"]>0" "$out"'
  run tiles "$data/slides/test3-DAPI-2-387.ndpi" --mpp 0.5 --json
  check "NDPI: coarser level than 0" 'python3 -c "import json,sys; d=json.loads(sys.argv[1]); assert d[\"level\"]>0" "$out"'
  # int8: calibration on real tiles is deterministic, and the bench runs on it
  q8dir=$(mktemp -d); cp Tests/EngineTests/Fixtures/compact_cnn_32.onnx "$q8dir/m.onnx"
  run models bench "$q8dir/m.onnx" --precision int8 --batch 2 --repeats 1
  check "int8 without calibration: one-line error naming models quantize" '[ $rc -eq 1 ] && grep -q "models quantize" <<<"$err" && [ $(printf "%s\n" "$err" | wc -l) -eq 1 ]'
  run models quantize "$q8dir/m.onnx" --calibration "$data/patches/lc25000" --limit 8
  first=$(sha256sum < "$q8dir/m.calibration.json")
  run models quantize "$q8dir/m.onnx" --calibration "$data/patches/lc25000" --limit 8
  check "quantize: same tiles, same file" '[ $rc -eq 0 ] && [ "$first" = "$(sha256sum < "$q8dir/m.calibration.json")" ]'
  run models bench "$q8dir/m.onnx" --precision int8 --batch 2 --repeats 1 --json
  check "bench --precision int8: JSON says int8" 'python3 -c "import json,sys; d=json.loads(sys.argv[1]); assert d[\"precision\"]==\"int8\" and d[\"images_per_second\"]>0" "$out"'
  run models bench "$q8dir/m.onnx" --precision fp16
  check "bad --precision: exit 1, one line" '[ $rc -eq 1 ] && [ $(printf "%s\n" "$err" | wc -l) -eq 1 ]'
  rm -rf "$q8dir"
else
  echo "cli-checks: ../shared/data is absent: real-slide checks skipped"
fi
echo "cli-checks: $passed passed, $failed failed"
[ $failed -eq 0 ]
