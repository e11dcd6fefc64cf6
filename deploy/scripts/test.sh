#!/usr/bin/env bash
# The project's one test command (the README's second command; .ci/run calls exactly this).
# Installs what tests need (idempotent), then: format check, clippy, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Binaries are built first so end-to-end tests spawn real processes.
cargo build --workspace --bins
MESH_REQUIRE_NETNS=1 cargo nextest run --workspace --no-fail-fast --profile ci
