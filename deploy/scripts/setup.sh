#!/usr/bin/env bash
# Idempotent setup: installs everything the demo, the tests and the benchmarks need.
# Safe to run many times; each step checks before it installs.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

# Debian packages: tool binary -> package.
declare -A APT=(
  [iptables]=iptables
  [ip]=iproute2
  [tcpdump]=tcpdump
  [promtool]=prometheus
  [haproxy]=haproxy
  [nginx]=nginx
  [wrk]=wrk
  [h2load]=nghttp2-client
  [curl]=curl
)
if [ "${MESH_SETUP_MINIMAL:-0}" != "1" ]; then
  for bin in "${!APT[@]}"; do
    have "$bin" || need_apt+=("${APT[$bin]}")
  done
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The nginx/haproxy packages may start system services; the project starts its own instances.
  for svc in nginx haproxy prometheus; do
    (have systemctl && $SUDO systemctl stop "$svc" >/dev/null 2>&1) || true
    $SUDO pkill -x "$svc" >/dev/null 2>&1 || true
  done
fi

# OTLP collector used by the trace tests: PyPI `rotel` ships the rotel-agent binary inside the
# Python package; link it onto PATH so tests and users find it by name.
if ! have rotel-agent && [ "${MESH_SETUP_MINIMAL:-0}" != "1" ]; then
  echo "setup: installing rotel (OTLP collector) from PyPI"
  python3 -m pip install -q --root-user-action=ignore rotel || echo "setup: WARNING rotel install failed; trace tests will say so"
  agent="$(python3 -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null || true)"
  if [ -n "$agent" ] && [ -x "$agent" ]; then
    $SUDO ln -sf "$agent" /usr/local/bin/rotel-agent
  fi
fi

# Benchmark-only tools (deploy/scripts/setup.sh bench): oha for fixed-rate latency.
if [ "${1:-}" = "bench" ] && ! have oha; then
  echo "setup: installing oha (cargo install; takes a few minutes once)"
  cargo install --locked oha
fi

# Rust components and cargo tools.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
echo "setup: ok"
