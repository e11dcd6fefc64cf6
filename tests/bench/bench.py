#!/usr/bin/env python3
"""Side-by-side data-path benchmark: direct, one sidecar, two sidecars (plaintext hop, and mTLS
with a real control plane over HTTP/1.1, HTTP/2 and gRPC), HAProxy, nginx.

Run with `bash tests/bench/run.sh [--quick]`. Prints a markdown table, writes JSON and the
results section of docs/benchmarks/data-path.md; every figure is given absolute and as a ratio to
its baseline measured in the same run. Benchmarks never fail on timing: a scenario whose tools
are missing is reported as not measured, with the reason.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import configs
import mesh
import report
from tools import (LOAD_CPU, PROXY_CPU, REL, ROOT, GRPC_REQUEST, cpu_seconds, free_port,
                   rss_kb, rss_split_kb, run_h2load, run_oha, run_wrk, spawn, wait_port, wait_ready,
                   with_children)


class Scenario:
    def __init__(self, name, url, host=None, procs=(), http2=False, grpc=False):
        self.name, self.url, self.host, self.procs = name, url, host, procs
        self.http2, self.grpc = http2 or grpc, grpc


def measure(sc, args):
    print(f"measuring {sc.name} …", file=sys.stderr, flush=True)
    res = {"scenario": sc.name}
    pids = with_children([p.pid for p in sc.procs])
    if pids:
        res["rss_idle_kb"] = sum(rss_kb(p) for p in pids)
    body = args.grpc_body if sc.grpc else None
    lat, why = run_oha(sc.url, args.latency_secs, sc.host, sc.http2, body)
    if lat:
        res.update(lat)
    else:
        res["latency_not_measured"] = why
    if pids:
        res["rss_load_kb"] = sum(rss_kb(p) for p in pids)
    before = sum(cpu_seconds(p) for p in pids)
    if sc.http2:
        rps, n, bad = run_h2load(sc.url, args.throughput_secs, sc.host, body)
    else:
        rps, n, bad = run_wrk(sc.url, args.throughput_secs, sc.host)
    after = sum(cpu_seconds(p) for p in pids)
    res["max_rps"] = round(rps)
    res["errors"] = bad
    if pids and n:
        res["cpu_us_per_req"] = round((after - before) * 1e6 / n, 2)
        res["rss_peak_kb"] = sum(rss_kb(p, "VmHWM") for p in pids)
    return res


def static_sidecar(tmp, name, service, cfg, extra=()):
    """A sidecar on a static config (no control plane, so no certificates)."""
    path = os.path.join(tmp, f"{name}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    out, admin, inbound = free_port(), free_port(), free_port()
    p = spawn([os.path.join(REL, "mesh-sidecar"), "--service", service, "--static-config", path,
               "--outbound-addr", f"127.0.0.1:{out}", "--admin-addr", f"127.0.0.1:{admin}",
               "--inbound-addr", f"127.0.0.1:{inbound}", "--data-dir", os.path.join(tmp, name)]
              + list(extra), PROXY_CPU)
    wait_ready(admin, proc=p)
    return p, out, inbound


def loaded_idle_rss(tmp, echo_port):
    """RSS of an idle sidecar holding 100 routes and 1,000 endpoints."""
    p, _, _ = static_sidecar(tmp, "big", "bench-big",
                             configs.resources(echo_port) + configs.big_config(echo_port))
    try:
        # Past the sidecar's post-update heap trim (1 s after the last change).
        time.sleep(2.5)
        anon, file = rss_split_kb(p.pid)
        return {"rss_idle_100_routes_1000_endpoints_kb": rss_kb(p.pid),
                "rss_idle_100_routes_1000_endpoints_anon_kb": anon,
                "rss_idle_100_routes_1000_endpoints_file_kb": file}
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def cold_start(tmp, echo, runs=10):
    """Spawn → `/ready` of a static-config sidecar, `runs` times."""
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        p, _, _ = static_sidecar(tmp, f"cold-{i}", "bench-client", configs.resources(echo))
        times.append((time.perf_counter() - t0) * 1000)
        p.send_signal(signal.SIGKILL)
        p.wait()
    times.sort()
    return {"cold_start_p50_ms": round(times[len(times) // 2], 2),
            "cold_start_max_ms": round(times[-1], 2)}


def meshed_scenarios(tmp, echo_port, procs, extra):
    """Control plane (TLS discovery) + server sidecar (app: echo) + client sidecar, both with
    join tokens and CA-issued certificates: the hop between them is mutual TLS."""
    cp = mesh.ControlPlane(tmp)
    procs.append(cp.proc)
    srv, srv_a = mesh.meshed_sidecar(cp, tmp, "mtls-srv", "echo", echo_port)
    procs.append(srv)
    cli, cli_a = mesh.meshed_sidecar(cp, tmp, "mtls-cli", "bench-client")
    procs.append(cli)
    extra["meshed_ready_ms_server_client"] = [srv_a["ready_ms"], cli_a["ready_ms"]]
    mesh.wait_routable(cli_a["outbound"], "echo")
    url = f"http://{cli_a['outbound']}/"
    both = [cli, srv]
    return cp, [Scenario("two-sidecars-mtls", url, "echo", both),
                Scenario("two-sidecars-mtls-h2", url, "echo", both, http2=True),
                Scenario("two-sidecars-mtls-grpc", url, "echo", both, grpc=True)]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 s latency, 5 s throughput runs")
    ap.add_argument("--json", default=os.path.join(ROOT, "docs", "benchmarks", "data-path.json"))
    ap.add_argument("--md", default=os.path.join(ROOT, "docs", "benchmarks", "data-path.md"),
                    help="markdown file whose results section is rewritten ('' = none)")
    args = ap.parse_args()
    args.latency_secs = 10 if args.quick else 60
    args.throughput_secs = 5 if args.quick else 20
    load_before = os.getloadavg()

    tmp = tempfile.mkdtemp(prefix="mesh-bench-")
    args.grpc_body = os.path.join(tmp, "grpc-request.bin")
    with open(args.grpc_body, "wb") as f:
        f.write(GRPC_REQUEST)
    procs, extra = [], {}
    try:
        echo_port = free_port()
        procs.append(spawn([os.path.join(REL, "mesh-bench-echo"), f"127.0.0.1:{echo_port}"],
                           LOAD_CPU))
        wait_port(echo_port)
        direct = f"http://127.0.0.1:{echo_port}/"
        scenarios = [Scenario("direct", direct), Scenario("direct-h2", direct, http2=True),
                     Scenario("direct-grpc", direct, grpc=True)]

        # One sidecar, explicit outbound.
        sc1, out1, _ = static_sidecar(tmp, "one", "bench-client", configs.resources(echo_port))
        procs.append(sc1)
        scenarios.append(Scenario("one-sidecar", f"http://127.0.0.1:{out1}/", "echo", [sc1]))

        # Two sidecars on static configs: no CA, so the hop is plaintext (server listener
        # permissive). The mTLS pair below is the same path with certificates.
        srv, _, in_port = static_sidecar(tmp, "srv", "echo",
                                         configs.resources(echo_port)
                                         + [configs.listener("echo", 2)],
                                         ["--app-ports", str(echo_port)])
        procs.append(srv)
        two = configs.resources(in_port)
        two[1]["kind"]["endpoints"]["endpoints"][0]["app_port"] = echo_port
        cli, out2, _ = static_sidecar(tmp, "cli", "bench-client2", two)
        procs.append(cli)
        scenarios.append(Scenario("two-sidecars-plaintext", f"http://127.0.0.1:{out2}/", "echo",
                                  [cli, srv]))

        cp = None
        try:
            cp, more = meshed_scenarios(tmp, echo_port, procs, extra)
            scenarios += more
        except (RuntimeError, OSError) as e:
            extra["mtls_not_measured"] = str(e)

        if shutil.which("haproxy"):
            hp = free_port()
            conf = os.path.join(tmp, "haproxy.cfg")
            with open(conf, "w") as f:
                f.write(configs.haproxy_conf(hp, echo_port))
            p = spawn(["haproxy", "-f", conf], PROXY_CPU)
            procs.append(p)
            wait_port(hp)
            scenarios.append(Scenario("haproxy", f"http://127.0.0.1:{hp}/", None, [p]))
        if shutil.which("nginx"):
            ng = free_port()
            conf = os.path.join(tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(configs.nginx_conf(ng, echo_port, tmp))
            p = spawn(["nginx", "-c", conf], PROXY_CPU)
            procs.append(p)
            wait_port(ng)
            scenarios.append(Scenario("nginx", f"http://127.0.0.1:{ng}/", None, [p]))

        results = [measure(sc, args) for sc in scenarios]
        if cp is not None:
            # Last: the route it sets (a catch-all with a timeout) must not change the
            # measured requests.
            extra.update(mesh.route_set_applied(cp, "echo"))
        extra.update(cold_start(tmp, echo_port))
        extra.update(loaded_idle_rss(tmp, echo_port))
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    report.write(results, extra, args, load_before)


if __name__ == "__main__":
    sys.exit(main())
