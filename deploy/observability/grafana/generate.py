#!/usr/bin/env python3
"""Generates the mesh's Grafana dashboards in dashboards/*.json (committed, so Grafana needs no
build step). Edit the panels here and re-run `python3 deploy/observability/grafana/generate.py`;
tests/tests/deploy_observability.rs checks the JSON: panel names, metric names, PromQL syntax,
and that it is what this script generates (`generate.py OUT_DIR` writes elsewhere).

Metric names and labels are the contract in docs/observability.md. Series come from the scrape
jobs in ../prometheus/prometheus.yml, which add the target labels namespace, pod and workload.
"""
import itertools
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards")
ids = itertools.count(1)

# Filters every query shares. `service` is the destination service for outbound series.
SEL = 'namespace=~"$namespace", service=~"$service"'
# For metrics without a `service` label (connections, TLS, discovery ...).
TSEL = 'namespace=~"$namespace"'
# At least four scrape intervals whatever the zoom, so rate() never sees fewer than 2 samples.
RI = "$__rate_interval"

def errors(by, ri=RI):
    # Same error definition as rules/slo.yml: 5xx, or a gRPC status meaning the server failed.
    return ('(sum by ({by}) (rate(mesh_requests_total{{direction="outbound", {sel}, status_class="5xx"}}[{ri}])'
            ' or rate(mesh_requests_total{{direction="outbound", {sel}, status_class!="5xx", grpc_status=~"2|4|12|13|14|15"}}[{ri}]))'
            ' or sum by ({by}) (rate(mesh_requests_total{{direction="outbound", {sel}}}[{ri}])) * 0)').format(by=by, sel=SEL, ri=ri)

def total(by, ri=RI):
    return 'sum by ({by}) (rate(mesh_requests_total{{direction="outbound", {sel}}}[{ri}]))'.format(by=by, sel=SEL, ri=ri)

def quantile(q, by, direction="outbound"):
    b = "le" if not by else by + ", le"
    return ('histogram_quantile({q}, sum by ({b}) (rate(mesh_request_duration_seconds_bucket{{direction="{d}", {sel}}}[{ri}])))'
            .format(q=q, b=b, d=direction, sel=SEL, ri=RI))

def target(expr, legend="", instant=False, ref="A", fmt=None):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t["instant"] = True
        t["range"] = False
    if fmt:
        t["format"] = fmt
    return t

def panel(kind, title, desc, targets, x, y, w, h, unit=None, thresholds=None, decimals=None,
          threshold_lines=False, extra=None):
    """One panel at grid position (x, y), w x h cells (the grid is 24 cells wide)."""
    p = {
        "id": next(ids), "type": kind, "title": title, "description": desc, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []}, "options": {},
    }
    d = p["fieldConfig"]["defaults"]
    if unit:
        d["unit"] = unit
    if decimals is not None:
        d["decimals"] = decimals
    if thresholds:
        d["thresholds"] = {"mode": "absolute", "steps": thresholds}
        d["color"] = {"mode": "thresholds"}
    if threshold_lines:
        # Draw the alert thresholds on the graph, so "how close to paging" is visible.
        d["custom"] = {"thresholdsStyle": {"mode": "line"}}
        d["color"] = {"mode": "palette-classic"}
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "textMode": "auto"}
    if extra:
        p.update(extra)
    return p

def row(title, y):
    return {"id": next(ids), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}

def templating(with_service=True):
    v = [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
          "current": {}, "hide": 0, "refresh": 1}]
    v.append({"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS,
              "query": {"query": "label_values(mesh_requests_total, namespace)", "refId": "namespace"},
              "definition": "label_values(mesh_requests_total, namespace)",
              "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
              "refresh": 2, "sort": 1, "hide": 0})
    if with_service:
        v.append({"name": "service", "label": "Service", "type": "query", "datasource": DS,
                  "query": {"query": 'label_values(mesh_requests_total{namespace=~"$namespace"}, service)', "refId": "service"},
                  "definition": 'label_values(mesh_requests_total{namespace=~"$namespace"}, service)',
                  "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
                  "refresh": 2, "sort": 1, "hide": 0})
    return {"list": v}

