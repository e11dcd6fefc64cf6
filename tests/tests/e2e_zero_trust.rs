//! Zero trust in the control plane, with the real binaries: two rogue sidecars started by
//! hand announce `api` — one with no join token (no identity), one holding a token for
//! another service account — and neither becomes an endpoint; a meshed client's requests to
//! `api` all reach the real workload.

mod mtls_support;

use mesh_proto::admin::v1::ServiceRef;
use mesh_tests::admin::admin;
use mesh_tests::http::{EchoApp, get_via};
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};
use mtls_support::{CONVERGE, IO_LIMIT, TLS, meshed, metrics_text, sample, token};

/// Requests the client sends once the mesh has converged (the figure).
const REQUESTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_sidecars_announcing_api_take_none_of_its_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let real = EchoApp::start("api-real").await;
    let rogue = EchoApp::start("rogue").await;
    let _api = meshed(&cp, dir.path(), "api", Some(real.addr.port())).await;
    let client = meshed(&cp, dir.path(), "web", None).await;

    // Rogue 1: no join token, so no certificate: an anonymous proxy claiming api.
    let _anonymous = Sidecar::start(
        dir.path(),
        &SidecarOpts {
            service: "api".into(),
            app_ports: vec![rogue.addr.port()],
            control_plane: Some(cp.tls_discovery_url()),
            extra: cp.sidecar_tls_args(),
            ..Default::default()
        },
    );
    // Rogue 2: a valid token and certificate for service account `other`, announcing api.
    let other = token(&cp, "other").await;
    let mut extra = cp.sidecar_tls_args();
    extra.extend(["--service-account".to_string(), "other".to_string()]);
    let _imposter = Sidecar::start(
        dir.path(),
        &SidecarOpts {
            service: "api".into(),
            app_ports: vec![rogue.addr.port()],
            control_plane: Some(cp.tls_discovery_url()),
            extra,
            env: vec![("MESH_JOIN_TOKEN".into(), other)],
            ..Default::default()
        },
    );

    // Both are refused, each with its reason, and counted.
    eventually("both rogue announces refused", CONVERGE, || async {
        let m = metrics_text(cp.http).await;
        let anon = sample(
            &m,
            "mesh_cp_announces_denied_total{reason=\"unauthenticated\"}",
        );
        let bound = sample(&m, "mesh_cp_announces_denied_total{reason=\"not_bound\"}");
        (anon >= 1.0 && bound >= 1.0).then_some(())
    })
    .await;

    // The real workload answers through the mesh.
    eventually("api reachable over mTLS", CONVERGE, || async {
        get_via(client.outbound, "api", "/", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;

    // api has exactly one endpoint, with the real workload's identity.
    let mut a = admin(&cp).await;
    let eps = tokio::time::timeout(
        IO_LIMIT,
        a.list_endpoints(ServiceRef {
            service: "api".into(),
        }),
    )
    .await
    .expect("answer in time")
    .expect("list endpoints")
    .into_inner()
    .endpoints;
    let identities: Vec<String> = eps
        .iter()
        .filter_map(|e| e.endpoint.as_ref().map(|e| e.identity.clone()))
        .collect();
    assert_eq!(
        identities,
        vec!["spiffe://cluster.local/ns/default/sa/api".to_string()],
        "{eps:?}"
    );

    // Every request reaches the real workload; the rogue app sees none.
    for i in 0..REQUESTS {
        let (status, who, _, _) = get_via(client.outbound, "api", &format!("/{i}"), &[])
            .await
            .expect("response");
        assert_eq!(status, 200, "request {i}");
        assert_eq!(who.as_deref(), Some("api-real"), "request {i}");
    }
    assert_eq!(rogue.hits(), 0, "a rogue got traffic");
}

/// With `--allow-anonymous-proxies` (development) an identity-less sidecar may register, but
/// it is shown as anonymous and a meshed caller never dials it in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_endpoints_are_marked_and_strict_callers_never_dial_them() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &["--discovery-tls=true", "--allow-anonymous-proxies"],
    );
    let real = EchoApp::start("api-real").await;
    let anonymous_app = EchoApp::start("anonymous").await;
    let _api = meshed(&cp, dir.path(), "api", Some(real.addr.port())).await;
    let _anonymous = Sidecar::start(
        dir.path(),
        &SidecarOpts {
            service: "api".into(),
            app_ports: vec![anonymous_app.addr.port()],
            control_plane: Some(cp.tls_discovery_url()),
            extra: cp.sidecar_tls_args(),
            ..Default::default()
        },
    );
    let client = meshed(&cp, dir.path(), "web", None).await;
    let table = eventually("both endpoints listed", CONVERGE, || async {
        let out = std::process::Command::new(mesh_tests::bin_path("mesh-cli"))
            .arg("--data-dir")
            .arg(&cp.data_dir)
            .args(["endpoints", "api"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.lines().filter(|l| l.starts_with("api ")).count() == 2).then_some(text)
    })
    .await;
    assert!(table.contains("(anonymous proxy)"), "{table}");
    assert!(
        table.contains("spiffe://cluster.local/ns/default/sa/api"),
        "{table}"
    );
    eventually("api reachable over mTLS", CONVERGE, || async {
        get_via(client.outbound, "api", "/", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;
    for i in 0..100 {
        let (status, who, _, _) = get_via(client.outbound, "api", &format!("/{i}"), &[])
            .await
            .expect("response");
        assert_eq!(status, 200, "request {i}");
        assert_eq!(who.as_deref(), Some("api-real"), "request {i}");
    }
    assert_eq!(anonymous_app.hits(), 0, "an anonymous endpoint was dialled");
}
