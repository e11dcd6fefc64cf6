//! An endpoint whose app is not listening yet (its sidecar is up and announced, as under
//! `mesh-cli run` or a pod whose app starts slowly): no request fails — the peer sidecar's
//! `503 app-unavailable` is retried on another endpoint even for POST, because the request
//! never reached an app — and once the app listens the endpoint gets traffic again within
//! seconds (one failure no longer benches an endpoint for a minute).

mod support;

use std::time::Duration;

use support::mesh::{Sidecar, app, app_on};
use support::{ControlPlane, poll_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `POST http://api/` with a small body through the client sidecar: (status, body).
async fn post(outbound: std::net::SocketAddr) -> Option<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(outbound).await.ok()?;
        let req = "POST http://api/ HTTP/1.1\r\nhost: api\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    };
    // Two local sidecars answer in milliseconds; 10 s only bounds a hang.
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_starts_late_costs_no_request_and_then_gets_traffic() {
    let cp = ControlPlane::start();
    let dir = cp.dir.path().to_path_buf();
    let v2 = app("v2").await;
    // v1's port: free now, and nothing listens on it until the second phase.
    let late_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _s1 = Sidecar::start(&dir, &cp.discovery, "api", "v1", Some(late_port)).await;
    let _s2 = Sidecar::start(&dir, &cp.discovery, "api", "v2", Some(v2.port)).await;
    let client = Sidecar::start(&dir, &cp.discovery, "web", "v1", None).await;

    // Both endpoints are announced; half the picks land on v1, whose app refuses.
    for i in 0..40 {
        let got = post(client.outbound).await;
        assert_eq!(
            got,
            Some((200, "v2".to_string())),
            "request {i}: v1's refusal must be retried on v2"
        );
    }

    // v1's app comes up: within the bound (far above the ~7 s a penalty lasts) v1 answers,
    // and no request fails on the way.
    let _v1 = app_on(late_port, "v1").await;
    let mut sent = 0;
    // ~10 requests a second, a trickle like a readiness poll, bounded by the 30 s.
    let reached = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        sent += 1;
        let n = sent;
        let outbound = client.outbound;
        async move {
            match post(outbound).await {
                Some((200, b)) if b == "v1" => Some(()),
                Some((200, b)) if b == "v2" => None,
                other => panic!("request {n} after v1 started: {other:?}"),
            }
        }
    })
    .await;
    assert!(
        reached.is_some(),
        "v1 got no request in {sent} requests after its app started"
    );
}
