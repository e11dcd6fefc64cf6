//! Metric families after known traffic on both binaries, and the control plane's own spans for admin calls and pushes.

use mesh_tests::admin::{admin, header_rule, route_acked, set_route, split_rule};
use mesh_tests::http::get_via;
use mesh_tests::{ControlPlane, Sidecar, eventually};

use super::observability_support::{Collector, TraceApp, counter, metrics_text, promtool_check};
use super::{CONVERGE, contract, delta, opts, reachable};

/// The control plane traces its own work: a `route set` through the admin API yields an
/// admin-call span (method, status) and a push span per proxy it reaches (type URL, resource
/// count, version, proxy id), exported to a real collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_traces_admin_calls_and_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let endpoint = collector.endpoint();
    let cp = ControlPlane::start(&dir.path().join("cp"), &["--otlp-endpoint", &endpoint]);
    let app = TraceApp::start().await;
    let _server = Sidecar::start(dir.path(), &opts(&cp, "api", Some(app.addr.port()), &[]));
    let client = Sidecar::start(
        dir.path(),
        &opts(
            &cp,
            "web",
            None,
            &["--id".to_owned(), "web-proxy".to_owned()],
        ),
    );
    // The client now subscribes to api's route, so a change to it is pushed to the client.
    reachable(&client).await;
    let mut a = admin(&cp).await;
    let version = set_route(
        &mut a,
        "api",
        vec![split_rule("api", "traced", &[("v1", 100)])],
    )
    .await;
    let spans = collector
        .wait_for("admin SetRoute", CONVERGE, |s| {
            s.attr("rpc.method") == Some("SetRoute")
        })
        .await;
    let call = spans
        .iter()
        .find(|s| s.attr("rpc.method") == Some("SetRoute"))
        .unwrap();
    assert_eq!(
        call.attr("rpc.service"),
        Some("mesh.admin.v1.Admin"),
        "{call:#?}"
    );
    assert_eq!(call.attr("rpc.grpc.status_code"), Some("0"), "{call:#?}");
    assert_eq!(call.resource("service.name"), Some("mesh-control-plane"));
    let spans = collector
        .wait_for("push of the route to web", CONVERGE, |s| {
            s.attr("mesh.type_url") == Some(mesh_proto::type_url::ROUTE)
                && s.attr("mesh.proxy.id") == Some("web-proxy")
        })
        .await;
    let push = spans
        .iter()
        .find(|s| {
            s.attr("mesh.type_url") == Some(mesh_proto::type_url::ROUTE)
                && s.attr("mesh.proxy.id") == Some("web-proxy")
        })
        .unwrap();
    assert_eq!(push.attr("mesh.resource_count"), Some("1"), "{push:#?}");
    assert!(push.attr("mesh.version").is_some(), "{push:#?}");
    assert!(!version.is_empty());

    // A rejected call is traced with its status code (InvalidArgument = 3).
    let bad = a
        .set_route(mesh_proto::admin::v1::SetRouteRequest {
            route: None,
            dry_run: false,
            expected_version: String::new(),
        })
        .await;
    assert!(bad.is_err());
    collector
        .wait_for("failed SetRoute", CONVERGE, |s| {
            s.attr("rpc.method") == Some("SetRoute") && s.attr("rpc.grpc.status_code") == Some("3")
        })
        .await;
}

