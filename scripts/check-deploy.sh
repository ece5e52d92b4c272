#!/usr/bin/env bash
# Checks the deployment files against the tools that run them and against the tessera binary:
#   systemd     systemd-analyze verify of deploy/systemd/*.service exactly as shipped (installed
#               with the binary into a temporary root), its offline security score, ExecStart
#               flags against `tessera --help`, and the serve and watch command lines started
#               for real with the units' defaults
#   Dockerfile  package names in Debian 12, build packages = scripts/setup.sh, the run stage
#               installs the .deb of scripts/package.sh, COPY sources, and its HEALTHCHECK
#               command run against a live `tessera serve` on $TESSERA_PORT
#   TLS proxy   deploy/reverse-proxy/nginx-tessera.conf run by Debian's nginx in front of the
#               live `tessera serve`: health over HTTP/2 + TLS, a slide upload, the redirect
#   Kubernetes  every manifest against the Kubernetes 1.37 JSON schemas (kubernetes-validate,
#               offline, strict), references between manifests, flags against `tessera --help`
#   Slurm       shellcheck, then deploy/slurm/test-local.sh: the job-array script on a
#               throw-away single-node Slurm cluster (TESSERA_CHECK_SLURM=0 skips it)
# No container is built: no registry with the base images is reachable here.
#
#   scripts/check-deploy.sh            uses TESSERA_BIN, else .build/debug/tessera (built when missing)
#
# Runs as root on Debian 12, with no standard input; installs what is missing with apt-get
# (systemd, python3-venv, shellcheck, slurmctld, slurmd, slurm-client, munge) and pip (into a
# virtual environment under ~/.cache/tessera). Ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export DEBIAN_FRONTEND=noninteractive
started=$SECONDS
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
section() { echo; echo "== $* ($((SECONDS - started)) s)"; }
work=$(mktemp -d /tmp/tessera-check-deploy.XXXXXX)
server_pid=""
finished=0
cleanup() {
  local status=$?
  if [ $finished = 0 ]; then
    echo "FAIL - check-deploy stopped early (exit $status)"
    echo "$passed passed, $((failed + 1)) failed"
  fi
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- tools ----------------------------------------------------------------------------------
section "tools"
need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
if [ "${TESSERA_CHECK_SLURM:-1}" != 0 ]; then
  for package in slurmctld slurmd slurm-client munge; do
    dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
  done
fi
venv="${XDG_CACHE_HOME:-$HOME/.cache}/tessera/check-deploy-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3 python3-venv)
fi
apt_updated=0
apt_update() { if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi; }
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt_update
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==1.37.0" "PyYAML>=6"
fi
py="$venv/bin/python"
echo "systemd-analyze $(systemd-analyze --version | head -n 1 | awk '{print $2}'), kubernetes-validate $("$venv/bin/kubernetes-validate" --version), $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"

binary=${TESSERA_BIN:-}
if [ -z "$binary" ]; then
  binary="$root/.build/debug/tessera"
  if [ ! -x "$binary" ]; then
    echo "building tessera (swift build --product tessera)"
    scripts/setup.sh
    swift build --product tessera >/dev/null
  fi
fi
binary=$(readlink -f "$binary")
echo "binary: $binary ($("$binary" --version))"
checks() { "$py" deploy/check/deploy_checks.py "$@"; }
count() {  # runs a deploy_checks.py command and adds its ok/FAIL lines to the totals
  local output status=0
  output=$(checks "$@") || status=$?
  echo "$output"
  passed=$((passed + $(grep -c '^ok - ' <<<"$output" || true)))
  failed=$((failed + $(grep -c '^FAIL - ' <<<"$output" || true)))
  if [ $status -ne 0 ] && ! grep -q '^FAIL - ' <<<"$output"; then fail "deploy_checks.py $1 exited $status"; fi
}
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- systemd --------------------------------------------------------------------------------
section "systemd units"
units=(deploy/systemd/tessera.service deploy/systemd/tessera-watch.service)
sysroot="$work/root"
mkdir -p "$sysroot/etc/systemd/system" "$sysroot/usr/bin" "$sysroot/usr/lib/systemd"
# The host's own unit library (sysinit.target, basic.target, ...), then Tessera as installed.
cp -a /usr/lib/systemd/system "$sysroot/usr/lib/systemd/"
install -m 0755 "$binary" "$sysroot/usr/bin/tessera"
install -D -m 0755 /bin/kill "$sysroot/bin/kill"   # tessera.service's ExecReload
for unit in "${units[@]}"; do install -m 0644 "$unit" "$sysroot/etc/systemd/system/"; done
names=()
for unit in "${units[@]}"; do names+=("$(basename "$unit")"); done
# verify exits 0 on warnings (unknown keys, bad values): any output counts as a failure.
if output=$(systemd-analyze verify --root="$sysroot" --man=no "${names[@]}" 2>&1) && [ -z "$output" ]; then
  pass "systemd-analyze verify ${names[*]}: no errors, no warnings"
else
  fail "systemd-analyze verify ${names[*]}:"; echo "$output"
fi
for unit in "${units[@]}"; do
  cmp -s "$unit" "$sysroot/etc/systemd/system/$(basename "$unit")" || fail "$unit differs from the verified copy"
done
# Control: the same verify fails when the binary is missing, so the pass above means something.
mv "$sysroot/usr/bin/tessera" "$work/tessera.moved"
if systemd-analyze verify --root="$sysroot" --man=no "${names[@]}" >/dev/null 2>&1; then
  fail "systemd-analyze verify passes without /usr/bin/tessera: the check proves nothing"
else
  pass "systemd-analyze verify fails when /usr/bin/tessera is missing (control)"
fi
mv "$work/tessera.moved" "$sysroot/usr/bin/tessera"
for name in "${names[@]}"; do
  exposure=$(systemd-analyze security --offline=yes --root="$sysroot" "$name" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: //p')
  score=${exposure%% *}
  if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }'; then
    pass "systemd-analyze security $name: exposure $exposure"
  else
    fail "systemd-analyze security $name: exposure ${exposure:-unknown} (want <= 3.0)"
  fi
done
count units "$binary" "${units[@]}"

# The units' command lines, run for real with their defaults (paths moved into $work).
port=$(free_port)
mapfile -d '' -t serve_argv < <(checks execstart deploy/systemd/tessera.service \
  "TESSERA_SERVE_DATA=$work/serve" "TESSERA_PORT=$port")
serve_argv[0]=$binary
TESSERA_MODELS="$root/models" "${serve_argv[@]}" >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
if grep -q "listening on http://127.0.0.1:$port" "$work/serve.log"; then
  pass "tessera.service ExecStart starts: ${serve_argv[*]:1}"
else
  fail "tessera.service ExecStart did not start: ${serve_argv[*]:1}"; cat "$work/serve.log"
fi

mkdir -p "$work/incoming"
"$binary" sample-slide "$work/incoming/watched.tif" --width 1600 --height 1200 >/dev/null
touch -d '-1 minute' "$work/incoming/watched.tif"
mapfile -d '' -t watch_argv < <(checks execstart deploy/systemd/tessera-watch.service \
  "TESSERA_WATCH_IN=$work/incoming" "TESSERA_WATCH_OUT=$work/results" "TESSERA_WATCH_DATA=$work/watch" \
  "TESSERA_SETTLE=1" "TESSERA_POLL=0.5" "TESSERA_MODEL=tessera-lc25000-compact")
watch_argv[0]=$binary
TESSERA_MODELS="$root/models" "${watch_argv[@]}" >"$work/watch.log" 2>&1 &
watch_pid=$!
for _ in $(seq 300); do [ -f "$work/incoming/done/watched.tif" ] && break; sleep 0.1; done
kill -TERM "$watch_pid" 2>/dev/null || true
watch_status=0
wait "$watch_pid" || watch_status=$?
if [ -s "$work/results/watched.tif/summary.json" ] && [ -f "$work/incoming/done/watched.tif" ] && [ $watch_status -eq 0 ]; then
  pass "tessera-watch.service ExecStart analyses a slide, files it into done/ and exits 0 on SIGTERM: ${watch_argv[*]:1}"
else
  fail "tessera-watch.service ExecStart (exit $watch_status): ${watch_argv[*]:1}"; cat "$work/watch.log"
fi

# ---- TLS reverse proxy ----------------------------------------------------------------------
section "TLS reverse proxy (nginx)"
# Debian's nginx binary, unpacked into the cache (installing the package would start a system
# nginx on port 80); the shipped site file with only ports and certificate paths changed.
nginx_root="${XDG_CACHE_HOME:-$HOME/.cache}/tessera/nginx"
if [ ! -x "$nginx_root/usr/sbin/nginx" ]; then
  apt_update
  # Debian 12's nginx package holds the binary itself (nginx-core is a transitional package).
  if (cd "$work" && apt-get download -qq nginx >/dev/null 2>&1); then dpkg -x "$work"/nginx_*.deb "$nginx_root"; fi
fi
if [ -x "$nginx_root/usr/sbin/nginx" ]; then
  proxy="$work/nginx"
  mkdir -p "$proxy/logs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=tessera.example.org \
    -keyout "$proxy/key.pem" -out "$proxy/cert.pem" >/dev/null 2>&1
  tls_port=$(free_port)
  http_port=$(free_port)
  sed -e "/listen \[::\]/d" -e "s/listen 443 ssl http2;/listen 127.0.0.1:$tls_port ssl http2;/" \
    -e "s/listen 80;/listen 127.0.0.1:$http_port;/" -e "s#127.0.0.1:8080#127.0.0.1:$port#" \
    -e "s#ssl_certificate .*#ssl_certificate $proxy/cert.pem;#" -e "s#ssl_certificate_key .*#ssl_certificate_key $proxy/key.pem;#" \
    deploy/reverse-proxy/nginx-tessera.conf >"$proxy/site.conf"
  printf '%s\n' "worker_processes 1;" "pid $proxy/nginx.pid;" "error_log $proxy/logs/error.log;" "events {}" \
    "http { access_log off; client_body_temp_path $proxy/body; proxy_temp_path $proxy/proxy; fastcgi_temp_path $proxy/fastcgi;" \
    "uwsgi_temp_path $proxy/uwsgi; scgi_temp_path $proxy/scgi; include $proxy/site.conf; }" \
    >"$proxy/nginx.conf"
  if "$nginx_root/usr/sbin/nginx" -t -p "$proxy" -c "$proxy/nginx.conf" >"$proxy/test.log" 2>&1; then
    pass "nginx -t: deploy/reverse-proxy/nginx-tessera.conf (ports and certificate paths replaced)"
  else
    fail "nginx -t:"; cat "$proxy/test.log"
  fi
  "$nginx_root/usr/sbin/nginx" -p "$proxy" -c "$proxy/nginx.conf" -g 'daemon off;' >"$proxy/run.log" 2>&1 &
  nginx_pid=$!
  for _ in $(seq 50); do curl -sk -o /dev/null "https://127.0.0.1:$tls_port/healthz" && break; sleep 0.1; done
  "$binary" sample-slide "$work/proxied.tif" --width 1600 --height 1200 >/dev/null
  healthz=$(curl -sk --http2 -o /dev/null -w '%{http_code} HTTP/%{http_version}' "https://127.0.0.1:$tls_port/healthz" || true)
  upload=$(curl -sk -o "$work/proxied.json" -w '%{http_code}' -T "$work/proxied.tif" "https://127.0.0.1:$tls_port/v1/slides?filename=proxied.tif" || true)
  redirect=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$http_port/healthz" || true)
  if [ "$healthz" = "200 HTTP/2" ] && [ "$upload" = 202 ] && grep -q '"state"' "$work/proxied.json" && [ "${redirect%% *}" = 301 ]; then
    pass "through nginx over TLS: /healthz $healthz, a slide upload 202 with its job, plain HTTP $redirect"
  else
    fail "through nginx: healthz '$healthz', upload '$upload' ($(head -c 200 "$work/proxied.json" 2>/dev/null)), redirect '$redirect'"
    tail -n 5 "$proxy/logs/error.log" 2>/dev/null || true
  fi
  kill "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" 2>/dev/null || true
else
  fail "nginx could not be unpacked into $nginx_root (apt-get download nginx)"
fi

# ---- Dockerfile -----------------------------------------------------------------------------
section "Dockerfile"
count dockerfile
mapfile -d '' -t health < <(checks healthcheck)
if TESSERA_PORT=$port "${health[@]}"; then pass "HEALTHCHECK command (TESSERA_PORT=$port) answers healthy on a running tessera serve"; else fail "HEALTHCHECK command fails on a running server"; fi
other_port=$(free_port)
if TESSERA_PORT=$other_port "${health[@]}" 2>/dev/null; then
  fail "HEALTHCHECK passes with TESSERA_PORT=$other_port, where nothing listens: it does not follow the port"
else
  pass "HEALTHCHECK follows TESSERA_PORT: unhealthy on port $other_port, where nothing listens (control)"
fi
kill -TERM "$server_pid"
if wait "$server_pid"; then pass "tessera serve exits 0 on SIGTERM (the container's STOPSIGNAL)"; else fail "tessera serve exit code on SIGTERM: $?"; fi
server_pid=""
if TESSERA_PORT=$port "${health[@]}" 2>/dev/null; then fail "HEALTHCHECK command passes with no server"; else pass "HEALTHCHECK command reports unhealthy with no server (control)"; fi

# The build stage's packages exist in Debian 12. The run stage installs only the .deb: that its
# Depends: are complete is what scripts/clean-root-test.sh shows, on an empty Debian 12 root.
build=$(sed -n 's/^ *\(pkg-config libvips-dev.*\) \\$/\1/p' Dockerfile | head -n 1)
if ! apt-cache policy libvips42 | grep -q 'Candidate: [0-9]'; then apt_update; fi
missing=""
# One apt-cache call: "NAME:" then "  Candidate: VERSION" for each package it knows.
# shellcheck disable=SC2086
apt-cache policy $build 2>/dev/null \
  | awk '/^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) } /^  Candidate: [0-9]/ { print name }' >"$work/known.txt"
for package in $build; do
  grep -qx "$package" "$work/known.txt" || missing+=" $package"
done
if [ -n "$build" ] && [ -z "$missing" ]; then pass "Debian $(cat /etc/debian_version) has every package the build stage installs ($build)"; else fail "not in Debian:${missing:- (no package list found in the Dockerfile)}"; fi
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "# a Docker daemon is running, but the base images cannot be pulled here: image not built"
else
  echo "# no container engine running here: the image itself is not built by this check"
fi

# ---- Kubernetes -----------------------------------------------------------------------------
section "Kubernetes manifests"
manifests=()
while IFS= read -r file; do manifests+=("$file"); done < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
if output=$("$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.30.0 "${manifests[@]}" 2>&1); then
  pass "kubernetes-validate --strict (schemas 1.30): $(grep -c ' passed ' <<<"$output") resources in ${#manifests[@]} files"
else
  fail "kubernetes-validate --strict (1.30):"; echo "$output"
fi
if output=$("$venv/bin/kubernetes-validate" --strict "${manifests[@]}" 2>&1); then
  pass "kubernetes-validate --strict (schemas 1.37): $(grep -c ' passed ' <<<"$output") resources"
else
  fail "kubernetes-validate --strict (1.37):"; echo "$output"
fi
# Control: a misspelt field must be rejected.
sed 's/containerPort: 8080/containerPortt: 8080/' deploy/kubernetes/single-node/deployment.yaml >"$work/typo.yaml"
if "$venv/bin/kubernetes-validate" --strict --quiet "$work/typo.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepts a misspelt field: the check proves nothing"
else
  pass "kubernetes-validate rejects a misspelt field (control)"
fi
count kubernetes "$binary"
if command -v kubectl >/dev/null 2>&1; then
  for variant in deploy/kubernetes/*/; do
    if kubectl kustomize "$variant" >"$work/kustomized.yaml" 2>"$work/kustomize.err"; then
      pass "kubectl kustomize $variant: $(grep -c '^kind:' "$work/kustomized.yaml") resources"
    else
      fail "kubectl kustomize $variant: $(cat "$work/kustomize.err")"
    fi
  done
else
  echo "# kubectl not installed: kustomization.yaml files checked by deploy_checks.py only"
fi

# ---- Slurm ----------------------------------------------------------------------------------
section "Slurm and scripts"
if output=$(shellcheck -x deploy/slurm/tessera-array.sbatch deploy/slurm/test-local.sh scripts/check-deploy.sh scripts/package.sh scripts/clean-root-test.sh 2>&1); then
  pass "shellcheck: deploy/slurm/tessera-array.sbatch, deploy/slurm/test-local.sh, scripts/check-deploy.sh, scripts/package.sh, scripts/clean-root-test.sh"
else
  fail "shellcheck:"; echo "$output"
fi
if [ "${TESSERA_CHECK_SLURM:-1}" = 0 ]; then
  echo "# TESSERA_CHECK_SLURM=0: the job array was not run on Slurm"
elif output=$(deploy/slurm/test-local.sh "$binary" 2>&1); then
  grep '^test-local' <<<"$output"
  pass "Slurm job array on a local single-node cluster: results for every slide, resubmission skips them"
else
  echo "$output" | tail -n 60
  fail "deploy/slurm/test-local.sh"
fi

echo
echo "check-deploy: $((SECONDS - started)) s"
echo "$passed passed, $failed failed"
finished=1
[ "$failed" -eq 0 ]
