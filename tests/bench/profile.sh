#!/usr/bin/env bash
# Instructions per request of the one-sidecar path (not a test):
#   bash tests/bench/profile.sh [REQUESTS]
# or of the two-sidecar mTLS path (scenario 3: a control plane, both sidecars under callgrind):
#   bash tests/bench/profile.sh --mtls [REQUESTS]
# Runs the release sidecar under callgrind, zeroes the counters once it is ready, sends a fixed
# number of keep-alive requests through it to mesh-bench-echo, dumps, and prints Ir/request plus
# the top functions. Instruction counts do not depend on how busy the machine is.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "--mtls" ]; then
  shift
  exec python3 tests/bench/profile_mtls.py "${1:-3000}"
fi
# 5,000 requests: callgrind runs the proxy ~50x slower; this keeps a run under a minute while
# making start-up noise (zeroed anyway) and per-connection setup (16 conns) negligible.
N=${1:-5000}
# MESH_BENCH_BIN_DIR: profile another build (e.g. a copy of the previous commit's binaries).
REL=${MESH_BENCH_BIN_DIR:-target/release}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
echo_port=$(port); out=$(port); admin=$(port)
"$REL/mesh-bench-echo" "127.0.0.1:$echo_port" &
cat > "$tmp/one.json" <<JSON
[{"name":"echo","version":"p","kind":{"cluster":{"name":"echo"}}},
 {"name":"echo","version":"p","kind":{"endpoints":{"service":"echo","endpoints":[{"address":"127.0.0.1:$echo_port","weight":1}]}}}]
JSON
valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
  "$REL/mesh-sidecar" --service bench-client --static-config "$tmp/one.json" \
  --outbound-addr "127.0.0.1:$out" --admin-addr "127.0.0.1:$admin" \
  --inbound-addr 127.0.0.1:0 --log warn 2>"$tmp/vg.log" &
vg=$!
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break; sleep 0.1; done
# Warm-up (first connection to the upstream, lazily built state), then zero the counters.
oha --no-tui -n 200 -c 16 -H 'Host: echo' "http://127.0.0.1:$out/" >/dev/null
callgrind_control -z "$vg" >/dev/null
oha --no-tui --output-format json -n "$N" -c 16 -H 'Host: echo' "http://127.0.0.1:$out/" \
  > "$tmp/oha.json"
callgrind_control -d "$vg" >/dev/null
sleep 1
kill -INT "$vg"; wait "$vg" || true
python3 - "$tmp" "$N" <<'PY'
import glob, json, sys
tmp, n = sys.argv[1], int(sys.argv[2])
codes = json.load(open(f"{tmp}/oha.json")).get("statusCodeDistribution")
dump = sorted(glob.glob(f"{tmp}/cg.out.*"))[-1]
total = 0
for line in open(dump):
    if line.startswith("summary:") or line.startswith("totals:"):
        total = int(line.split()[1])
print(f"requests: {n} status: {codes}  dump: {dump}")
print(f"instructions per request (all threads): {total / n:,.0f}")
PY
dump=$(ls "$tmp"/cg.out.* | sort | tail -1)
# Self costs summed by cgself.py (callgrind_annotate 3.19 prints inclusive costs for these
# dumps whatever --inclusive says); its inclusive listing is kept as the call-tree view.
python3 tests/bench/cgself.py "$dump" "$N" 60 > "$tmp/self.txt" || true
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '1,90p' > "$tmp/incl.txt" || true
head -25 "$tmp/self.txt"
mkdir -p target/bench-profile && cp "$dump" "$tmp/self.txt" "$tmp/incl.txt" target/bench-profile/
echo "annotations: target/bench-profile/{self,incl}.txt"
