#!/usr/bin/env bash
# Enforces the module layering of DESIGN.md (SwiftPM does not): only the thin wrapper
# targets import a C module, and each layer imports only the layers below it.
set -uo pipefail
cd "$(dirname "$0")/.."
declare -A allowed=(
  [SlideIO]="CVips CTesseraShims"
  [LinearAlgebra]="COpenBLAS CTesseraShims"
  [JobStore]="CSQLite CLibPQ CTesseraShims"
  [HTTPServer]="CMicroHTTPD CTesseraShims"
  [Engine]="LinearAlgebra CTesseraShims SwiftProtobuf"
  [TesseraCore]="SlideIO Engine JobStore HTTPServer Logging"
  [tessera]="TesseraCore ArgumentParser Logging"
)
project_modules="CVips COpenBLAS CSQLite CLibPQ CMicroHTTPD CTesseraShims SlideIO LinearAlgebra JobStore HTTPServer Engine TesseraCore SwiftProtobuf Logging ArgumentParser"
status=0
for target in "${!allowed[@]}"; do
  [ -d "Sources/$target" ] || continue
  while IFS=: read -r file _ line; do
    module=$(sed -E 's/^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*(public |package |internal )?import[[:space:]]+(struct |class |enum |func )?([A-Za-z_]+).*/\4/' <<<"$line")
    case " $project_modules " in *" $module "*) ;; *) continue ;; esac
    case " ${allowed[$target]} " in
      *" $module "*) ;;
      *) echo "layering: $file imports $module (allowed in $target: ${allowed[$target]})"; status=1 ;;
    esac
  done < <(grep -rnE '^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*((public|package|internal)[[:space:]]+)?import[[:space:]]' "Sources/$target" --include='*.swift')
done
# Tests never reach into the C modules either.
if grep -rnE '^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*import[[:space:]]+C(Vips|OpenBLAS|SQLite|LibPQ|MicroHTTPD)\b' Tests --include='*.swift'; then
  echo "layering: tests import a C module"
  status=1
fi
[ $status -eq 0 ] && echo "layering: ok"
exit $status
