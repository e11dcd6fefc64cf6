"""Where the CPU gap to HAProxy and nginx goes: instructions and system calls per request.

    python3 tests/bench/peers.py [REQUESTS] [--write]

For the one-sidecar path (static config, explicit outbound, Host `echo`), HAProxy and nginx, each
in front of the same `mesh-bench-echo`, with the same keep-alive load (oha, 16 connections):
- instructions per request: the proxy under `valgrind --tool=callgrind` (every process of the
  proxy, start to exit), for n/4 and n requests after the same warm-up; the difference over the
  difference in requests is the cost of a request, independent of how busy the machine is;
- system calls per request: `strace -c -f` attached to the proxy's processes over the same
  number of requests (strace slows the proxy, not the count).
Prints a markdown table; `--write` also replaces the generated block of
docs/benchmarks/peers.md. Not a test: nothing is asserted.
"""

import glob
import re
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cgself  # noqa: E402
import configs  # noqa: E402
from tools import CONNS, REL, ROOT, free_port, oha_count, wait_port, wait_ready, with_children  # noqa: E402

DOC = os.path.join(ROOT, "docs", "benchmarks", "peers.md")
BEGIN = "<!-- peers.py results: begin (generated, do not edit) -->"
END = "<!-- peers.py results: end -->"
# Requests sent before the counters start: first connections to the upstream, lazy state.
WARMUP = 200


def sidecar_cmd(tmp, echo, port):
    conf = os.path.join(tmp, "one.json")
    with open(conf, "w") as f:
        json.dump(configs.resources(echo), f)
    admin = free_port()
    cmd = [os.path.join(REL, "mesh-sidecar"), "--service", "bench-client",
           "--static-config", conf, "--outbound-addr", f"127.0.0.1:{port}",
           "--admin-addr", f"127.0.0.1:{admin}", "--inbound-addr", "127.0.0.1:0",
           "--log", "warn"]
    return cmd, (lambda p: wait_ready(admin, 120, p))


