#!/usr/bin/env bash
# Data-path benchmark (not a test): bash tests/bench/run.sh [--quick]
# Installs its tools, builds release binaries, runs every scenario side by side, prints a
# markdown table and writes docs/benchmarks/data-path.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/setup.sh bench
cargo build --release -p mesh-sidecar -p mesh-tests --bins
exec python3 tests/bench/bench.py "$@"
