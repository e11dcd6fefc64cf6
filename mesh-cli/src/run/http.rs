//! A one-shot HTTP/1 call to the sidecar's admin listener (`GET /ready`, `POST /drain`).

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The admin listener is local and answers from memory: a call that takes longer than this is
/// a stuck process, and the caller's own loop decides whether to try again.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// hyper's own message ("connection error") names no cause: the io error under it does.
    #[error("{0}{cause}", cause = .0.source().map(|s| format!(": {s}")).unwrap_or_default())]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within {CALL_TIMEOUT:?}")]
    Timeout,
}

/// Sends one request without a body and returns the response status.
pub async fn call(addr: SocketAddr, method: Method, path: &str) -> Result<u16, CallError> {
    call_with(TcpStream::connect(addr), addr, method, path).await
}

/// Like [`call`], over the connection `connect` makes (e.g. one opened inside a namespace);
/// `addr` names the target in the Host header.
pub async fn call_with(
    connect: impl Future<Output = std::io::Result<TcpStream>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<u16, CallError> {
    let once = async {
        let tcp = connect.await.map_err(CallError::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        // The connection task ends when the response is read and the sender dropped.
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        Ok(resp.status().as_u16())
    };
    tokio::time::timeout(CALL_TIMEOUT, once)
        .await
        .map_err(|_| CallError::Timeout)?
}
