//! Benchmark upstream `mesh-bench-echo ADDR`: answers every HTTP/1.1 or h2c request with 1 KiB.
//!
//! Deliberately minimal (one thread, no routing, no logging) so the benchmark measures the proxy
//! in front of it, not the upstream. Used only by `tests/bench/bench.py`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// 1 KiB body: the response size the benchmark scenarios are specified with.
const BODY: &[u8] = &[b'x'; 1024];

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".to_owned())
        .parse()?;
    // One thread: the echo shares the load generator's core, as every scenario pins it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            // Connection errors (client resets at the end of a run) are expected: ignore them.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
