//! The metric names the mesh exposes (the contract in docs/observability.md), and checks that PromQL uses only those.

use std::collections::BTreeSet;

/// The metric names the sidecar exposes on its admin port (the contract in
/// docs/observability.md). Rules and dashboards may use only these, the control plane's,
/// Prometheus' own `up`/`ALERTS`, and the recording rules of slo.yml.
pub const SIDECAR_METRICS: &[&str] = &[
    "mesh_requests_total",
    "mesh_request_duration_seconds_bucket",
    "mesh_tcp_connections_open",
    "mesh_tcp_bytes_total",
    "mesh_retries_total",
    "mesh_retry_budget_exhausted_total",
    "mesh_outlier_ejections_total",
    "mesh_circuit_open_total",
    "mesh_rate_limited_total",
    "mesh_authz_total",
    "mesh_errors_total",
    "mesh_tls_handshake_failures_total",
    "mesh_discovery_connected",
    "mesh_discovery_nacks_total",
    "mesh_discovery_last_ack_age_seconds",
    "mesh_cert_expiration_timestamp_seconds",
    "mesh_endpoints",
];
/// The control plane's metrics on its HTTP port.
pub const CONTROL_PLANE_METRICS: &[&str] = &[
    "mesh_cp_connected_proxies",
    "mesh_cp_push_duration_seconds_bucket",
    "mesh_cp_nacks_total",
    "mesh_cp_store_ops_total",
];

/// Mesh metric names a PromQL expression uses (`mesh_...` and recording rules `mesh:...`).
pub fn mesh_metrics_in(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bmesh[_:][a-zA-Z0-9_:]*").expect("valid regex");
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

/// Fails naming every metric in `expr` that neither binary exposes nor a rule records.
pub fn assert_known_metrics(ctx: &str, expr: &str, recorded: &BTreeSet<String>) {
    for name in mesh_metrics_in(expr) {
        let known = SIDECAR_METRICS.contains(&name.as_str())
            || CONTROL_PLANE_METRICS.contains(&name.as_str())
            || recorded.contains(&name);
        assert!(
            known,
            "{ctx}: `{name}` is not a metric of the mesh (docs/observability.md)"
        );
    }
}
