#!/usr/bin/env bash
# Enforces the module layering of DESIGN.md (SwiftPM does not). The map below is the policy;
# the targets' declared dependencies are read from `swift package dump-package`, and the
# script checks that (1) each target declares only dependencies the policy allows, (2) each
# Swift file imports only project modules its target declares, (3) the Engine's dependency
# closure reaches no system library but OpenBLAS (through LinearAlgebra), and (4) the engine's C
# kernels depend on nothing and include no library headers.
set -uo pipefail
cd "$(dirname "$0")/.."
declare -A allowed=(
  [CVipsShims]="CVips"
  [CMicroHTTPDShims]="CMicroHTTPD"
  [CJPEGShims]="CJPEG"
  [CEngineKernels]=""
  [SlideIO]="CVips CVipsShims CJPEGShims"
  [LinearAlgebra]="COpenBLAS"
  [JobStore]="CSQLite CLibPQ"
  [HTTPServer]="CMicroHTTPD CMicroHTTPDShims"
  [Engine]="LinearAlgebra CEngineKernels SwiftProtobuf"
  [TesseraCore]="SlideIO Engine JobStore HTTPServer Logging"
  [tessera]="TesseraCore ArgumentParser Logging"
  [PostgresTestSupport]=""
)
status=0
fail() { echo "layering: $*"; status=1; }

dump=$(swift package dump-package 2>/dev/null) || { echo "layering: swift package dump-package failed"; exit 1; }
declare -A declared=()
while IFS=$'\t' read -r name type deps; do
  [ "$type" = test ] && continue
  declared[$name]="$deps"
done < <(jq -r '.targets[] | [.name, .type, ([.dependencies[] | (.byName // .product // .target)[0]] | join(" "))] | @tsv' <<<"$dump")
project_modules="${!declared[*]} SwiftProtobuf Logging ArgumentParser"

for target in "${!declared[@]}"; do
  [ "$(jq -r --arg t "$target" '.targets[] | select(.name == $t) | .type' <<<"$dump")" = system ] && continue
  if [ -z "${allowed[$target]+set}" ]; then fail "target $target is not in the layering map"; continue; fi
  for dep in ${declared[$target]}; do
    case " ${allowed[$target]} " in *" $dep "*) ;; *) fail "$target depends on $dep (allowed: ${allowed[$target]:-nothing})" ;; esac
  done
done

# Imports: only declared project modules.
for target in "${!declared[@]}"; do
  [ -d "Sources/$target" ] || continue
  while IFS=: read -r file _ line; do
    module=$(sed -E 's/^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*(public |package |internal )?import[[:space:]]+(struct |class |enum |func )?([A-Za-z_]+).*/\4/' <<<"$line")
    case " $project_modules " in *" $module "*) ;; *) continue ;; esac
    case " ${declared[$target]} " in
      *" $module "*) ;;
      *) fail "$file imports $module (declared for $target: ${declared[$target]})" ;;
    esac
  done < <(grep -rnE '^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*((public|package|internal)[[:space:]]+)?import[[:space:]]' "Sources/$target" --include='*.swift')
done

# The Engine's closure: no libvips, libmicrohttpd, SQLite or libpq, not even through a shim.
closure() {
  local seen=" " t
  local -a todo=("$1")
  while [ ${#todo[@]} -gt 0 ]; do
    t=${todo[0]}; todo=("${todo[@]:1}")
    case "$seen" in *" $t "*) continue ;; esac
    seen="$seen$t "
    todo+=(${declared[$t]:-})
  done
  echo "$seen"
}
for bad in CVips CVipsShims CJPEG CJPEGShims CMicroHTTPD CMicroHTTPDShims CSQLite CLibPQ; do
  case "$(closure Engine)" in *" $bad "*) fail "Engine reaches $bad" ;; esac
done
# The kernels' C sources include only their own headers and the C / compiler headers.
if grep -nE '#include[[:space:]]*<(vips/|jpeglib|microhttpd|sqlite3|libpq|cblas|openblas)' -r Sources/CEngineKernels; then
  fail "CEngineKernels includes a library header"
fi
# Tests never reach into the C modules either.
if grep -rnE '^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*import[[:space:]]+C(Vips|JPEG|OpenBLAS|SQLite|LibPQ|MicroHTTPD)[A-Za-z]*\b' Tests --include='*.swift'; then
  fail "tests import a C module"
fi
[ $status -eq 0 ] && echo "layering: ok"
exit $status