def haproxy_cmd(tmp, echo, port):
    conf = os.path.join(tmp, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(configs.haproxy_conf(port, echo))
    return ["haproxy", "-f", conf], (lambda p: wait_port(port, 120))


def nginx_cmd(tmp, echo, port):
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(configs.nginx_conf(port, echo, tmp))
    return ["nginx", "-c", conf], (lambda p: wait_port(port, 120))


PROXIES = [("mesh-sidecar", sidecar_cmd), ("haproxy", haproxy_cmd), ("nginx", nginx_cmd)]


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGINT)
        # Under valgrind, exiting includes writing the profile: allow for it.
        p.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def instructions(name, make, echo, n, tmp):
    """Instructions per request: the difference between a run serving `n` requests and one
    serving `n // 4`, over the difference in requests. Start-up, warm-up and shutdown cancel
    out, and no process needs to answer callgrind_control (an idle nginx worker asleep in
    epoll_wait never would)."""
    runs = [callgrind_total(f"{name}-{k}", make, echo, k, tmp) for k in (n // 4, n)]
    per_request = (runs[1][0] - runs[0][0]) / (n - n // 4)
    return per_request, by_crate(runs[0][1], runs[1][1], n - n // 4)


def by_crate(small, large, requests):
    """Self instructions per request by crate (Rust path prefix) or libc group: the difference
    of the two runs' profiles, so start-up and shutdown cancel out."""
    groups = {}
    for dumps, sign in ((large, 1), (small, -1)):
        for path in dumps:
            for fn, cost in cgself.self_costs(path).items():
                g = crate_of(fn)
                groups[g] = groups.get(g, 0) + sign * cost
    return {g: c / requests for g, c in groups.items()}


RUST_PATH = re.compile(r"^(?:<|&|mut |dyn |\()*([a-z_][a-z0-9_]*)::")
LIBC = {"malloc": ("malloc", "free", "_int_", "realloc", "calloc", "tcache", "arena"),
        "memcpy/memmove": ("memcpy", "memmove", "__memcpy", "__memmove", "memset", "__memset")}


def crate_of(fn):
    m = RUST_PATH.match(fn)
    if m:
        crate = m.group(1)
        return "std (core/alloc/std)" if crate in ("core", "alloc", "std") else crate
    for group, prefixes in LIBC.items():
        if fn.lstrip("_").startswith(tuple(p.lstrip("_") for p in prefixes)):
            return f"libc {group}"
    return "other (libc, vdso, unresolved)"


def callgrind_total(tag, make, echo, n, tmp):
    """Instructions of every process of the proxy, start to exit, having served
    `WARMUP + n` requests."""
    port = free_port()
    cmd, ready = make(tmp, echo, port)
    out = os.path.join(tmp, f"cg-{tag}.%p")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--trace-children=yes",
                          f"--callgrind-out-file={out}"] + cmd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        ready(p)
        oha_count(f"127.0.0.1:{port}", WARMUP)
        oha_count(f"127.0.0.1:{port}", n)
    finally:
        stop(p)
    dumps = glob.glob(os.path.join(tmp, f"cg-{tag}.*"))
    return sum(cgself.total(path) for path in dumps), dumps


def syscalls(name, make, echo, n, tmp):
    port = free_port()
    cmd, ready = make(tmp, echo, port)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    counts = {}
    try:
        ready(p)
        oha_count(f"127.0.0.1:{port}", WARMUP)
        log = os.path.join(tmp, f"strace-{name}.txt")
        args = ["strace", "-c", "-f", "-o", log]
        for pid in with_children([p.pid]):
            args += ["-p", str(pid)]
        st = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # strace attaches to every thread before the load starts
        oha_count(f"127.0.0.1:{port}", n)
        st.send_signal(signal.SIGINT)
        st.wait(timeout=30)
        with open(log) as f:
            for line in f:
                parts = line.split()
                # "% time seconds usecs/call calls [errors] syscall"
                if len(parts) >= 5 and parts[3].isdigit() and not parts[-1].startswith("-"):
                    counts[parts[-1]] = int(parts[3])
    finally:
        stop(p)
    counts.pop("total", None)
    return counts


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 3000
    for tool in ("valgrind", "strace", "oha", "haproxy", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run deploy/scripts/setup.sh bench")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        echo = free_port()
        e = subprocess.Popen([os.path.join(REL, "mesh-bench-echo"), f"127.0.0.1:{echo}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            wait_port(echo)
            for name, make in PROXIES:
                ir, crates = instructions(name, make, echo, n, tmp)
                sc = syscalls(name, make, echo, n, tmp)
                rows.append((name, ir, sc, crates.get("libc memcpy/memmove", 0)))
                if name == "mesh-sidecar":
                    sidecar_crates = crates
                print(f"{name}: {ir:,.0f} instructions/request, "
                      f"{sum(sc.values()) / n:.2f} syscalls/request", flush=True)
        finally:
            stop(e)
    table = render(rows, n) + "\n" + render_crates(sidecar_crates)
    print(table)
    if "--write" in sys.argv:
        write(table)


def render(rows, n):
    names = sorted({s for _, _, sc, _ in rows for s in sc},
                   key=lambda s: -max(sc.get(s, 0) for _, _, sc, _ in rows))[:8]
    base = rows[1][1]  # HAProxy
    base_rest = rows[1][1] - rows[1][3]
    head = "| proxy | instructions / request | vs HAProxy | of which memcpy/memmove | " + \
        "the rest vs HAProxy's | syscalls / request | " + " | ".join(names) + " |"
    sep = "|---" * (6 + len(names)) + "|"
    lines = [f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {n:,} keep-alive "
             f"requests over {CONNS} connections per proxy (after {WARMUP} warm-up requests); "
             "per-syscall columns are calls per request.", "", head, sep]
    for name, ir, sc, mem in rows:
        cells = [f"{sc.get(s, 0) / n:.2f}" for s in names]
        lines.append(f"| {name} | {ir:,.0f} | {ir / base:.2f} | {mem:,.0f} | "
                     f"{(ir - mem) / base_rest:.2f} | {sum(sc.values()) / n:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_crates(crates):
    total = sum(crates.values())
    lines = ["Where the sidecar's instructions go (self cost per request, by crate):", "",
             "| crate | instructions / request | share |", "|---|---|---|"]
    for g, c in sorted(crates.items(), key=lambda kv: -kv[1]):
        if c >= 0.005 * total:
            lines.append(f"| {g} | {c:,.0f} | {100 * c / total:.1f} % |")
    return "\n".join(lines) + "\n"


def write(table):
    with open(DOC) as f:
        text = f.read()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    with open(DOC, "w") as f:
        f.write(text[:start] + "\n\n" + table + "\n" + text[end:])


if __name__ == "__main__":
    main()
