#!/usr/bin/env bash
# The test command: installs what is missing, checks the layering, builds, runs the CLI
# checks and the Swift test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/check-layering.sh
swift build
scripts/cli-checks.sh
swift test
