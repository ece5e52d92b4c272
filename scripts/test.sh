#!/usr/bin/env bash
# The test command: installs what is missing, checks the layering, builds, runs the CLI
# checks, a schemathesis pass against a live server (scripts/api-fuzz.sh), the deployment
# checks (systemd, Kubernetes, Dockerfile, Slurm) and the Swift test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
scripts/check-layering.sh
swift build
scripts/cli-checks.sh
scripts/api-fuzz.sh
scripts/check-deploy.sh
# A hung test must fail the run, not stall it: the suite takes a few minutes.
timeout --kill-after=30 2400 swift test
