#!/usr/bin/env bash
# Runs rotel-agent (PyPI `rotel`, a real OTLP collector) in the foreground and prints every span
# it receives: trace id, parent id, span id, kind, attributes and resource attributes.
# The zero-install way to see the mesh's traces on a laptop or in a test.
#
#   deploy/observability/rotel.sh                 # then: MESH_OTLP_ENDPOINT=http://127.0.0.1:4317
#   JAEGER_OTLP_ENDPOINT=http://127.0.0.1:14317 deploy/observability/rotel.sh   # also forward
#   deploy/observability/rotel.sh --print         # show the command line, do not run it
#
# Environment (all optional):
#   OTLP_GRPC_ENDPOINT    OTLP gRPC listen address     (default 127.0.0.1:4317, the OTLP port)
#   OTLP_HTTP_ENDPOINT    OTLP/HTTP listen address     (default 127.0.0.1:4318, the OTLP port)
#   JAEGER_OTLP_ENDPOINT  forward spans to this OTLP gRPC endpoint (Jaeger, otelcol, Tempo)
#                         instead of dropping them after printing
# Extra arguments are passed to `rotel-agent start` (see `rotel-agent start --help`).
set -euo pipefail

print_only=0
if [ "${1:-}" = "--print" ]; then print_only=1; shift; fi

# rotel's wheel ships the binary inside the Python package (not on PATH): find it there.
agent="$(command -v rotel-agent 2>/dev/null || true)"
if [ -z "$agent" ]; then
  agent="$(python3 - <<'PY' 2>/dev/null || true
import importlib.util, os
spec = importlib.util.find_spec("rotel")
if spec and spec.submodule_search_locations:
    path = os.path.join(list(spec.submodule_search_locations)[0], "rotel-agent")
    if os.access(path, os.X_OK):
        print(path)
PY
)"
fi
if [ -z "$agent" ]; then
  echo "rotel.sh: rotel-agent not found; install it with deploy/scripts/setup.sh (python3 -m pip install rotel)" >&2
  exit 127
fi

args=(start
  --otlp-grpc-endpoint "${OTLP_GRPC_ENDPOINT:-127.0.0.1:4317}"
  --otlp-http-endpoint "${OTLP_HTTP_ENDPOINT:-127.0.0.1:4318}"
  # Print every received span with all its fields ("basic" prints only counts).
  --debug-log traces
  --debug-log-verbosity detailed
)
if [ -n "${JAEGER_OTLP_ENDPOINT:-}" ]; then
  args+=(--exporter otlp --otlp-exporter-endpoint "$JAEGER_OTLP_ENDPOINT"
    # Jaeger's OTLP receiver is plaintext gRPC by default and accepts uncompressed data.
    --otlp-exporter-protocol grpc --otlp-exporter-compression none)
else
  # Nothing downstream: the debug log is the output.
  args+=(--exporter blackhole)
fi
args+=("$@")

if [ "$print_only" = 1 ]; then
  printf '%q ' "$agent" "${args[@]}"; echo
  exit 0
fi
# exec: signals (Ctrl-C, a test's kill) reach rotel-agent directly.
exec "$agent" "${args[@]}"