def dashboard(uid, title, desc, panels, refresh="30s", time_from="now-6h"):
    return {
        "uid": uid, "title": title, "description": desc, "tags": ["mesh"],
        "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": refresh, "time": {"from": time_from, "to": "now"}, "timezone": "",
        "templating": templating(),
        "annotations": {"list": []},
        "links": [{"title": "Mesh dashboards", "type": "dashboards", "tags": ["mesh"], "asDropdown": True}],
        "panels": panels,
    }

# Thresholds follow the SLO (99.9 %) and the alert rules, so colours agree with alerts.
SUCCESS_STEPS = [{"color": "red", "value": None}, {"color": "orange", "value": 0.99}, {"color": "green", "value": 0.999}]
HEALTH_STEPS = [{"color": "red", "value": None}, {"color": "orange", "value": 0.9}, {"color": "green", "value": 1}]

def executive():
    succ = "1 - (" + errors("") + " / " + total("") + ")"
    budget = ("1 - ((" + errors("", "30d") + " / " + total("", "30d") + ") / 0.001)")
    p = [
        panel("stat", "Success rate", "Share of requests to the selected services that succeeded, as their callers saw it (not 5xx, no server-side gRPC error). Green at the 99.9 % objective.",
              [target(succ, "success")], 0, 0, 6, 5, unit="percentunit", thresholds=SUCCESS_STEPS, decimals=3),
        panel("stat", "p95 latency", "95th percentile of request latency as callers saw it, including the mesh's retries.",
              [target(quantile(0.95, ""), "p95")], 6, 0, 6, 5, unit="s",
              thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.5}, {"color": "red", "value": 1}]),
        panel("stat", "Requests per second", "Requests per second to the selected services, all callers.",
              [target(total(""), "rps")], 12, 0, 6, 5, unit="reqps", thresholds=[{"color": "blue", "value": None}]),
        panel("stat", "Error budget remaining (30 days)", "Share of the 30-day error budget (0.1 % of requests for a 99.9 % objective) not yet spent. Below 0 the objective is missed for the period.",
              [target(budget, "budget")], 18, 0, 6, 5, unit="percentunit",
              thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 0.25}, {"color": "green", "value": 0.5}]),
        panel("timeseries", "Success rate by service", "Success rate per destination service.",
              [target("1 - (" + errors("service") + " / " + total("service") + ")", "{{service}}")], 0, 5, 24, 8,
              unit="percentunit", thresholds=SUCCESS_STEPS, decimals=3),
        panel("timeseries", "p95 latency by service", "95th percentile latency per destination service.",
              [target(quantile(0.95, "service"), "{{service}}")], 0, 13, 12, 8, unit="s"),
        panel("timeseries", "Requests per second by service", "Request rate per destination service.",
              [target(total("service"), "{{service}}")], 12, 13, 12, 8, unit="reqps"),
    ]
    return dashboard("mesh-executive", "Mesh / Executive",
                     "Is the mesh meeting its objectives? Success rate, p95 latency and traffic per service.", p, refresh="1m", time_from="now-24h")

