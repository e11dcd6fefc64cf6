//! Active health checks on the real data path: the balancer's checker (`balance::health`) probes each endpoint through its sidecar, takes a failing one out of the picks and brings it back once it passes again.

mod data_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use data_support::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_sidecar::state::{Cluster, HealthCheck, LbPolicy};
use tokio::net::TcpListener;

/// An app naming itself in `x-app` on every answer, whose `/healthz` answers the status the
/// test sets (traffic to other paths is always 200).
async fn app(name: &'static str) -> (SocketAddr, Arc<AtomicU16>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = Arc::new(AtomicU16::new(200));
    let status = health.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let status = status.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let code = match req.uri().path() {
                        "/healthz" => status.load(Ordering::Acquire),
                        _ => 200,
                    };
                    async move {
                        let rsp = http::Response::builder()
                            .status(code)
                            .header("x-app", name)
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .unwrap();
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, health)
}

/// Round robin over the endpoints (so a recovered one visibly gets its share again), probed
/// every 20 ms (few rounds per test) with the production thresholds: 3 failures take an
/// endpoint out, 2 successes bring it back.
fn checked(http_path: Option<&str>) -> Cluster {
    let mut c = Cluster::with_defaults("svc".into());
    c.lb = LbPolicy::RoundRobin;
    c.health_check = Some(HealthCheck {
        http_path: http_path.map(Into::into),
        expected_status: 200,
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
    });
    c
}

/// The balancer's health flags of `svc`'s endpoints, in endpoint order.
fn down(mesh: &Mesh) -> Option<Vec<bool>> {
    let snap = mesh.state.load();
    let lb = snap.lb("svc")?;
    Some(
        lb.endpoints()
            .iter()
            .map(|e| e.stats.health_down())
            .collect(),
    )
}

async fn until_down(mesh: &Mesh, want: &[bool]) {
    within(async {
        while down(mesh).as_deref() != Some(want) {
            // 10 ms between looks at a few atomics: half a probe interval.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The `x-app` of each of `n` GETs through the outbound sidecar; every one must be a 200.
async fn served_by(mesh: &Mesh, n: usize) -> Vec<String> {
    let mut tx = mesh.h1().await;
    let mut names = Vec::new();
    for _ in 0..n {
        let got = send_h1(
            &mut tx,
            get("svc", "/orders").body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.body);
        names.push(got.headers["x-app"].to_str().unwrap().to_owned());
    }
    names
}

#[tokio::test]
async fn http_check_takes_a_failing_app_out_and_brings_it_back() {
    let mut mesh = Mesh::new().await;
    let (a, a_health) = app("a").await;
    let (b, _) = app("b").await;
    let (pa, pb) = (mesh.pod(a, "v1").await, mesh.pod(b, "v1").await);
    mesh.set_cluster(checked(Some("/healthz")));
    mesh.set_endpoints("svc", &[&pa, &pb]);
    until_down(&mesh, &[false, false]).await;

    // The probe goes through `a`'s sidecar to its app, like traffic: its 503 takes `a` out.
    a_health.store(503, Ordering::Release);
    until_down(&mesh, &[true, false]).await;
    assert!(served_by(&mesh, 20).await.iter().all(|n| n == "b"));

    // Passing again: back in the picks and serving its round-robin share.
    a_health.store(200, Ordering::Release);
    until_down(&mesh, &[false, false]).await;
    let names = served_by(&mesh, 20).await;
    let from_a = names.iter().filter(|n| *n == "a").count();
    assert!(
        (8..=12).contains(&from_a),
        "{from_a} of 20 from the recovered app"
    );
}

#[tokio::test]
async fn tcp_check_takes_an_unreachable_endpoint_out() {
    let mut mesh = Mesh::new().await;
    let (a, a_health) = app("a").await;
    let pa = mesh.pod(a, "v1").await;
    // An endpoint whose sidecar is gone: bound, then closed, so connects are refused.
    let gone = Pod {
        app: a,
        inbound: std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
        version: "v1",
        trigger: None,
    };
    mesh.set_cluster(checked(None));
    mesh.set_endpoints("svc", &[&gone, &pa]);
    // A TCP check only asks whether the sidecar accepts: a failing app behind it stays in.
    a_health.store(503, Ordering::Release);
    until_down(&mesh, &[true, false]).await;
    assert!(served_by(&mesh, 10).await.iter().all(|n| n == "a"));
}
