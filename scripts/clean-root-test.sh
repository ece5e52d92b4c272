#!/usr/bin/env bash
# Installs the package into a fresh Debian 12 root and runs it there: proof that the .deb is
# complete and its Depends: are enough, with no Swift toolchain anywhere in that root.
#
#   scripts/clean-root-test.sh [DEB [TARBALL]]     default: dist/tessera_<version>_amd64.deb
#
# 1. A minimal Debian 12 root (debootstrap --variant=minbase bookworm, from the mirror this
#    machine's apt uses), cached as a tarball under ~/.cache/tessera/clean-root.
# 2. Only the packages the .deb's Depends: names, installed there with apt-get in a chroot
#    (also cached, keyed by that list).
# 3. A fresh copy of that root per run: dpkg -i the .deb (dpkg refuses unmet Depends:), then
#    inside the chroot, with a plain PATH: tessera --version, tessera doctor (and its failure on
#    a missing model), the demo analysis (sample-slide + run), and the tarball's binary.
# Runs as root (debootstrap, chroot, mount). Ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/.*static let version = "\([^"]*\)".*/\1/p' Sources/TesseraCore/TesseraCore.swift)
deb=$(readlink -f "${1:-dist/tessera_${version}_amd64.deb}")
tarball=$(readlink -f "${2:-dist/tessera-$version-linux-amd64.tar.gz}")
[ -f "$deb" ] || { echo "clean-root-test: $deb missing (run scripts/package.sh)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "clean-root-test: needs root (debootstrap, chroot)" >&2; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tessera/clean-root"
mkdir -p "$cache"
started=$SECONDS
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
work=$(mktemp -d /tmp/tessera-clean-root.XXXXXX)
root="$work/root"

# Mounts inside the root (proc, dev) come off before anything is deleted.
unmount_all() {
  local target
  while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target"
  done < <(awk -v r="$work/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r)
}
cleanup() {
  unmount_all
  if awk -v r="$work/" 'index($2, r) == 1' /proc/mounts | grep -q .; then
    echo "clean-root-test: mounts left under $work; not deleting it" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
enter() {  # mounts what programs in the root expect
  mkdir -p "$root/proc" "$root/dev"
  mount -t proc proc "$root/proc"
  # debootstrap makes the device nodes where it may; otherwise the host's /dev is lent.
  [ -c "$root/dev/null" ] || mount --bind /dev "$root/dev"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
}
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# ---- 1. the base root ---------------------------------------------------------------------
# The mirror this machine's apt uses (deb822 URIs: or a one-line deb entry).
mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
base="$cache/bookworm-minbase.tar.gz"
if [ ! -s "$base" ]; then
  command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  echo "# debootstrap --variant=minbase bookworm from $mirror (cached in $base)"
  debootstrap --variant=minbase bookworm "$work/base" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log"; exit 1; }
  tar -C "$work/base" --numeric-owner -czf "$base.partial" . && mv "$base.partial" "$base"
  rm -rf "$work/base"
fi

# ---- 2. the base root plus exactly the declared Depends: ------------------------------------
depends=$(dpkg-deb -f "$deb" Depends)
# First choice of each alternative, without version constraints.
mapfile -t packages < <(tr ',' '\n' <<<"$depends" | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep . | sort -u)
key=$( (cat "$base.sha256" 2>/dev/null || stat -c %Y "$base"; printf '%s\n' "${packages[@]}") | sha256sum | cut -c1-16)
prepared="$cache/bookworm-depends-$key.tar.gz"
if [ ! -s "$prepared" ]; then
  echo "# installing the Depends: into the root: ${packages[*]} (cached in $prepared)"
  mkdir -p "$root" && tar -C "$root" -xzf "$base"
  # The same archive as this machine's apt: its suites (updates, security) included.
  rm -f "$root"/etc/apt/sources.list.d/*
  cp -a /etc/apt/sources.list.d/. "$root/etc/apt/sources.list.d/" 2>/dev/null || true
  if [ -f /etc/apt/sources.list ]; then cp /etc/apt/sources.list "$root/etc/apt/sources.list"; fi
  enter
  in_root apt-get update -qq >"$work/apt.log" 2>&1 || { tail -n 20 "$work/apt.log"; exit 1; }
  in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >>"$work/apt.log" 2>&1 \
    || { tail -n 20 "$work/apt.log"; exit 1; }
  in_root apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
  unmount_all
  tar -C "$root" --numeric-owner -czf "$prepared.partial" . && mv "$prepared.partial" "$prepared"
  rm -rf "$root"
  # Older prepared roots (other Depends: lists) are not needed any more.
  find "$cache" -name 'bookworm-depends-*.tar.gz' ! -name "$(basename "$prepared")" -delete
fi

# ---- 3. install and run ---------------------------------------------------------------------
mkdir -p "$root" && tar -C "$root" -xzf "$prepared"
enter
echo "# clean root ready after $((SECONDS - started)) s; Depends: $depends"
cp "$deb" "$root/tmp/tessera.deb"
if in_root dpkg -i /tmp/tessera.deb >"$work/dpkg.log" 2>&1; then
  pass "dpkg -i $(basename "$deb") in a Debian $(cat "$root/etc/debian_version") root holding only its Depends:"
else
  fail "dpkg -i:"; cat "$work/dpkg.log"
fi
swift_files=$(find "$root" -xdev \( -name 'libswiftCore.so*' -o -name 'libFoundation.so*' -o -name swift -o -name swiftc \) -print | head -n 3)
if [ -z "$swift_files" ] && ! in_root sh -c 'command -v swift || command -v swiftc' >/dev/null; then
  pass "no Swift toolchain or runtime library in the root"
else
  fail "Swift files in the root: $swift_files"
fi
if output=$(in_root ldd /usr/bin/tessera 2>&1) && ! grep -q 'not found' <<<"$output"; then
  pass "ldd /usr/bin/tessera: $(grep -c '=>' <<<"$output") libraries, all found, none from a Swift toolchain"
  if grep -Eq 'libswift|libFoundation|libdispatch' <<<"$output"; then fail "ldd lists Swift runtime libraries"; fi
else
  fail "ldd /usr/bin/tessera: $output"
fi
if [ "$(in_root tessera --version 2>&1)" = "$version" ]; then pass "tessera --version: $version"; else fail "tessera --version: $(in_root tessera --version 2>&1)"; fi
if in_root getent passwd tessera >/dev/null; then pass "postinst created the system user tessera"; else fail "no user tessera after install"; fi
mkdir -p "$root/var/lib/tessera/check"
if in_root tessera doctor --data /var/lib/tessera/check >"$work/doctor.txt" 2>&1; then
  pass "tessera doctor: no problems ($(grep -c '^  ok' "$work/doctor.txt") checks ok)"
  grep -E 'libvips:|OpenSlide:|OpenBLAS:|AVX-512 F|models folder:' "$work/doctor.txt" | sed 's/^/#   /'
else
  fail "tessera doctor:"; cat "$work/doctor.txt"
fi
# TESSERA_MODELS adds folders before the shipped one: a lab folder holding a model whose card
# disagrees with its network must make doctor fail, naming it.
mkdir -p "$root/tmp/lab-models/broken"
cp "$root/usr/share/tessera/models/tessera-lc25000-compact/model.onnx" "$root/tmp/lab-models/broken/model.onnx"
printf '{"name": "broken", "classes": ["a", "b"], "input": {"size": 224, "mpp": 0.5}, "output": {"kind": "logits"}}\n' \
  >"$root/tmp/lab-models/broken/model.json"
if in_root env TESSERA_MODELS=/tmp/lab-models tessera doctor --data /var/lib/tessera/check >"$work/doctor-bad.txt" 2>&1; then
  fail "tessera doctor passes with a model that does not load"
else
  pass "tessera doctor exits 1 with a model that does not load: $(grep -m1 PROBLEM "$work/doctor-bad.txt" | sed 's/^ *//')"
fi
# The demo analysis: a generated slide through the job queue with the shipped default model.
mkdir -p "$root/tmp/demo"
demo_started=$SECONDS
if in_root tessera sample-slide /tmp/demo/sample.tif --width 4000 --height 3000 >"$work/demo.log" 2>&1 \
  && in_root tessera run /tmp/demo/sample.tif --out /tmp/demo/results --data /tmp/demo/data --json >"$work/run.json" 2>>"$work/demo.log" \
  && tiles=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["tiles_tissue"]; assert t > 0; print(t)' "$root/tmp/demo/results/sample.tif/summary.json") \
  && [ -s "$root/tmp/demo/results/sample.tif/annotations.geojson" ] && [ -s "$root/tmp/demo/results/sample.tif/heatmap.png" ]; then
  pass "demo analysis in the root (sample-slide 4000x3000 + run, $((SECONDS - demo_started)) s): summary.json, annotations.geojson, heatmap.png; tissue tiles: $tiles"
else
  fail "demo analysis:"; tail -n 20 "$work/demo.log"
fi
if [ -f "$tarball" ]; then
  tar -C "$root/opt" -xzf "$tarball"
  if [ "$(in_root "/opt/tessera-$version/bin/tessera" --version 2>&1)" = "$version" ] \
    && in_root "/opt/tessera-$version/bin/tessera" doctor --data /var/lib/tessera/check >"$work/doctor-tarball.txt" 2>&1 \
    && grep -q "models folder: /opt/tessera-$version/models: densenet121-lc25000, densenet121-pathmnist, tessera-crc-compact, tessera-lc25000-compact" "$work/doctor-tarball.txt"; then
    pass "tarball: /opt/tessera-$version/bin/tessera runs and finds its models/ beside bin/"
  else
    fail "tarball binary:"; cat "$work/doctor-tarball.txt"
  fi
fi
echo "clean-root-test: $((SECONDS - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
