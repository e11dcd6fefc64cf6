//! Minimal HTTP/1.1 GET against a sidecar's admin port (config dump, metrics).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::client::root_cause;
use crate::error::{CliError, Result};

/// The admin port is local and answers from memory; 5 s only bounds a wedged proxy.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `path` from the proxy admin at `addr` and returns the body; non-2xx is an error.
pub async fn get(addr: &str, path: &str) -> Result<String> {
    tokio::time::timeout(ADMIN_TIMEOUT, fetch(addr, path))
        .await
        .map_err(|_| {
            CliError::server(format!(
                "the proxy admin at {addr} did not answer {path} within {}s",
                ADMIN_TIMEOUT.as_secs()
            ))
        })?
}

async fn fetch(addr: &str, path: &str) -> Result<String> {
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let unreachable = |e: &(dyn std::error::Error + 'static)| {
        CliError::server(format!(
            "cannot reach the proxy admin at {addr}: {} (is the sidecar running? its admin port is 15000 by default)",
            root_cause(e)
        ))
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .map_err(|e| CliError::usage(format!("bad proxy address {addr:?}: {e}")))?;
    let resp = send.send_request(req).await.map_err(|e| unreachable(&e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(CliError::server(format!(
            "the proxy admin at {addr} answered {path} with {status}: {}",
            text.trim()
        )));
    }
    Ok(text)
}
