"""The meshed (mTLS) part of the data-path benchmark: a real control plane with TLS discovery,
join tokens from its admin API, sidecars certified by its CA, and `route set --wait` timing."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request

from tools import PROXY_CPU, REL, spawn, wait_json, wait_ready


class ControlPlane:
    """`mesh-control-plane` on ephemeral ports, its data dir in `tmp`, discovery over TLS."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "cp")
        os.makedirs(self.dir, exist_ok=True)
        addrs = os.path.join(self.dir, "bench-addrs.json")
        # Pinned with the proxies: it is idle during the measurements, and it must not take
        # time from the load generator's core while sidecars start.
        self.proc = spawn([os.path.join(REL, "mesh-control-plane"), "--data-dir", self.dir,
                           "--discovery-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
                           "--http-addr", "127.0.0.1:0", "--addrs-file", addrs,
                           "--discovery-tls=true"], PROXY_CPU)
        a = wait_json(addrs)
        self.url = f"https://{a['discovery']}"
        self.bundle = os.path.join(self.dir, "ca", "trust-bundle.pem")
        end = time.time() + 20
        while not os.path.exists(self.bundle):
            if time.time() > end:
                raise RuntimeError("control plane wrote no trust bundle")
            time.sleep(0.01)
        # The same sampling as the static-config scenarios (the sidecar's own defaults: every
        # trace, 1 % of access-log lines) instead of a fresh mesh's log-everything default, so
        # the meshed rows measure the path and not a larger observability load.
        out = self.cli("runtime", "set", "--trace-sampling", "100%", "--access-log", "1%")
        if out.returncode != 0:
            raise RuntimeError(f"runtime set failed: {out.stderr.strip()}")

    def cli(self, *args, timeout=60):
        """Runs `mesh-cli` against this control plane (admin address and token from its data dir)."""
        return subprocess.run([os.path.join(REL, "mesh-cli"), "--data-dir", self.dir] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    def token(self, service, path):
        """A join token for `service`'s account, written to `path` (the sidecar reads the file)."""
        out = self.cli("-o", "json", "token", "create", "--service-account", service)
        if out.returncode != 0:
            raise RuntimeError(f"token create failed: {out.stderr.strip()}")
        with open(path, "w") as f:
            f.write(json.loads(out.stdout)["token"])
        return path

    def stop(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def meshed_command(cp, tmp, name, service, app_port=None):
    """The command line of a meshed sidecar of `service` (join token, bundle, https discovery,
    ports 0) in its own dir under `tmp`: (argv, dir, addresses file)."""
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    addrs = os.path.join(d, "addrs.json")
    cmd = [os.path.join(REL, "mesh-sidecar"), "--service", service,
           "--control-plane", cp.url, "--ca-bundle", cp.bundle,
           "--join-token-file", cp.token(service, os.path.join(d, "token")),
           "--inbound-addr", "127.0.0.1:0", "--outbound-addr", "127.0.0.1:0",
           "--admin-addr", "127.0.0.1:0", "--addrs-file", addrs,
           "--data-dir", os.path.join(d, "data"), "--log", "warn"]
    if app_port:
        cmd += ["--app-ports", str(app_port)]
    return cmd, d, addrs


def meshed_sidecar(cp, tmp, name, service, app_port=None):
    """A sidecar of `service` with a join token: it gets its certificate from the control plane
    before `/ready`, announces itself (so clients find it as an endpoint with its SPIFFE
    identity) and speaks mTLS to and from peers. Returns (process, addresses)."""
    cmd, _, addrs = meshed_command(cp, tmp, name, service, app_port)
    t0 = time.perf_counter()
    p = spawn(cmd, PROXY_CPU)
    a = wait_json(addrs)
    wait_ready(int(a["admin"].rsplit(":", 1)[1]), proc=p)
    a["ready_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    return p, a


def wait_routable(outbound, host, limit=30.0):
    """Until the client sidecar routes `host` with a 200: the server's announcement has to
    reach the client through the control plane first."""
    end = time.time() + limit
    while time.time() < end:
        req = urllib.request.Request(f"http://{outbound}/", headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{host} not routable through {outbound} within {limit}s")


def route_set_applied(cp, service, runs=5):
    """`mesh-cli route set SERVICE … --wait`: wall time from the command's start until every
    sidecar subscribed to the route ACKed it (the CLI's own figure next to it). Each run
    changes the rule's timeout, so each is a real new version."""
    wall, acked, proxies = [], [], 0
    for i in range(runs):
        t0 = time.perf_counter()
        out = cp.cli("route", "set", service, "--match", "path-prefix=/", "--rule-name", "bench",
                     "--timeout", f"{30 + i}s", "--wait")
        wall.append((time.perf_counter() - t0) * 1000)
        if out.returncode != 0:
            return {"route_set_error": (out.stderr or out.stdout).strip()[-300:]}
        m = re.search(r"ACKed by (\d+) prox\w* in ([\d.]+)s", out.stdout)
        if m:
            proxies = int(m.group(1))
            acked.append(float(m.group(2)) * 1000)
    wall.sort()
    acked.sort()
    res = {"route_set_wall_p50_ms": round(wall[len(wall) // 2], 1),
           "route_set_wall_max_ms": round(wall[-1], 1), "route_set_proxies": proxies}
    if acked:
        res["route_set_acked_p50_ms"] = round(acked[len(acked) // 2], 1)
    return res
