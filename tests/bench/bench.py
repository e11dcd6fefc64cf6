#!/usr/bin/env python3
"""Side-by-side data-path benchmark: direct, one sidecar, two sidecars, HAProxy, nginx.

Run with `bash tests/bench/run.sh [--quick]`. Prints a markdown table and writes JSON; every
figure is given absolute and as a ratio to its baseline measured in the same run. Benchmarks never
fail on timing: a scenario whose tools are missing is reported as not measured, with the reason.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REL = os.path.join(ROOT, "target", "release")

# Core 0 for proxies, core 1 for load generator + echo: the same pinning for every scenario,
# so a proxy never competes with the load it is measured under.
PROXY_CPU = "0"
LOAD_CPU = "1"

# Fixed-rate latency: 1,000 rps over 16 connections, as specified for the comparison.
RATE = 1000
CONNS = 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=20.0):
    end = time.time() + limit
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} did not open within {limit}s")


def wait_ready(admin_port, limit=20.0):
    end = time.time() + limit
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError("sidecar did not become ready")


def spawn(cmd, cpu, **kw):
    return subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=subprocess.DEVNULL,
                            stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def with_children(pids):
    """`pids` plus their direct children: nginx serves from a worker forked by its master."""
    out = list(pids)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in pids:
                out.append(int(entry))
    return out


def rss_kb(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def resources(echo_port, app_port_identity=""):
    """Static config for a client sidecar: service `echo` with one endpoint."""
    return [
        {"name": "echo", "version": "bench", "kind": {"cluster": {"name": "echo"}}},
        {"name": "echo", "version": "bench", "kind": {"endpoints": {
            "service": "echo",
            "endpoints": [{"address": f"127.0.0.1:{echo_port}", "weight": 1,
                           "identity": app_port_identity, "app_port": 0}]}}},
    ]


def listener(service, mode):
    """Listener resource for `service`; mode 2 = TLS_MODE_PERMISSIVE (plaintext accepted)."""
    return {"name": service, "version": "bench",
            "kind": {"listener": {"name": service, "tls_mode": mode}}}


def big_config(echo_port, services=100, per_service=10):
    """`services` routed services with `per_service` endpoints each (100 routes, 1,000
    endpoints by default): the config size the idle-RSS goal is stated for."""
    out = []
    for i in range(services):
        svc = f"svc-{i}"
        out.append({"name": svc, "version": "bench", "kind": {"cluster": {"name": svc}}})
        out.append({"name": svc, "version": "bench", "kind": {"route": {"service": svc, "rules": [
            {"name": "api", "matches": [{"path": {"kind": 2, "value": f"/api/{i}/"}}],
             "backends": [{"service": svc, "weight": 1}]}]}}})
        eps = [{"address": f"127.0.0.{1 + j // 200}:{20000 + i * per_service + j}", "weight": 1,
                "labels": {"version": "v1"}} for j in range(per_service)]
        out.append({"name": svc, "version": "bench",
                    "kind": {"endpoints": {"service": svc, "endpoints": eps}}})
    return out


def loaded_idle_rss(tmp, echo_port):
    """RSS of an idle sidecar holding 100 routes and 1,000 endpoints."""
    cfg = os.path.join(tmp, "big.json")
    with open(cfg, "w") as f:
        json.dump(resources(echo_port) + big_config(echo_port), f)
    admin = free_port()
    p = spawn([os.path.join(REL, "mesh-sidecar"), "--service", "bench-big",
               "--static-config", cfg, "--admin-addr", f"127.0.0.1:{admin}",
               "--inbound-addr", "127.0.0.1:0", "--outbound-addr", "127.0.0.1:0"], PROXY_CPU)
    try:
        wait_ready(admin)
        time.sleep(1.0)  # let start-up allocations settle before reading RSS
        return {"rss_idle_100_routes_1000_endpoints_kb": rss_kb(p.pid)}
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def run_oha(url, seconds, host=None, http2=False):
    if not shutil.which("oha"):
        return None, "oha not installed (bash deploy/scripts/setup.sh bench)"
    cmd = ["taskset", "-c", LOAD_CPU, "oha", "--no-tui", "--output-format", "json",
           "-q", str(RATE), "--latency-correction", "-c", str(CONNS), "-z", f"{seconds}s"]
    if host and http2:
        # HTTP/2 routes on :authority, taken from the URL: name the service there and resolve
        # it to the listener (a Host header would be ignored).
        port = url.rsplit(":", 1)[1].split("/")[0]
        cmd += ["--connect-to", f"{host}:{port}:127.0.0.1:{port}"]
        url = url.replace(f"127.0.0.1:{port}", f"{host}:{port}")
    elif host:
        cmd += ["--host", host]
    if http2:
        cmd += ["--http2"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60)
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        return None, f"oha output not JSON: {out.stderr[-300:]}"
    pct = data.get("latencyPercentiles", {})
    ms = lambda k: round(pct.get(k, 0) * 1000, 3)
    # successRate counts transport-level success only: keep the status codes to spot 5xx.
    return {"p50_ms": ms("p50"), "p90_ms": ms("p90"), "p99_ms": ms("p99"),
            "p999_ms": ms("p99.9"),
            "success": data.get("summary", {}).get("successRate", 0),
            "status": data.get("statusCodeDistribution", {})}, None


def run_wrk(url, seconds, host=None):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c", "64", "-d", f"{seconds}s"]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    n = re.search(r"(\d+) requests in", out.stdout)
    return (float(m.group(1)) if m else 0.0), (int(n.group(1)) if n else 0)


def run_h2load(url, seconds, host=None):
    if not shutil.which("h2load"):
        return 0.0, 0
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-c", "16", "-m", "16", "-D", str(seconds)]
    if host:
        cmd += ["-H", f":authority: {host}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30)
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out.stdout)
    n = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out.stdout)
    return (float(m.group(1)) if m else 0.0), (int(n.group(1)) if n else 0)


class Scenario:
    def __init__(self, name, url, host=None, procs=(), http2=False):
        self.name, self.url, self.host, self.procs, self.http2 = name, url, host, procs, http2


def measure(sc, args):
    res = {"scenario": sc.name}
    pids = with_children([p.pid for p in sc.procs])
    if pids:
        res["rss_idle_kb"] = sum(rss_kb(p) for p in pids)
    lat, why = run_oha(sc.url, args.latency_secs, sc.host, sc.http2)
    if lat:
        res.update(lat)
    else:
        res["latency_not_measured"] = why
    if pids:
        res["rss_load_kb"] = sum(rss_kb(p) for p in pids)
    before = sum(cpu_seconds(p) for p in pids)
    if sc.http2:
        rps, n = run_h2load(sc.url, args.throughput_secs, sc.host)
    else:
        rps, n = run_wrk(sc.url, args.throughput_secs, sc.host)
    after = sum(cpu_seconds(p) for p in pids)
    res["max_rps"] = round(rps)
    if pids and n:
        res["cpu_us_per_req"] = round((after - before) * 1e6 / n, 2)
        res["rss_peak_kb"] = sum(rss_kb(p, "VmHWM") for p in pids)
    return res


def haproxy_conf(port, echo):
    return f"""global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server echo 127.0.0.1:{echo}
