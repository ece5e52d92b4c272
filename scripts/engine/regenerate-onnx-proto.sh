#!/usr/bin/env bash
# Regenerates Sources/Engine/ONNX/onnx.pb.swift from the onnx.proto shipped in the `onnx` PyPI wheel.
# Needs: protoc (apt-get install protobuf-compiler), python3 with `onnx` (pip install onnx), and
# protoc-gen-swift built from swift-protobuf 1.39.0 (same version as Package.resolved):
#   git clone https://github.com/apple/swift-protobuf /tmp/swift-protobuf
#   (cd /tmp/swift-protobuf && git checkout 1.39.0 && swift build -c release --product protoc-gen-swift)
# Usage: scripts/engine/regenerate-onnx-proto.sh [path/to/protoc-gen-swift]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
plugin="${1:-${PROTOC_GEN_SWIFT:-/tmp/swift-protobuf/.build/release/protoc-gen-swift}}"
proto_dir="$(python3 -c 'import onnx, os; print(os.path.dirname(onnx.__file__))')"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
# Generated types are internal to Engine (only the loader sees them); the file is named onnx.pb.swift.
cp "$proto_dir/onnx.proto" "$work/onnx.proto"
protoc --plugin=protoc-gen-swift="$plugin" -I "$work" \
       --swift_opt=Visibility=Internal --swift_out="$work" "$work/onnx.proto"
cp "$work/onnx.pb.swift" "$root/Sources/Engine/ONNX/onnx.pb.swift"
echo "wrote Sources/Engine/ONNX/onnx.pb.swift from $proto_dir/onnx.proto ($(python3 -c 'import onnx; print(onnx.__version__)'))"
