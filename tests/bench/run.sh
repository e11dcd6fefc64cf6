#!/usr/bin/env bash
# Data-path benchmark (not a test): bash tests/bench/run.sh [--quick]
# Installs its tools, builds release binaries, runs every scenario side by side (the mTLS ones
# with a real control plane), prints a markdown table and writes docs/benchmarks/data-path.json
# and the results section of docs/benchmarks/data-path.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/setup.sh bench
cargo build --release -p mesh-sidecar -p mesh-control-plane -p mesh-cli -p mesh-tests --bins
exec python3 tests/bench/bench.py "$@"
