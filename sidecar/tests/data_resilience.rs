//! Resilience on the data path: connect retry to another endpoint, the `max_requests`
//! circuit breaker, and the listener connection limit.

mod data_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use data_support::apps::http_app;
use data_support::*;
use http_body_util::Full;
use mesh_sidecar::state::{Cluster, LbPolicy, Listener};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn dead_endpoint_is_skipped_by_connect_retry() {
    let mut mesh = Mesh::new().await;
    let (app, _) = http_app("live", Duration::ZERO).await;
    let live = mesh.pod(app, "v1").await;
    // An address nothing listens on any more: connects are refused.
    let dead_addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = Cluster::with_defaults("svc".into());
    c.lb = LbPolicy::RoundRobin;
    mesh.set_cluster(c);
    mesh.set_endpoints_with("svc", &[&live, &live], |i, e| {
        if i == 1 {
            e.addr = dead_addr;
        }
    });
    let mut tx = mesh.h1().await;
    for _ in 0..20 {
        let got = send_h1(&mut tx, get("svc", "/").body(Full::default()).unwrap()).await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.headers["x-app"], "live");
    }
}

#[tokio::test]
async fn max_requests_circuit_breaker_answers_circuit_open() {
    let mut mesh = Mesh::new().await;
    // 500 ms per request: the first request is still in flight when the second arrives.
    let (app, stats) = http_app("a", Duration::from_millis(500)).await;
    let pod = mesh.pod(app, "v1").await;
    let mut c = Cluster::with_defaults("svc".into());
    c.circuit_breakers.max_requests = Some(1);
    mesh.set_cluster(c);
    mesh.set_endpoints("svc", &[&pod]);

    let mut tx = mesh.h1().await;
    let first = tokio::spawn(async move {
        send_h1(&mut tx, get("svc", "/slow").body(Full::default()).unwrap()).await
    });
    within(async {
        while stats.requests.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut tx = mesh.h1().await;
    let got = send_h1(&mut tx, get("svc", "/").body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.headers["x-mesh-error"], "circuit-open");
    assert_eq!(within(first).await.unwrap().status, 200);
    // Closed again once the request finished.
    let got = send_h1(&mut tx, get("svc", "/").body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn listener_connection_limit_refuses_extra_connections() {
    let mut mesh = Mesh::new().await;
    let (app, _) = http_app("a", Duration::ZERO).await;
    let pod = mesh.pod(app, "v1").await;
    mesh.set_endpoints("svc", &[&pod]);
    mesh.state.update(|s| {
        s.listener = Some(Arc::new(Listener {
            name: "test".into(),
            app_ports: vec![],
            opaque_ports: vec![],
            server_first_ports: vec![],
            detect_timeout: None,
            tls_mode: Default::default(),
            max_connections: Some(1),
        }))
    });
    let mut held = mesh.h1().await;
    assert_eq!(
        send_h1(&mut held, get("svc", "/").body(Full::default()).unwrap())
            .await
            .status,
        200
    );
    // A second connection is closed at once.
    let mut extra = within(TcpStream::connect(mesh.outbound)).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(within(extra.read(&mut buf)).await.unwrap_or(0), 0);
    // Once the first closes, a new one is accepted.
    drop(held);
    within(async {
        loop {
            let mut tx = mesh.h1().await;
            let ok = async {
                tx.ready().await.ok()?;
                tx.send_request(get("svc", "/").body(Full::default()).unwrap())
                    .await
                    .ok()
            };
            if let Some(rsp) = ok.await {
                assert_eq!(rsp.status(), 200);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn retry_policy_retries_bodyless_requests_only() {
    use mesh_proto::types::v1 as pb;
    let mut mesh = Mesh::new().await;
    let (app, stats) = http_app("a", Duration::ZERO).await;
    let pod = mesh.pod(app, "v1").await;
    mesh.set_endpoints("svc", &[&pod]);
    mesh.set_route(&pb::Route {
        service: "svc".into(),
        rules: vec![pb::RouteRule {
            backends: vec![pb::WeightedBackend {
                service: "svc".into(),
                ..Default::default()
            }],
            retry: Some(pb::RetryPolicy {
                attempts: 3,
                retry_on: vec!["5xx".into()],
                backoff_base_ms: 1,
                ..Default::default()
            }),
            ..Default::default()
        }],
    });
    let mut tx = mesh.h1().await;
    for i in 1..=5 {
        let got = send_h1(&mut tx, get("svc", "/flaky").body(Full::default()).unwrap()).await;
        assert_eq!(got.status, 200, "{}", got.body);
        // Each request failed once and was retried once.
        assert_eq!(stats.requests.load(Ordering::SeqCst), 2 * i);
    }
    // A request with a body cannot be replayed: its 503 reaches the client.
    let req = http::Request::post("/flaky")
        .header("host", "svc")
        .body(Full::new(bytes::Bytes::from_static(b"payload")))
        .unwrap();
    assert_eq!(send_h1(&mut tx, req).await.status, 503);
}

#[tokio::test]
async fn active_health_check_takes_failing_endpoint_out() {
    use mesh_sidecar::state::HealthCheck;
    let mut mesh = Mesh::new().await;
    let (app, _) = http_app("good", Duration::ZERO).await;
    let good = mesh.pod(app, "v1").await;
    // An inbound sidecar whose app is gone: its probes get 503 app-unavailable.
    let gone = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let bad = mesh.pod(gone, "v1").await;
    let mut c = Cluster::with_defaults("svc".into());
    c.lb = LbPolicy::RoundRobin;
    // Probes every 20 ms so the test needs few rounds; thresholds as in production.
    c.health_check = Some(HealthCheck {
        http_path: Some("/healthz".into()),
        expected_status: 200,
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
    });
    mesh.set_cluster(c);
    mesh.set_endpoints("svc", &[&good, &bad]);
    within(async {
        loop {
            let down = mesh.state.load().lb("svc").map(|lb| {
                lb.endpoints()
                    .iter()
                    .map(|e| e.stats.health_down())
                    .collect::<Vec<_>>()
            });
            if down == Some(vec![false, true]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut tx = mesh.h1().await;
    for _ in 0..20 {
        let got = send_h1(&mut tx, get("svc", "/").body(Full::default()).unwrap()).await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.headers["x-app"], "good");
    }
}
