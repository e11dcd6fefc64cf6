#!/usr/bin/env bash
# The README's first command: a local mesh demo on embedded defaults (no server to install).
# Extra arguments go to `mesh-cli demo` (e.g. --duration 30).
set -euo pipefail
cd "$(dirname "$0")/../.."
MESH_SETUP_MINIMAL=1 bash deploy/scripts/setup.sh
cargo build --release --workspace --bins
exec ./target/release/mesh-cli demo "$@"
