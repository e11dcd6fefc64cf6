//! A 1 GiB upload streams through client sidecar → server sidecar → app without buffering:
//! the app receives every byte and neither sidecar's peak RSS grows with the body.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};

/// 1 GiB in 1 MiB chunks: the body is produced lazily, so the client holds one chunk.
const CHUNK: usize = 1 << 20;
const CHUNKS: u64 = 1024;
/// Peak RSS allowed per sidecar: a small multiple of an idle sidecar (~10 MiB) and 16× smaller
/// than the body, so any buffering of the body would show.
const PEAK_RSS_LIMIT_KB: u64 = 64 * 1024;

/// An app that counts the bytes of each request body and answers with the count.
async fn sink() -> (u16, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let total = Arc::new(AtomicU64::new(0));
    let t = total.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            let t = t.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let t = t.clone();
                    async move {
                        let mut body = req.into_body();
                        let mut n = 0u64;
                        while let Some(frame) = body.frame().await {
                            if let Ok(d) = frame.map(|f| f.into_data()) {
                                n += d.map_or(0, |d| d.len() as u64);
                            }
                        }
                        t.store(n, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            n.to_string(),
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (port, total)
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_through_two_sidecars_with_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (port, received) = sink().await;
    let cp_url = cp.discovery_url();
    let server = Sidecar::start(
        dir.path(),
        &SidecarOpts {
            service: "sink".into(),
            app_ports: vec![port],
            control_plane: Some(cp_url.clone()),
            extra: cp.sidecar_tls_args(),
            env: cp.join_env("sink"),
            ..Default::default()
        },
    );
    let client = Sidecar::start(
        dir.path(),
        &SidecarOpts {
            service: "uploader".into(),
            control_plane: Some(cp_url),
            extra: cp.sidecar_tls_args(),
            env: cp.join_env("uploader"),
            ..Default::default()
        },
    );
    eventually(
        "sink reachable",
        std::time::Duration::from_secs(30),
        || async {
            mesh_tests::http::get_via(client.outbound, "sink", "/", &[])
                .await
                .ok()
                .filter(|r| r.0 == 200)
        },
    )
    .await;

    let stream = tokio::net::TcpStream::connect(client.outbound)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let body = StreamBody::new(
        futures_util::stream::iter(0..CHUNKS)
            .map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let req = hyper::Request::post("/upload")
        .header("host", "sink")
        .body(body)
        .unwrap();
    // Bounded: 1 GiB on loopback takes seconds; 5 minutes only turns a stall into a failure.
    let resp = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .expect("upload finished in time");
    let expected = CHUNKS * CHUNK as u64;
    assert_eq!(resp.0, 200);
    assert_eq!(resp.1, expected.to_string());
    assert_eq!(received.load(Ordering::Relaxed), expected);

    let (c, s) = (
        peak_rss_kb(client.child.id()),
        peak_rss_kb(server.child.id()),
    );
    println!("peak RSS after a 1 GiB upload: client sidecar {c} KiB, server sidecar {s} KiB");
    assert!(c > 0 && s > 0, "could not read /proc status");
    assert!(c < PEAK_RSS_LIMIT_KB, "client sidecar peak RSS {c} KiB");
    assert!(s < PEAK_RSS_LIMIT_KB, "server sidecar peak RSS {s} KiB");
}
