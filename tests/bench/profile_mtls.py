#!/usr/bin/env python3
"""Instructions per request of the two-sidecar mTLS path (scenario 3), not a test:
`python3 tests/bench/profile_mtls.py REQUESTS` (or `bash tests/bench/profile.sh --mtls N`).

A real control plane (TLS discovery, join tokens) certifies two release sidecars that both run
under callgrind: client sidecar → (HTTP/2 over mTLS) → server sidecar → mesh-bench-echo. After
warm-up both sidecars' counters are zeroed, REQUESTS keep-alive HTTP/1.1 requests go through
the client sidecar (oha, 16 connections, Host `echo`), both are dumped, and the instructions per
request are printed per sidecar and together, with each one's top self costs (cgself.py).
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cgself  # noqa: E402
import mesh  # noqa: E402
from mesh import ControlPlane, wait_routable  # noqa: E402
from tools import REL, ROOT, free_port, oha_count, wait_json, wait_ready  # noqa: E402

# Start-up under callgrind (certificate request, discovery, the first TLS handshakes) runs
# ~50x slower than native: a minute bounds it generously.
SLOW = 60.0


def sidecar(cp, tmp, name, service, app_port=None):
    """A meshed sidecar (as in mesh.meshed_sidecar) under callgrind; returns (process, addrs, dir)."""
    argv, d, addrs = mesh.meshed_command(cp, tmp, name, service, app_port)
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out"] + argv
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(d, "vg.log"), "w"))
    a = wait_json(addrs, SLOW)
    wait_ready(int(a["admin"].rsplit(":", 1)[1]), SLOW, proc=p)
    return p, a, d


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    tmp = tempfile.mkdtemp(prefix="mesh-profile-")
    procs = []
    try:
        echo_port = free_port()
        procs.append(subprocess.Popen([os.path.join(REL, "mesh-bench-echo"),
                                       f"127.0.0.1:{echo_port}"]))
        cp = ControlPlane(tmp)
        procs.append(cp.proc)
        srv, _, srv_d = sidecar(cp, tmp, "srv", "echo", echo_port)
        procs.append(srv)
        cli, cli_a, cli_d = sidecar(cp, tmp, "cli", "bench-client")
        procs.append(cli)
        wait_routable(cli_a["outbound"], "echo", limit=SLOW)
        # Warm-up: the mTLS connection, lazily built state, first-use allocations.
        oha_count(cli_a["outbound"], 200)
        for p in (cli, srv):
            subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
        codes = json.loads(oha_count(cli_a["outbound"], n, json_out=True)).get("statusCodeDistribution")
        for p in (cli, srv):
            subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
        print(f"requests: {n} status: {codes}")
        out_dir = os.path.join(ROOT, "target", "bench-profile")
        os.makedirs(out_dir, exist_ok=True)
        total = 0
        for role, d in (("client", cli_d), ("server", srv_d)):
            dump = sorted(glob.glob(f"{d}/cg.out.*"))[-1]
            ir = cgself.total(dump)
            total += ir
            print(f"{role} sidecar: {ir / n:,.0f} instructions per request")
            shutil.copy(dump, os.path.join(out_dir, f"mtls-{role}.cg.out"))
            costs = cgself.self_costs(dump)
            all_self = sum(costs.values())
            with open(os.path.join(out_dir, f"mtls-{role}-self.txt"), "w") as f:
                f.write(f"self cost, instructions per request (total {all_self / n:,.0f})\n")
                for name, c in sorted(costs.items(), key=lambda kv: -kv[1])[:60]:
                    f.write(f"{c / n:>9,.0f}  {100 * c / all_self:5.1f} %  {name[:150]}\n")
        print(f"both sidecars: {total / n:,.0f} instructions per request")
        print(f"annotations: {out_dir}/mtls-{{client,server}}-self.txt (dumps: mtls-*.cg.out)")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGINT)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
