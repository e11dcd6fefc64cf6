//! Bad input at the outbound listener: smuggling, malformed and oversized requests get the
//! proxy's own 4xx, and the proxy keeps serving.

mod data_support;

use std::time::Duration;

use data_support::apps::http_app;
use data_support::*;
use http_body_util::Full;
use mesh_sidecar::outbound::OutboundConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn mesh_with_limit(max_header_bytes: usize) -> Mesh {
    let mut mesh = Mesh::with_config(OutboundConfig {
        max_header_bytes,
        ..Default::default()
    })
    .await;
    let (app, _) = http_app("a", Duration::ZERO).await;
    let pod = mesh.pod(app, "v1").await;
    mesh.set_endpoints("svc", &[&pod]);
    mesh
}

/// Sends raw bytes and reads the whole answer until the proxy closes.
async fn raw(mesh: &Mesh, bytes: &[u8]) -> String {
    let mut s = within(TcpStream::connect(mesh.outbound)).await.unwrap();
    // The proxy may answer and close before reading everything; a write error is fine.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = within(s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_serving(mesh: &Mesh) {
    let mut tx = mesh.h1().await;
    let got = send_h1(&mut tx, get("svc", "/ok").body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 200);
}

fn assert_mesh_error(rsp: &str, status: u16, cause: &str) {
    assert!(rsp.starts_with(&format!("HTTP/1.1 {status}")), "{rsp}");
    assert!(rsp.contains(&format!("x-mesh-error: {cause}")), "{rsp}");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_rejected() {
    let mesh = mesh_with_limit(64 * 1024).await;
    let rsp = raw(
        &mesh,
        b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n",
    )
    .await;
    assert_mesh_error(&rsp, 400, "bad-request");
    assert!(!rsp.contains("smuggled"), "{rsp}");
    still_serving(&mesh).await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_rejected() {
    let mesh = mesh_with_limit(64 * 1024).await;
    let rsp = raw(
        &mesh,
        b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await;
    assert_mesh_error(&rsp, 400, "bad-request");
    still_serving(&mesh).await;
}

#[tokio::test]
async fn malformed_headers_are_rejected() {
    let mesh = mesh_with_limit(64 * 1024).await;
    let rsp = raw(
        &mesh,
        b"GET / HTTP/1.1\r\nHost: svc\r\nno colon here\r\n\r\n",
    )
    .await;
    assert_mesh_error(&rsp, 400, "bad-request");
    let rsp = raw(
        &mesh,
        b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip\r\n\r\n",
    )
    .await;
    assert_mesh_error(&rsp, 400, "bad-request");
    still_serving(&mesh).await;
}

#[tokio::test]
async fn oversized_headers_get_431_at_the_configured_limit() {
    let mesh = mesh_with_limit(4 * 1024).await;
    let big = "x".repeat(8 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: svc\r\nx-big: {big}\r\n\r\n");
    let rsp = raw(&mesh, req.as_bytes()).await;
    assert_mesh_error(&rsp, 431, "headers-too-large");
    // Just under the limit passes.
    let mut tx = mesh.h1().await;
    let ok = get("svc", "/")
        .header("x-big", "y".repeat(3 * 1024))
        .body(Full::default())
        .unwrap();
    assert_eq!(send_h1(&mut tx, ok).await.status, 200);
}

#[tokio::test]
async fn garbage_is_dropped_and_proxy_keeps_serving() {
    let mesh = mesh_with_limit(64 * 1024).await;
    // Binary junk with no original destination: nothing to forward to; the connection closes.
    let rsp = raw(&mesh, b"\x00\xff\x13junk\r\n\r\n").await;
    assert!(rsp.is_empty(), "{rsp}");
    still_serving(&mesh).await;
}

#[tokio::test]
async fn an_invalid_host_is_refused_and_never_subscribed() {
    let mesh = mesh_with_limit(64 * 1024).await;
    let long = "x".repeat(300);
    for host in [".", "a..b", long.as_str()] {
        let rsp = raw(
            &mesh,
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_mesh_error(&rsp, 400, "bad-request");
    }
    // Nothing of it reached the discovery client's subscriptions.
    let wanted = mesh.state.wanted().borrow().clone();
    assert!(
        wanted
            .iter()
            .all(|n| n.len() <= 253 && !n.contains("..") && &**n != "."),
        "{wanted:?}"
    );
    still_serving(&mesh).await;
}
