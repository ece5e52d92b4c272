#!/usr/bin/env bash
# Builds what an administrator installs, from this tree, with no Swift toolchain needed on the
# target machine:
#   dist/tessera_<version>_amd64.deb            Debian 12 package (dpkg-deb)
#   dist/tessera-<version>-linux-amd64.tar.gz   the same files in one relocatable folder
#
#   scripts/package.sh                  one release build (swift build -c release
#                                       --static-swift-stdlib; incremental, so a second run
#                                       reuses it), then both artefacts
#   scripts/package.sh --binary PATH    package an already built release binary instead
#   scripts/package.sh --depends PATH   print the Depends: line for a binary and exit
#
# The binary links the Swift runtime and Foundation statically: its ldd may list only Debian
# libraries, which become the package's Depends: (minimum versions from dpkg-shlibdeps). The
# package holds /usr/bin/tessera, the shipped models in /usr/share/tessera/models, the systemd
# units and sysusers file, /etc/tessera/tessera.env.example, the man page tessera(1) (every
# command's --help) and the docs in /usr/share/doc/tessera. scripts/clean-root-test.sh installs
# it into a fresh Debian 12 root and runs it there.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/.*static let version = "\([^"]*\)".*/\1/p' Sources/TesseraCore/TesseraCore.swift)
[ -n "$version" ] || { echo "package: no version in Sources/TesseraCore/TesseraCore.swift" >&2; exit 1; }
arch=amd64
# Every shipped model: each folder of models/ with a card.
models=()
for card in models/*/model.json; do models+=("$(basename "$(dirname "$card")")"); done

# Libraries of the Swift toolchain that must not appear in the binary's ldd.
toolchain_libraries() { grep -E 'libswift|libFoundation|lib_Foundation|libdispatch|libBlocksRuntime|libXCTest|libTesting' || true; }

# The Depends: line: the Debian packages owning the binary's shared libraries, with the
# minimum versions dpkg-shlibdeps reads from their symbols files.
depends() {
  local binary=$1 work
  work=$(mktemp -d)
  mkdir -p "$work/debian"
  printf 'Source: tessera\n\nPackage: tessera\nArchitecture: any\n' >"$work/debian/control"
  (cd "$work" && dpkg-shlibdeps -O --warnings=0 -e"$(readlink -f "$binary")" 2>"$work/err") \
    | sed -n 's/^shlibs:Depends=//p' >"$work/depends" || true
  if [ ! -s "$work/depends" ]; then
    echo "package: dpkg-shlibdeps found no dependencies:" >&2; cat "$work/err" >&2; rm -rf "$work"; return 1
  fi
  cat "$work/depends"
  rm -rf "$work"
}

binary=""
case "${1:-}" in
  --depends) depends "$2"; exit ;;
  --binary) binary=$(readlink -f "$2") ;;
  "") ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 64 ;;
esac
if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
  echo "package: installing dpkg-dev (dpkg-shlibdeps)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
fi
if [ -z "$binary" ]; then
  scripts/setup.sh
  started=$SECONDS
  swift build -c release --product tessera --static-swift-stdlib
  binary="$(swift build -c release --product tessera --static-swift-stdlib --show-bin-path)/tessera"
  echo "package: release build $((SECONDS - started)) s"
fi
"$binary" --version | grep -qx "$version" || { echo "package: $binary is not version $version" >&2; exit 1; }
swift_libraries=$(ldd "$binary" | toolchain_libraries)
if [ -n "$swift_libraries" ]; then
  echo "package: $binary links the Swift toolchain's libraries (build with --static-swift-stdlib):" >&2
  echo "$swift_libraries" >&2
  exit 1
fi
if ldd "$binary" | grep -q 'not found'; then echo "package: ldd: $(ldd "$binary" | grep 'not found')" >&2; exit 1; fi
# Besides the libraries: the fonts the pictures' legends are drawn with and Leaflet, which the
# slide viewer serves from /usr/share/javascript/leaflet.
depends_line="$(depends "$binary"), fonts-dejavu-core, libjs-leaflet"

mkdir -p dist
stage=$(mktemp -d /tmp/tessera-package.XXXXXX)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/tessera_${version}_$arch"
doc="$pkg/usr/share/doc/tessera"

# ---- files ----------------------------------------------------------------------------------
install -D -m 0755 "$binary" "$pkg/usr/bin/tessera"
strip --strip-debug "$pkg/usr/bin/tessera"
for model in "${models[@]}"; do
  install -D -m 0644 "models/$model/model.onnx" "$pkg/usr/share/tessera/models/$model/model.onnx"
  install -D -m 0644 "models/$model/model.json" "$pkg/usr/share/tessera/models/$model/model.json"
  for extra in calibration.json precision.json; do  # INT8 calibration, and its recorded check for --precision auto
    if [ -f "models/$model/$extra" ]; then
      install -D -m 0644 "models/$model/$extra" "$pkg/usr/share/tessera/models/$model/$extra"
    fi
  done
done
install -D -m 0644 deploy/systemd/tessera.service "$pkg/lib/systemd/system/tessera.service"
install -D -m 0644 deploy/systemd/tessera-watch.service "$pkg/lib/systemd/system/tessera-watch.service"
install -D -m 0644 deploy/systemd/tessera.sysusers.conf "$pkg/usr/lib/sysusers.d/tessera.conf"
install -D -m 0644 deploy/systemd/tessera.env.example "$pkg/etc/tessera/tessera.env.example"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 deploy/README.md "$doc/deploy.md"
install -D -m 0644 models/README.md "$doc/models.md"
install -D -m 0644 docs/openapi.json "$doc/openapi.json"
for file in deploy/reverse-proxy/*; do [ -f "$file" ] && install -D -m 0644 "$file" "$doc/examples/$(basename "$file")"; done
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tessera
Comment: Built from the Tessera source tree (scripts/package.sh). The Swift standard library
 and Foundation (Apache-2.0 with Runtime Library Exception) are linked into /usr/bin/tessera.
 The models in /usr/share/tessera/models come with their cards (model.json: data set,
 licence, provenance); /usr/share/doc/tessera/models.md describes them.
EOF
gzip -9n -c >"$doc/changelog.gz" <<EOF
tessera ($version) bookworm; urgency=medium

  * Built by scripts/package.sh from the Tessera source tree.

 -- Tessera maintainers <maintainers@tessera.invalid>  $(date -R -d "@$(stat -c %Y Sources/TesseraCore/TesseraCore.swift)")
EOF

# tessera(1): every command's --help, nested commands included.
roff() { sed -e 's/\\/\\e/g' -e 's/^\([.'"'"']\)/\\\&\1/'; }
subcommands() { "$binary" "$@" --help | awk '/^SUBCOMMANDS:/ {on = 1; next} on && /^$/ {exit} on && /^  [a-z]/ {print $1}'; }
{
  printf '.TH TESSERA 1 "" "tessera %s" "User Commands"\n' "$version"
  printf '.SH NAME\ntessera \\- deep-learning inference on whole-slide pathology images\n'
  printf '.SH SYNOPSIS\n.B tessera\n.I command\n[\\fIoptions\\fR]\n'
  printf '.SH DESCRIPTION\n.nf\n'; "$binary" --help | roff; printf '.fi\n'
  printf '.SH COMMANDS\n'
  for command in $(subcommands); do
    [ "$command" = help ] && continue
    printf '.SS tessera %s\n.nf\n' "$command"; "$binary" "$command" --help | roff; printf '.fi\n'
    for nested in $(subcommands "$command"); do
      [ "$nested" = help ] && continue
      printf '.SS tessera %s %s\n.nf\n' "$command" "$nested"; "$binary" "$command" "$nested" --help | roff; printf '.fi\n'
    done
  done
  printf '.SH FILES\n.TP\n/usr/share/tessera/models\nshipped models (TESSERA_MODELS overrides)\n'
  printf '.TP\n/etc/tessera/tessera.env\nsettings of the systemd units (example: tessera.env.example)\n'
  printf '.TP\n/var/lib/tessera\ndata folders of the units\n'
  printf '.SH SEE ALSO\n/usr/share/doc/tessera/README.md, /usr/share/doc/tessera/deploy.md\n'
} | gzip -9n >"$stage/tessera.1.gz"
install -D -m 0644 "$stage/tessera.1.gz" "$pkg/usr/share/man/man1/tessera.1.gz"

# ---- Debian control files -------------------------------------------------------------------
mkdir -p "$pkg/DEBIAN"
installed_size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: tessera
Version: $version
Architecture: $arch
Maintainer: Tessera maintainers <maintainers@tessera.invalid>
Installed-Size: $installed_size
Depends: $depends_line
Recommends: systemd
Section: science
Priority: optional
Description: deep-learning inference on whole-slide pathology images, on CPU
 Tessera reads whole-slide images (Aperio SVS, Hamamatsu NDPI, MIRAX, pyramidal
 TIFF, ...) through libvips and OpenSlide, finds the tissue, and classifies it
 patch by patch with its own CPU inference engine (OpenBLAS + AVX-512 kernels).
 One binary: a batch command line (tessera run), an HTTP upload API (tessera
 serve), a scanner watch folder (tessera watch), a throughput check and
 tessera doctor. Jobs live in an embedded SQLite queue or a shared PostgreSQL one.
 .
 The systemd units tessera.service and tessera-watch.service are installed but
 not enabled; settings go in /etc/tessera/tessera.env.
EOF
echo /etc/tessera/tessera.env.example >"$pkg/DEBIAN/conffiles"
cat >"$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# The system user the units run as (the sysusers.d file, or useradd where systemd is absent).
set -e
if [ "$1" = configure ]; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers tessera.conf
  elif ! getent passwd tessera >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/tessera --no-create-home \
      --shell /usr/sbin/nologin --comment "Tessera slide analysis" tessera
  fi
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
exit 0
EOF
cat >"$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# Data in /var/lib/tessera and the tessera user stay: slides and results are the lab's.
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
exit 0
EOF
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/postrm"
(cd "$pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"
deb="dist/tessera_${version}_$arch.deb"
dpkg-deb --root-owner-group -Zgzip -z6 --build "$pkg" "$deb" >/dev/null

# ---- tarball: one folder, relocatable (the binary finds models/ next to bin/) ------------------
tree="$stage/tessera-$version"
mkdir -p "$tree/bin" "$tree/share/man/man1" "$tree/systemd"
cp -a "$pkg/usr/bin/tessera" "$tree/bin/"
cp -a "$pkg/usr/share/tessera/models" "$tree/models"
cp -a "$pkg/usr/share/doc/tessera" "$tree/doc"
mkdir -p "$tree/docs" && cp -a docs/openapi.json "$tree/docs/openapi.json"
cp -a "$pkg/usr/share/man/man1/tessera.1.gz" "$tree/share/man/man1/"
cp -a "$pkg/lib/systemd/system/"*.service "$pkg/usr/lib/sysusers.d/tessera.conf" "$pkg/etc/tessera/tessera.env.example" "$tree/systemd/"
printf 'Depends (Debian 12 package names): %s\n' "$depends_line" >"$tree/DEPENDS"
tarball="dist/tessera-$version-linux-$arch.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$tarball" "tessera-$version"

echo "package: $deb ($(du -h "$deb" | cut -f1)), $tarball ($(du -h "$tarball" | cut -f1))"
echo "package: Depends: $depends_line"
