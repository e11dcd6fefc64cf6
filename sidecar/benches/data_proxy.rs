//! End-to-end throughput: requests/s from a keep-alive HTTP/1.1 client straight to the app
//! (baseline) and through client sidecar → server sidecar → app, measured in the same run.
//! Prints the numbers and the ratio; asserts nothing.

#[path = "../tests/data_support/mod.rs"]
mod data_support;

use std::time::{Duration, Instant};

use data_support::apps::http_app;
use data_support::*;
use http_body_util::Full;

/// Requests per measurement and concurrent connections: 4 × 2,500 keeps a run to a few
/// seconds on 2 shared cores while averaging out scheduler noise.
const CONNS: usize = 4;
const PER_CONN: usize = 2_500;

async fn run(addr: std::net::SocketAddr) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let mut tx = h1_conn(addr).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_CONN {
                let got = send_h1(
                    &mut tx,
                    get("svc", "/").body(Full::default()).expect("request"),
                )
                .await;
                assert_eq!(got.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    (CONNS * PER_CONN) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut mesh = Mesh::new().await;
        let (app, _) = http_app("a", Duration::ZERO).await;
        let pod = mesh.pod(app, "v1").await;
        mesh.set_endpoints("svc", &[&pod]);
        // Warm-up: connections and pools established before measuring.
        let _ = run(mesh.outbound).await;
        let direct = run(pod.app).await;
        let proxied = run(mesh.outbound).await;
        println!("direct to app           {direct:>10.0} req/s (baseline)");
        println!(
            "via both sidecars       {proxied:>10.0} req/s ({:.2}× baseline)",
            proxied / direct
        );
    });
}