"""


def nginx_conf(port, echo, tmp):
    return f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp};
    upstream echo {{ server 127.0.0.1:{echo}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def cold_start(tmp, echo, runs=10):
    times = []
    for i in range(runs):
        cfg = os.path.join(tmp, f"cold-{i}.json")
        with open(cfg, "w") as f:
            json.dump(resources(echo), f)
        admin = free_port()
        t0 = time.perf_counter()
        p = spawn([os.path.join(REL, "mesh-sidecar"), "--service", "bench-client",
                   "--static-config", cfg, "--admin-addr", f"127.0.0.1:{admin}",
                   "--inbound-addr", "127.0.0.1:0", "--outbound-addr", "127.0.0.1:0",
                   "--data-dir", os.path.join(tmp, f"cold-{i}")], PROXY_CPU)
        try:
            wait_ready(admin)
            times.append((time.perf_counter() - t0) * 1000)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
    times.sort()
    return {"cold_start_p50_ms": round(times[len(times) // 2], 2),
            "cold_start_max_ms": round(times[-1], 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 s latency, 5 s throughput runs")
    ap.add_argument("--json", default=os.path.join(ROOT, "docs", "benchmarks", "data-path.json"))
    args = ap.parse_args()
    args.latency_secs = 10 if args.quick else 60
    args.throughput_secs = 5 if args.quick else 20

    tmp = tempfile.mkdtemp(prefix="mesh-bench-")
    procs = []
    try:
        echo_port = free_port()
        procs.append(spawn([os.path.join(REL, "mesh-bench-echo"), f"127.0.0.1:{echo_port}"],
                           LOAD_CPU))
        wait_port(echo_port)
        scenarios = [Scenario("direct", f"http://127.0.0.1:{echo_port}/"),
                     Scenario("direct-h2", f"http://127.0.0.1:{echo_port}/", http2=True)]

        # One sidecar, explicit outbound.
        cfg = os.path.join(tmp, "one.json")
        with open(cfg, "w") as f:
            json.dump(resources(echo_port), f)
        out_port, admin = free_port(), free_port()
        sc1 = spawn([os.path.join(REL, "mesh-sidecar"), "--service", "bench-client",
                     "--static-config", cfg, "--outbound-addr", f"127.0.0.1:{out_port}",
                     "--admin-addr", f"127.0.0.1:{admin}", "--inbound-addr", "127.0.0.1:0",
                     "--data-dir", os.path.join(tmp, "one")], PROXY_CPU)
        procs.append(sc1)
        wait_ready(admin)
        scenarios.append(Scenario("one-sidecar", f"http://127.0.0.1:{out_port}/", "echo", [sc1]))

        # Two sidecars: client sidecar -> server sidecar inbound -> echo.
        # A static config has no CA, so no certificates: the hop between the sidecars is
        # plaintext (server listener permissive). mTLS handshake cost is measured separately.
        in_port, admin2 = free_port(), free_port()
        cfg_srv = os.path.join(tmp, "srv.json")
        with open(cfg_srv, "w") as f:
            json.dump(resources(echo_port) + [listener("echo", 2)], f)
        srv = spawn([os.path.join(REL, "mesh-sidecar"), "--service", "echo",
                     "--app-ports", str(echo_port), "--static-config", cfg_srv,
                     "--inbound-addr", f"127.0.0.1:{in_port}", "--outbound-addr", "127.0.0.1:0",
                     "--admin-addr", f"127.0.0.1:{admin2}",
                     "--data-dir", os.path.join(tmp, "srv")], PROXY_CPU)
        procs.append(srv)
        wait_ready(admin2)
        cfg2 = os.path.join(tmp, "two.json")
        two = resources(in_port)
        two[1]["kind"]["endpoints"]["endpoints"][0]["app_port"] = echo_port
        with open(cfg2, "w") as f:
            json.dump(two, f)
        out2, admin3 = free_port(), free_port()
        cli = spawn([os.path.join(REL, "mesh-sidecar"), "--service", "bench-client2",
                     "--static-config", cfg2, "--outbound-addr", f"127.0.0.1:{out2}",
                     "--admin-addr", f"127.0.0.1:{admin3}", "--inbound-addr", "127.0.0.1:0",
                     "--data-dir", os.path.join(tmp, "cli")], PROXY_CPU)
        procs.append(cli)
        wait_ready(admin3)
        scenarios.append(Scenario("two-sidecars", f"http://127.0.0.1:{out2}/", "echo", [cli, srv]))
        scenarios.append(Scenario("two-sidecars-h2", f"http://127.0.0.1:{out2}/", "echo",
                                  [cli, srv], http2=True))

        if shutil.which("haproxy"):
            hp = free_port()
            conf = os.path.join(tmp, "haproxy.cfg")
            with open(conf, "w") as f:
                f.write(haproxy_conf(hp, echo_port))
            p = spawn(["haproxy", "-f", conf], PROXY_CPU)
            procs.append(p)
            wait_port(hp)
            scenarios.append(Scenario("haproxy", f"http://127.0.0.1:{hp}/", None, [p]))
        if shutil.which("nginx"):
            ng = free_port()
            conf = os.path.join(tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(nginx_conf(ng, echo_port, tmp))
            p = spawn(["nginx", "-c", conf], PROXY_CPU)
            procs.append(p)
            wait_port(ng)
            scenarios.append(Scenario("nginx", f"http://127.0.0.1:{ng}/", None, [p]))

        results = [measure(sc, args) for sc in scenarios]
        extra = cold_start(tmp, echo_port)
        extra.update(loaded_idle_rss(tmp, echo_port))
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    report(results, extra, args)


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def report(results, extra, args):
    by = {r["scenario"]: r for r in results}
    direct = by.get("direct", {})
    for r in results:
        # Latency added over direct, and throughput/CPU relative to the HAProxy hop.
        for k in ("p50_ms", "p99_ms"):
            base = by.get("direct-h2", {}) if r["scenario"].endswith("h2") else direct
            if k in r and k in base:
                r[f"{k}_added"] = round(r[k] - base[k], 3)
                r[f"{k}_vs_direct"] = ratio(r[k], base[k])
        hp = by.get("haproxy", {})
        r["rps_vs_haproxy"] = ratio(r.get("max_rps"), hp.get("max_rps"))
        r["rps_vs_direct"] = ratio(r.get("max_rps"), base.get("max_rps"))
        r["cpu_vs_haproxy"] = ratio(r.get("cpu_us_per_req"), hp.get("cpu_us_per_req"))
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "kernel": platform.release(), "quick": args.quick,
               # Shared machine: the load average says how much the figures are disturbed.
               "loadavg_1_5_15": list(os.getloadavg()),
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                        capture_output=True, text=True).stdout.strip()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            machine["cpu"] = m.group(1) if m else machine["cpu"]
    except OSError:
        pass
    doc = {"machine": machine, "results": results, "sidecar": extra}
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
    cols = ["scenario", "p50_ms", "p99_ms", "p999_ms", "p50_ms_added", "p99_ms_added", "max_rps",
            "rps_vs_direct", "rps_vs_haproxy", "cpu_us_per_req", "cpu_vs_haproxy", "rss_idle_kb", "rss_load_kb", "rss_peak_kb",
            "status"]
    print(f"machine: {machine}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")
    print(f"sidecar cold start: {extra}")
    for r in results:
        if "latency_not_measured" in r:
            print(f"note: {r['scenario']}: latency not measured: {r['latency_not_measured']}")


if __name__ == "__main__":
    sys.exit(main())
