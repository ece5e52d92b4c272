#!/usr/bin/env bash
# Installs the Debian packages Tessera builds against, when any is missing.
# Used by scripts/demo.sh, and with --tests by scripts/test.sh (which .ci/run calls).
set -euo pipefail
# What building Tessera needs (the Dockerfile's build stage installs the same).
packages=(pkg-config libvips-dev libopenblas-dev libsqlite3-dev libmicrohttpd-dev libpq-dev)
# What the outputs and the viewer use at run time: fonts for the text in the pictures, Leaflet
# (served from /usr/share/javascript/leaflet) for the slide viewer.
packages+=(fonts-dejavu-core libjs-leaflet)
# The tests also start a real PostgreSQL server for the PostgreSQL job-queue tests, and open the
# viewer in headless Chromium.
if [ "${1:-}" = "--tests" ]; then packages+=(postgresql chromium); fi
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tessera setup: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v swift >/dev/null 2>&1; then
  echo "tessera setup: the Swift 6 toolchain (swift) is not on PATH" >&2
  exit 1
fi
