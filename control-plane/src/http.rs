//! The HTTP endpoint: `/metrics` (Prometheus text) and `/ready`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::core::Core;

/// A scraper sends its request head at once; 10 s tolerates a loaded host and frees the
/// connection of a client that trickles its headers (slowloris) or sends none.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Open connections at most: a handful of scrapers and probes need a few; past this, new
/// connections are closed at once instead of taking memory and file descriptors.
const MAX_CONNECTIONS: usize = 256;

pub async fn serve(listener: TcpListener, core: Arc<Core>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "metrics port connection limit reached"
            );
            continue;
        };
        let core = core.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let core = core.clone();
                async move { Ok::<_, Infallible>(respond(&core, &req)) }
            });
            // HTTP/1.1 only: scrapers and probes speak it, and a protocol sniff would be one
            // more place for a silent client to wait without a deadline.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(core: &Core, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            core.metrics.encode(),
        ),
        // The store is loaded and every listener bound before this server starts, so being
        // able to answer at all means ready.
        "/ready" => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}
