//! Serving one downstream HTTP connection (HTTP/1.1 with upgrades, or HTTP/2) with drain.

use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::BodyError;
use super::drain::Drain;

/// Serves HTTP on `io` until the client closes or, after drain begins, in-flight requests
/// finish (HTTP/1 closes after the current response; HTTP/2 sends GOAWAY).
///
/// The response body is generic so a layer can wrap [`super::ProxyBody`] (the observe layer ends its
/// span when the body ends) without boxing.
pub async fn serve_http<I, S, B>(io: I, h2: bool, max_header_bytes: usize, svc: S, mut drain: Drain)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes, Error = BodyError> + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    let res = if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // Header list bound for HTTP/2 mirrors the HTTP/1 head limit.
        b.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
        let conn = b.serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            () = drain.signaled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        // hyper needs a buffer at least 8 KiB larger than the head limit to hold a head that
        // is just under it plus the start of the body.
        b.timer(TokioTimer::new())
            .max_buf_size((max_header_bytes + 8192).max(8192))
            .max_header_size(max_header_bytes);
        let conn = b.serve_connection(io, svc).with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            () = drain.signaled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "downstream connection ended with error");
    }
}
