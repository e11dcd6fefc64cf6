"""Process and load-generator helpers of the data-path benchmark (ports, pinning, /proc, oha, wrk, h2load)."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# MESH_BENCH_BIN_DIR: another build of the binaries (e.g. target/debug while developing the
# harness); the figures are only meaningful for the release build.
REL = os.environ.get("MESH_BENCH_BIN_DIR") or os.path.join(ROOT, "target", "release")

# Core 0 for proxies, core 1 for load generator + echo: the same pinning for every scenario,
# so a proxy never competes with the load it is measured under.
PROXY_CPU = "0"
LOAD_CPU = "1"

# Fixed-rate latency: 1,000 rps over 16 connections, as specified for the comparison.
RATE = 1000
CONNS = 16

# A gRPC unary request body: the 5-byte prefix (uncompressed, length 10) and 10 message bytes.
GRPC_REQUEST = b"\x00\x00\x00\x00\x0a" + b"0123456789"
GRPC_HEADERS = ["content-type: application/grpc", "te: trailers"]


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


def wait_ready(admin_port, limit=20.0, proc=None):
    """Polls the sidecar's `/ready` every 5 ms (fine enough for a cold start in ms)."""
    end = time.time() + limit
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"sidecar exited with {proc.returncode} before ready")
        time.sleep(0.005)
    raise RuntimeError("sidecar did not become ready")


def wait_json(path, limit=20.0):
    """The addresses file a mesh process writes (atomically) once it has bound its ports."""
    end = time.time() + limit
    while time.time() < end:
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.01)
    raise RuntimeError(f"{path} not written within {limit}s")


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


def rss_split_kb(pid):
    """(private anonymous, file-backed) resident KiB: the heap, stacks and queues the process
    owns apart from the mapped binary and libraries (page cache, shared by every process
    running the same files)."""
    return rss_kb(pid, "RssAnon"), rss_kb(pid, "RssFile")


def rss_kb(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def h2_target(url, host):
    """HTTP/2 routes on :authority, taken from the URL: name the service there and resolve it
    to the listener with `--connect-to` (a Host header would be ignored)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    return (["--connect-to", f"{host}:{port}:127.0.0.1:{port}"],
            url.replace(f"127.0.0.1:{port}", f"{host}:{port}"))


def oha_count(addr, n, host="echo", json_out=False):
    """`n` keep-alive GETs over 16 connections to `http://ADDR/` with `Host: HOST` (profiles
    count work per request, so a fixed count, not a duration); oha's JSON when `json_out`."""
    cmd = ["oha", "--no-tui", "-n", str(n), "-c", str(CONNS), "-H", f"Host: {host}",
           f"http://{addr}/"]
    if json_out:
        cmd[2:2] = ["--output-format", "json"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout


def run_oha(url, seconds, host=None, http2=False, grpc_body=None):
    if not shutil.which("oha"):
        return None, "oha not installed (bash deploy/scripts/setup.sh bench)"
    cmd = ["taskset", "-c", LOAD_CPU, "oha", "--no-tui", "--output-format", "json",
           "-q", str(RATE), "--latency-correction", "-c", str(CONNS), "-z", f"{seconds}s"]
    if host and http2:
        extra, url = h2_target(url, host)
        cmd += extra
    elif host:
        cmd += ["--host", host]
    if http2:
        cmd += ["--http2"]
    if grpc_body:
        cmd += ["-m", "POST", "-D", grpc_body]
        for h in GRPC_HEADERS:
            cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60)
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        return None, f"oha output not JSON: {out.stderr[-300:]}"
    pct = data.get("latencyPercentiles", {})
    ms = lambda k: round((pct.get(k) or 0) * 1000, 3)
    # successRate counts transport-level success only: keep the status codes to spot 5xx.
    return {"p50_ms": ms("p50"), "p90_ms": ms("p90"), "p99_ms": ms("p99"),
            "p999_ms": ms("p99.9"),
            "success": data.get("summary", {}).get("successRate", 0),
            "status": data.get("statusCodeDistribution", {})}, None


def run_wrk(url, seconds, host=None):
    # 64 connections, one thread: enough concurrency to saturate a one-core proxy while the
    # load generator keeps to its own core.
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c", "64", "-d", f"{seconds}s"]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    n = re.search(r"(\d+) requests in", out.stdout)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out.stdout)
    return (float(m.group(1)) if m else 0.0), (int(n.group(1)) if n else 0), \
        (int(bad.group(1)) if bad else 0)


def run_h2load(url, seconds, host=None, grpc_body=None):
    if not shutil.which("h2load"):
        return 0.0, 0, 0
    # 16 connections × 16 concurrent streams: 256 requests in flight saturate one proxy core.
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-c", "16", "-m", "16", "-D", str(seconds)]
    if host:
        cmd += ["-H", f":authority: {host}"]
    if grpc_body:
        cmd += ["-d", grpc_body]
        for h in GRPC_HEADERS:
            cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30)
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out.stdout)
    n = re.search(r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed, "
                  r"(\d+) errored", out.stdout)
    codes = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
    done = int(n.group(1)) if n else 0
    # Not 2xx, plus failed requests (h2load's "failed" includes the "errored" ones).
    bad = sum(int(x) for x in codes.groups()) if codes else 0
    bad += int(n.group(2)) if n else 0
    return (float(m.group(1)) if m else 0.0), done, bad
