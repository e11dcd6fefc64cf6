"""Output of the data-path benchmark: ratios to the baselines, machine info, the JSON file, and
the generated results section of docs/benchmarks/data-path.md (between two markers, so the
hand-written analysis around it stays)."""

import json
import os
import platform
import re
import subprocess
import time

from tools import ROOT

BEGIN = "<!-- bench.py results: begin (generated, do not edit) -->"
END = "<!-- bench.py results: end -->"

# Columns of the main table: (JSON key, heading).
COLS = [("scenario", "scenario"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
        ("p999_ms", "p99.9 ms"), ("p50_ms_added", "p50 added"), ("p99_ms_added", "p99 added"),
        ("max_rps", "max rps"), ("rps_vs_direct", "rps / direct"),
        ("rps_vs_haproxy", "rps / HAProxy"), ("cpu_us_per_req", "CPU µs/req"),
        ("cpu_vs_haproxy", "CPU / HAProxy"), ("rss_idle_kb", "RSS idle KiB"),
        ("rss_load_kb", "RSS @1k rps KiB"), ("rss_peak_kb", "RSS peak KiB"),
        ("errors", "non-2xx")]


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def baseline_of(name):
    """The direct scenario of the same protocol: latency added is measured against it."""
    if name.endswith("grpc"):
        return "direct-grpc"
    if name.endswith("h2"):
        return "direct-h2"
    return "direct"


def add_ratios(results):
    by = {r["scenario"]: r for r in results}
    hp = by.get("haproxy", {})
    for r in results:
        base = by.get(baseline_of(r["scenario"]), {})
        for k in ("p50_ms", "p99_ms"):
            if k in r and k in base:
                r[f"{k}_added"] = round(r[k] - base[k], 3)
                r[f"{k}_vs_direct"] = ratio(r[k], base[k])
        r["rps_vs_haproxy"] = ratio(r.get("max_rps"), hp.get("max_rps"))
        r["rps_vs_direct"] = ratio(r.get("max_rps"), base.get("max_rps"))
        r["cpu_vs_haproxy"] = ratio(r.get("cpu_us_per_req"), hp.get("cpu_us_per_req"))


def machine_info(args, load_before):
    m = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
         "kernel": platform.release(), "quick": args.quick,
         "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
         # Shared machine: the load average says how much the figures are disturbed.
         "loadavg_1_5_15_start": [round(x, 2) for x in load_before],
         "loadavg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
         "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                  capture_output=True, text=True).stdout.strip()}
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"model name\s*:\s*(.*)", f.read())
            m["cpu"] = found.group(1) if found else m["cpu"]
    except OSError:
        pass
    return m


def cell(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown(doc):
    m, results, extra = doc["machine"], doc["results"], doc["sidecar"]
    lines = [BEGIN, "",
             f"Run: {m['date_utc']} UTC, commit `{m['commit']}`, "
             f"{'`--quick`' if m['quick'] else 'full'} run; {m['cpu']}, {m['cores']} cores, "
             f"kernel {m['kernel']}; load average (1/5/15 min) "
             f"{' / '.join(map(str, m['loadavg_1_5_15_start']))} at the start, "
             f"{' / '.join(map(str, m['loadavg_1_5_15_end']))} at the end.", "",
             "Latency added and rps / direct: against the direct run of the same protocol "
             "(`direct`, `direct-h2`, `direct-grpc`); CPU and rps against HAProxy.", "",
             "| " + " | ".join(h for _, h in COLS) + " |",
             "|" + "---|" * len(COLS)]
    for r in results:
        lines.append("| " + " | ".join(cell(r.get(k)) for k, _ in COLS) + " |")
    lines += ["", "| sidecar figure | value |", "|---|---|"]
    for k, v in extra.items():
        lines.append(f"| `{k}` | {cell(v)} |")
    notes = [f"- {r['scenario']}: latency not measured: {r['latency_not_measured']}"
             for r in results if "latency_not_measured" in r]
    if notes:
        lines += [""] + notes
    lines += ["", END]
    return "\n".join(lines)


def write(results, extra, args, load_before):
    add_ratios(results)
    doc = {"machine": machine_info(args, load_before), "results": results, "sidecar": extra}
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
    section = markdown(doc)
    print(section)
    if args.md:
        try:
            with open(args.md) as f:
                text = f.read()
        except OSError:
            text = "# Data-path benchmark\n\n## Results\n\n"
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + section + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        with open(args.md, "w") as f:
            f.write(text)
        print(f"wrote {args.json} and the results section of {args.md}")
