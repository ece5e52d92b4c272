#!/usr/bin/env bash
# A bounded schemathesis pass (property-based requests generated from docs/openapi.json) against a
# live `tessera serve` with one analysed slide in it; fails on any finding. Run by scripts/test.sh.
#
# Check left out: positive_data_acceptance ("schema-valid requests must be accepted"). A schema
# cannot say "a readable slide" of a byte body, nor "a model installed here" of a name, so random
# schema-valid uploads are rightly refused (422 not_a_slide, 400 unknown_model).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${TESSERA_BINARY:-.build/debug/tessera}
# Both must import (`pip show a b` succeeds when only one of them is installed).
python3 -c 'import schemathesis, openapi_spec_validator' >/dev/null 2>&1 \
  || python3 -m pip install --quiet --disable-pip-version-check schemathesis openapi-spec-validator
python3 -c 'import json, openapi_spec_validator as v; v.validate(json.load(open("docs/openapi.json")))'
echo "api-fuzz: docs/openapi.json is a valid OpenAPI document"

work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then kill -TERM "$server"; wait "$server" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$binary" serve --data "$work/data" --port 0 --workers 1 --threads 2 --log-level error >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/^tessera: listening on \(http:[^ ]*\)$/\1/p' "$work/serve.log")
[ -n "$base" ] || { echo "api-fuzz: tessera serve did not start"; cat "$work/serve.log"; exit 1; }

# Job 1: a real slide, analysed, so the job and result operations answer with content.
"$binary" sample-slide "$work/sample.tif" --width 2000 --height 1500 >/dev/null
# The compact model: the fuzzing is about the API, not the model, and the debug build is slow.
curl -fsS -T "$work/sample.tif" "$base/v1/slides?filename=sample.tif&model=tessera-lc25000-compact" >/dev/null
for _ in $(seq 300); do curl -fsS "$base/v1/jobs/1" | grep -q '"state":"done"' && break; sleep 0.2; done
curl -fsS "$base/v1/jobs/1" | grep -q '"state":"done"' || { echo "api-fuzz: the sample job did not finish"; exit 1; }

cd "$work"
# The `st` entry point pip just installed: on PATH, or in the scripts folder of this python3 (a pyenv
# or venv python keeps it there, and pyenv's shims only learn of it after `pyenv rehash`).
st=$(command -v st || true)
[ -n "$st" ] || st="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/st"
"$st" run "$OLDPWD/docs/openapi.json" --url "$base" --max-examples "${TESSERA_FUZZ_EXAMPLES:-10}" --seed 1 \
  --exclude-checks positive_data_acceptance --no-color --request-timeout 30
