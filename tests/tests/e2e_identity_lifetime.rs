//! Identity lifetimes with the real binaries: a control plane issuing one-minute workload
//! certificates and holding a one-minute serving certificate. A workload whose join token
//! expired seconds after its first use keeps serving mTLS traffic for three minutes without a
//! failed request (renewing with its certificate), new sidecars and admin calls keep working
//! across the control plane's own renewals, and `mesh-cli identity revoke` ends it.

mod mtls_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_proto::admin::v1::ListRequest;
use mesh_tests::admin::admin;
use mesh_tests::http::{EchoApp, get_via};
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, bin_path, eventually};
use mtls_support::{CONVERGE, IO_LIMIT, admin_get, meshed, metrics_text, sample, token_for};

/// How long traffic runs: three one-minute certificate lifetimes (≥ 3 renewals each side).
const SOAK: Duration = Duration::from_secs(185);
/// Pause between requests: ~700 requests over the soak, bounded and self-stopping.
const PACE: Duration = Duration::from_millis(250);
/// How often the workload's certificate expiry is read during the soak.
const SCRAPE_EVERY: usize = 20;

fn leaf_expiry(metrics: &str) -> f64 {
    sample(
        metrics,
        "mesh_cert_expiration_timestamp_seconds{cert=\"leaf\"}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_minute_certificates_renew_for_minutes_with_no_failed_request_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[
            "--discovery-tls=true",
            "--workload-cert-ttl",
            "1m",
            "--serving-cert-ttl",
            "1m",
        ],
    );
    let app = EchoApp::start("api").await;
    // api's join token lives 3 s: gone long before its first renewal.
    let token = token_for(&cp, "default", "api", 3).await;
    let api = Sidecar::start(
        dir.path(),
        &SidecarOpts {
            service: "api".into(),
            app_ports: vec![app.addr.port()],
            control_plane: Some(cp.tls_discovery_url()),
            extra: cp.sidecar_tls_args(),
            env: vec![("MESH_JOIN_TOKEN".into(), token)],
            ..Default::default()
        },
    );
    let web = meshed(&cp, dir.path(), "web", None).await;
    eventually("api reachable over mTLS", CONVERGE, || async {
        get_via(web.outbound, "api", "/", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;

    let start = Instant::now();
    let mut expiries = BTreeSet::new();
    let mut n = 0usize;
    while start.elapsed() < SOAK {
        let (status, who, _, _) = get_via(web.outbound, "api", &format!("/{n}"), &[])
            .await
            .unwrap_or_else(|e| panic!("request {n} at {:?}: {e}", start.elapsed()));
        assert_eq!(status, 200, "request {n} at {:?}", start.elapsed());
        assert_eq!(who.as_deref(), Some("api"));
        if n.is_multiple_of(SCRAPE_EVERY) {
            expiries.insert(leaf_expiry(&metrics_text(api.admin).await) as i64);
        }
        n += 1;
        tokio::time::sleep(PACE).await;
    }
    expiries.remove(&0);
    assert!(
        expiries.len() >= 4,
        "api's certificate was renewed at least three times: {expiries:?}"
    );

    // The control plane's serving certificate was re-issued at least twice meanwhile: a new
    // sidecar still joins (discovery + identity) and the admin API still answers.
    let late = meshed(&cp, dir.path(), "late", None).await;
    eventually("a new sidecar becomes ready", CONVERGE, || async {
        let ready = admin_get(late.admin, "/ready").await;
        (ready == "ready\n").then_some(())
    })
    .await;
    let mut a = admin(&cp).await;
    tokio::time::timeout(IO_LIMIT, a.list_services(ListRequest {}))
        .await
        .expect("in time")
        .expect("admin call after the serving certificate renewed");

    // Revoking api's identity closes its discovery stream and refuses it from then on.
    let out = Command::new(bin_path("mesh-cli"))
        .arg("--data-dir")
        .arg(&cp.data_dir)
        .args(["identity", "revoke", "default/api"])
        .stdin(Stdio::null())
        .output()
        .expect("run mesh-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eventually("api's stream closed and refused", CONVERGE, || async {
        let cp_metrics = metrics_text(cp.http).await;
        let refused = sample(
            &cp_metrics,
            "mesh_cp_announces_denied_total{reason=\"revoked\"}",
        );
        let connected = sample(&metrics_text(api.admin).await, "mesh_discovery_connected");
        (refused >= 1.0 && connected == 0.0).then_some(())
    })
    .await;
}