/// Known traffic moves each metric family by what it should: requests by route and version,
/// the latency histogram, retries, errors by cause, authz decisions, TCP connections and bytes
/// (a CONNECT tunnel), protocol detection timeouts, endpoints by state, discovery state; the
/// control plane counts proxies, pushes and store operations; both pages pass promtool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_families_move_with_known_traffic() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    // A silent plaintext client on api's inbound port must reach protocol detection (a strict
    // port would refuse it before): this mesh is an anonymous, plaintext one on purpose.
    let cp = ControlPlane::start(&dir.path().join("cp"), &["--discovery-tls=false"]);
    let app = TraceApp::start().await;
    let api = Sidecar::start(dir.path(), &opts(&cp, "api", Some(app.addr.port()), &[]));
    let web = Sidecar::start(dir.path(), &opts(&cp, "web", None, &[]));
    reachable(&web).await;
    let mut a = admin(&cp).await;
    let mut rule = split_rule("api", "retrying", &[("v1", 100)]);
    rule.retry = Some(mesh_proto::types::v1::RetryPolicy {
        attempts: 3,
        retry_on: vec!["5xx".into()],
        backoff_base_ms: 1,
        backoff_max_ms: 1,
        ..Default::default()
    });
    // Requests with `x-limit: 1` share a bucket of one request per second.
    let mut limited = header_rule("api", "x-limit", "1", "v1");
    limited.rate_limit = Some(mesh_proto::types::v1::RateLimit {
        requests_per_second: 1,
        burst: 1,
        per_source: false,
    });
    let version = set_route(&mut a, "api", vec![limited, rule]).await;
    eventually("the api route is in force", CONVERGE, || {
        let mut a = a.clone();
        let version = version.clone();
        async move { route_acked(&mut a, "api", &version).await.then_some(()) }
    })
    .await;

    let (web0, api0) = (metrics_text(web.admin).await, metrics_text(api.admin).await);
    for _ in 0..10 {
        let (status, _, _, _) = get_via(web.outbound, "api", "/ok", &[]).await.unwrap();
        assert_eq!(status, 200);
    }
    let (status, _, _, _) = get_via(web.outbound, "nowhere", "/", &[]).await.unwrap();
    assert!(status >= 400, "{status}");
    let (web1, api1) = (metrics_text(web.admin).await, metrics_text(api.admin).await);

    let out = |class: &str| {
        format!(
            r#"{{direction="outbound",service="api",route="retrying",version="v1",status_class="{class}"#
        )
    };
    let requests = |class: &str| {
        format!(
            "mesh_requests_total{}\",cause=\"\",grpc_status=\"\"}}",
            out(class)
        )
    };
    assert_eq!(delta(&web0, &web1, &requests("2xx")), 10.0, "{web1}");
    let hist = format!("mesh_request_duration_seconds_count{}\"}}", out("2xx"));
    assert_eq!(delta(&web0, &web1, &hist), 10.0, "{web1}");
    assert_eq!(
        delta(&web0, &web1, r#"mesh_errors_total{cause="no-route"}"#),
        1.0,
        "{web1}"
    );
    // Every request reached api's inbound and was allowed (no policy).
    let allowed = r#"mesh_authz_total{decision="allow"}"#;
    assert_eq!(delta(&api0, &api1, allowed), 10.0, "{api1}");
    let endpoints = |state: &str| format!(r#"mesh_endpoints{{service="api",state="{state}"}}"#);
    assert_eq!(counter(&web1, &endpoints("healthy")), 1.0, "{web1}");
    assert!(web1.contains("mesh_discovery_connected 1"), "{web1}");

    // An opaque tunnel: CONNECT through web to api's app port, one HTTP exchange inside.
    let mut s = tokio::net::TcpStream::connect(web.outbound).await.unwrap();
    let port = app.addr.port();
    let connect = format!("CONNECT api:{port} HTTP/1.1\r\nHost: api:{port}\r\n\r\n");
    s.write_all(connect.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(CONVERGE, s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "tunnel closed: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rsp = Vec::new();
    tokio::time::timeout(CONVERGE, s.read_to_end(&mut rsp))
        .await
        .unwrap()
        .unwrap();
    assert!(
        rsp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&rsp)
    );
    drop(s);
    let web2 = eventually("the tunnel counted as closed", CONVERGE, || async {
        let m = metrics_text(web.admin).await;
        (delta(&web1, &m, "mesh_tcp_connections_closed_total") >= 1.0).then_some(m)
    })
    .await;
    assert!(delta(&web1, &web2, "mesh_tcp_connections_opened_total") >= 1.0);
    for dir in ["to_upstream", "to_downstream"] {
        let series = format!(r#"mesh_tcp_bytes_total{{direction="{dir}"}}"#);
        assert!(delta(&web1, &web2, &series) > 0.0, "{series}\n{web2}");
    }
    assert!(web2.contains("mesh_tcp_connection_duration_seconds_count"));

    // A client that connects to api's inbound and says nothing: detection times out.
    let silent = tokio::net::TcpStream::connect(api.inbound).await.unwrap();
    let api2 = eventually("detection timeout counted", CONVERGE, || async {
        let m = metrics_text(api.admin).await;
        (delta(&api1, &m, "mesh_protocol_detect_timeouts_total") >= 1.0).then_some(m)
    })
    .await;
    drop(silent);

    // Five requests into the one-per-second bucket: every 429 the client saw is counted, as
    // rate-limited and as an error by cause.
    let mut refused = 0.0;
    for _ in 0..5 {
        let (status, _, _, h) = get_via(web.outbound, "api", "/ok", &[("x-limit", "1")])
            .await
            .unwrap();
        if status == 429 {
            assert_eq!(h["x-mesh-error"], "rate-limited");
            refused += 1.0;
        } else {
            assert_eq!(status, 200);
        }
    }
    println!("rate limit: {refused} of 5 requests refused");
    let web_rl = metrics_text(web.admin).await;
    assert_eq!(
        delta(&web2, &web_rl, "mesh_rate_limited_total"),
        refused,
        "{web_rl}"
    );
    let by_cause = r#"mesh_errors_total{cause="rate-limited"}"#;
    assert_eq!(delta(&web2, &web_rl, by_cause), refused, "{web_rl}");
    let web2 = web_rl;

    // Two failing requests, 3 attempts each: up to 4 retries (each made or refused by the
    // budget); six 5xx in a row eject api's only endpoint (5 consecutive is the default).
    for _ in 0..2 {
        let (status, _, _, _) = get_via(web.outbound, "api", "/fail", &[]).await.unwrap();
        assert_eq!(status, 503);
    }
    let web3 = metrics_text(web.admin).await;
    assert_eq!(delta(&web2, &web3, &requests("5xx")), 2.0, "{web3}");
    let retries = delta(&web2, &web3, "mesh_retries_total");
    let refused = delta(&web2, &web3, "mesh_retry_budget_exhausted_total");
    assert!(
        retries >= 2.0 && retries + refused <= 4.0,
        "{retries} {refused}\n{web3}"
    );
    if retries == 4.0 {
        assert!(
            delta(&web2, &web3, "mesh_outlier_ejections_total") >= 1.0,
            "{web3}"
        );
        assert_eq!(counter(&web3, &endpoints("ejected")), 1.0, "{web3}");
    }

    promtool_check("web sidecar", &web3);
    promtool_check("api sidecar", &api2);
    // Every family the dashboards and alerts use is on the page. Not here: TLS handshake
    // failures (counted by the TLS layer) and certificate expiry (needs a workload
    // certificate: checked in the mTLS chain test).
    for name in contract::SIDECAR_METRICS {
        if [
            "mesh_tls_handshake_failures_total",
            "mesh_cert_expiration_timestamp_seconds",
        ]
        .contains(name)
        {
            continue;
        }
        let family = name.trim_end_matches("_bucket");
        assert!(
            web3.contains(&format!("# TYPE {family} ")),
            "{family} missing from the sidecar's /metrics:\n{web3}"
        );
    }

    let cpm = metrics_text(cp.http).await;
    assert_eq!(counter(&cpm, "mesh_cp_connected_proxies"), 2.0, "{cpm}");
    assert!(
        counter(&cpm, "mesh_cp_push_duration_seconds_count") >= 1.0,
        "{cpm}"
    );
    assert!(cpm.contains("mesh_cp_store_ops_total{"), "{cpm}");
    promtool_check("control plane", &cpm);
    for name in contract::CONTROL_PLANE_METRICS {
        let family = name.trim_end_matches("_bucket");
        assert!(
            cpm.contains(&format!("# TYPE {family} ")),
            "{family} missing from the control plane's /metrics:\n{cpm}"
        );
    }
}