def oncall():
    p = [
        row("Traffic", 0),
        panel("timeseries", "Error rate", "Share of requests per destination service that failed (5xx or server-side gRPC error). The fast-burn alert fires above 1.44 % sustained over 1 h and 5 min.",
              [target(errors("service") + " / " + total("service"), "{{service}}")], 0, 1, 12, 8, unit="percentunit",
              # The slow- and fast-burn thresholds of rules/slo.yml.
              thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.006}, {"color": "red", "value": 0.0144}],
              threshold_lines=True),
        panel("timeseries", "Errors by cause", "Responses the proxies generated themselves, by x-mesh-error cause (no-route, connect-refused, timeout, circuit-open ...). Tells mesh-made failures from application ones.",
              [target('sum by (cause) (rate(mesh_errors_total{' + TSEL + '}[' + RI + ']))', "{{cause}}")], 12, 1, 12, 8, unit="reqps"),
        panel("timeseries", "p99 latency", "99th percentile latency per destination service, as callers saw it.",
              [target(quantile(0.99, "service"), "{{service}}")], 0, 9, 12, 8, unit="s"),
        panel("timeseries", "Active connections", "Open TCP connections through the sidecars, per workload.",
              [target('sum by (namespace, workload) (mesh_tcp_connections_open{' + TSEL + '})', "{{namespace}}/{{workload}}")], 12, 9, 12, 8, unit="short"),
        row("Backends and security", 17),
        panel("timeseries", "Backend health", "Share of each service's endpoints the callers consider healthy (draining endpoints excluded). The alert fires below 90 % for 5 minutes.",
              [target('(sum by (service) (mesh_endpoints{' + SEL + ', state="healthy"}) or sum by (service) (mesh_endpoints{' + SEL + '}) * 0)'
                      ' / sum by (service) (mesh_endpoints{' + SEL + ', state!="draining"})', "{{service}}")], 0, 18, 12, 8,
              unit="percentunit", thresholds=HEALTH_STEPS),
        panel("timeseries", "TLS handshake failures", "Failed mTLS handshakes per second by reason. The alert fires above 0.05/s (3 a minute) for 10 minutes.",
              [target('sum by (reason) (rate(mesh_tls_handshake_failures_total{' + TSEL + '}[' + RI + ']))', "{{reason}}")], 12, 18, 12, 8, unit="ops"),
        row("Mesh health", 26),
        panel("stat", "Control plane up", "1 when Prometheus can scrape the control plane.",
              [target('min(up{job="mesh-control-plane"})', "up")], 0, 27, 4, 5,
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        panel("stat", "Connected proxies", "Sidecars with a live discovery stream, as the control plane counts them.",
              [target('sum(mesh_cp_connected_proxies)', "proxies")], 4, 27, 4, 5, thresholds=[{"color": "blue", "value": None}]),
        panel("stat", "Disconnected proxies", "Sidecars that report no discovery stream (running on their last config).",
              [target('count(mesh_discovery_connected{' + TSEL + '} == 0) or vector(0)', "disconnected")], 8, 27, 4, 5,
              thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        panel("stat", "Earliest certificate expiry", "Time until the first workload certificate expires. Renewal happens at 7.2 h left; the alert fires under 6 h.",
              [target('min(mesh_cert_expiration_timestamp_seconds{' + TSEL + ', cert!~"root|intermediate"}) - time()', "expires in")], 12, 27, 4, 5, unit="s",
              thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 21600}, {"color": "green", "value": 25920}]),
        panel("table", "Firing mesh alerts", "Mesh alerts firing now (rules in deploy/observability/prometheus/rules).",
              [target('ALERTS{alertname=~"Mesh.*", alertstate="firing"}', "", instant=True, fmt="table")], 16, 27, 8, 5,
              extra={"transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True}}}]}),
    ]
    return dashboard("mesh-oncall", "Mesh / On-call",
                     "What is broken right now? Error rate and causes, p99, connections, backend health, TLS failures, control plane.", p, refresh="30s", time_from="now-3h")

def debug():
    be = "service, version"
    p = [
        row("Per backend", 0),
        panel("timeseries", "Requests per backend", "Request rate per destination service and version subset (a canary shift shows here).",
              [target(total(be), "{{service}} {{version}}")], 0, 1, 12, 8, unit="reqps"),
        panel("timeseries", "Responses per backend by status", "Request rate per destination service, version and status class.",
              [target('sum by (service, version, status_class) (rate(mesh_requests_total{direction="outbound", ' + SEL + '}[' + RI + ']))', "{{service}} {{version}} {{status_class}}")], 12, 1, 12, 8, unit="reqps"),
        panel("timeseries", "Latency per backend (p50, p99)", "Median and 99th percentile latency per destination service and version.",
              [target(quantile(0.5, be), "p50 {{service}} {{version}}", ref="A"),
               target(quantile(0.99, be), "p99 {{service}} {{version}}", ref="B")], 0, 9, 12, 8, unit="s"),
        panel("timeseries", "Endpoints by state", "Endpoints per destination service and state, summed over the callers that see them.",
              [target('sum by (service, state) (mesh_endpoints{' + SEL + '})', "{{service}} {{state}}")], 12, 9, 12, 8, unit="short"),
        row("Resilience", 17),
        panel("timeseries", "Outlier ejections", "Endpoints ejected by outlier detection per second, per proxy.",
              [target('sum by (namespace, pod) (rate(mesh_outlier_ejections_total{' + TSEL + '}[' + RI + ']))', "{{namespace}}/{{pod}}")], 0, 18, 8, 8, unit="ops"),
        panel("timeseries", "Retries", "Retries per second, and retries refused because the retry budget was spent.",
              [target('sum by (namespace, pod) (rate(mesh_retries_total{' + TSEL + '}[' + RI + ']))', "retries {{namespace}}/{{pod}}", ref="A"),
               target('sum by (namespace, pod) (rate(mesh_retry_budget_exhausted_total{' + TSEL + '}[' + RI + ']))', "budget exhausted {{namespace}}/{{pod}}", ref="B")], 8, 18, 8, 8, unit="ops"),
        panel("timeseries", "Circuit breaker and rate limits", "Requests refused by an open circuit breaker or by a rate limit, per second.",
              [target('sum by (namespace, pod) (rate(mesh_circuit_open_total{' + TSEL + '}[' + RI + ']))', "circuit open {{namespace}}/{{pod}}", ref="A"),
               target('sum by (namespace, pod) (rate(mesh_rate_limited_total{' + TSEL + '}[' + RI + ']))', "rate limited {{namespace}}/{{pod}}", ref="B")], 16, 18, 8, 8, unit="ops"),
        panel("timeseries", "Authorization decisions", "Inbound authorization decisions per second (allow / deny).",
              [target('sum by (decision) (rate(mesh_authz_total{' + TSEL + '}[' + RI + ']))', "{{decision}}")], 0, 26, 8, 8, unit="ops"),
        panel("timeseries", "TCP throughput", "Bytes per second through the sidecars by direction.",
              [target('sum by (direction) (rate(mesh_tcp_bytes_total{' + TSEL + '}[' + RI + ']))', "{{direction}}")], 8, 26, 8, 8, unit="Bps"),
        panel("timeseries", "Inbound latency (p99)", "99th percentile of the time the local application took, measured by its own sidecar: compare with the callers' view to find time spent in the network or the mesh.",
              [target(quantile(0.99, "service", direction="inbound"), "{{service}}")], 16, 26, 8, 8, unit="s"),
        row("Config distribution", 34),
        panel("table", "Config versions", "Per proxy: whether its discovery stream is up, how long ago it last ACKed a config version, and how many versions it rejected (NACK) in the last hour. A proxy with NACKs and an old ACK is running a stale version.",
              [target('max by (namespace, pod) (mesh_discovery_connected{' + TSEL + '})', "", instant=True, fmt="table", ref="A"),
               target('max by (namespace, pod) (mesh_discovery_last_ack_age_seconds{' + TSEL + '})', "", instant=True, fmt="table", ref="B"),
               target('sum by (namespace, pod) (increase(mesh_discovery_nacks_total{' + TSEL + '}[1h]))', "", instant=True, fmt="table", ref="C")],
              0, 35, 12, 9,
              extra={"transformations": [
                  {"id": "merge", "options": {}},
                  {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                 "renameByName": {"Value #A": "connected", "Value #B": "last ACK age (s)", "Value #C": "NACKs (1h)"}}}]}),
        panel("timeseries", "Config push latency (p50, p99)", "Control plane: time from a config change to the proxies' ACK.",
              [target('histogram_quantile(0.5, sum by (le) (rate(mesh_cp_push_duration_seconds_bucket[' + RI + '])))', "p50", ref="A"),
               target('histogram_quantile(0.99, sum by (le) (rate(mesh_cp_push_duration_seconds_bucket[' + RI + '])))', "p99", ref="B")], 12, 35, 12, 9, unit="s"),
        panel("timeseries", "Control plane NACKs and store operations", "NACKs received and store operations per second on the control plane.",
              [target('sum(rate(mesh_cp_nacks_total[' + RI + ']))', "NACKs", ref="A"),
               target('sum(rate(mesh_cp_store_ops_total[' + RI + ']))', "store ops", ref="B")], 0, 44, 12, 8, unit="ops"),
        panel("timeseries", "Discovery NACKs per proxy", "Config versions rejected per proxy.",
              [target('sum by (namespace, pod) (increase(mesh_discovery_nacks_total{' + TSEL + '}[' + RI + ']))', "{{namespace}}/{{pod}}")], 12, 44, 12, 8, unit="short"),
    ]
    return dashboard("mesh-debug", "Mesh / Debug",
                     "Why is it broken? Per-backend traffic and latency, resilience actions, authorization, and config distribution.", p, refresh="30s", time_from="now-1h")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else OUT
    os.makedirs(out, exist_ok=True)
    for name, d in [("mesh-executive", executive()), ("mesh-oncall", oncall()), ("mesh-debug", debug())]:
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(d, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
