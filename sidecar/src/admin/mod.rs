//! Admin HTTP server: /ready /live /metrics /config_dump /clusters /drain /logging.
//!
//! Read-only pages answer anyone who can reach the listener (loopback by default);
//! state-changing ones (`POST /drain`, `POST /logging`) only answer loopback peers, whatever
//! address the listener is bound to.

mod certs;
mod dump;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::health::Health;
use crate::identity::CertStore;
use crate::state::StateHandle;
use crate::telemetry::{LogControl, Metrics};
use crate::xds::Discovery;

/// A slow admin client cannot hold a connection's resources forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// OpenMetrics text, what prometheus-client encodes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin pages read and change.
#[derive(Debug, Clone)]
pub struct Admin {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub discovery: Discovery,
    pub state: StateHandle,
    pub log: LogControl,
    /// The workload certificate store, with a join token (shown in `/config_dump`).
    pub identity: Option<Arc<CertStore>>,
}

type Body = Full<Bytes>;

// === impl Admin ===

impl Admin {
    /// Serves admin connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (io, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req, peer)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(io), svc);
                if let Err(e) = conn.await {
                    debug!(error = %e, %peer, "admin connection ended");
                }
            });
        }
    }

    /// Routes one request.
    pub fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path();
        let method = req.method();
        match (method, path) {
            (&Method::GET, "/ready") => {
                if self.health.is_ready() {
                    text(StatusCode::OK, "ready\n")
                } else if self.health.is_draining() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else if !self.health.config_applied() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "no config applied yet\n")
                } else {
                    let waiting = self.health.closed_gates().join(", ");
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("waiting for: {waiting}\n"),
                    )
                }
            }
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET, "/metrics") => {
                respond(StatusCode::OK, METRICS_CONTENT_TYPE, self.metrics.encode())
            }
            (&Method::GET, "/config_dump") => json(dump::config_dump(
                &self.discovery,
                &self.state,
                self.identity.as_deref(),
            )),
            (&Method::GET, "/clusters") => json(dump::clusters(&self.state)),
            (&Method::GET, "/logging") => text(StatusCode::OK, format!("{}\n", self.log.current())),
            (&Method::POST, "/drain" | "/logging") if !is_loopback(peer) => text(
                StatusCode::FORBIDDEN,
                "state-changing admin endpoints answer loopback clients only\n",
            ),
            (&Method::POST, "/drain") => {
                if self.health.drain() {
                    info!(%peer, "drain requested through the admin API");
                }
                text(StatusCode::OK, "draining\n")
            }
            (&Method::POST, "/logging") => self.set_logging(req.uri().query()),
            (_, "/ready" | "/live" | "/metrics" | "/config_dump" | "/clusters") => {
                allow(StatusCode::METHOD_NOT_ALLOWED, "GET")
            }
            (_, "/drain") => allow(StatusCode::METHOD_NOT_ALLOWED, "POST"),
            (_, "/logging") => allow(StatusCode::METHOD_NOT_ALLOWED, "GET, POST"),
            _ => text(
                StatusCode::NOT_FOUND,
                "try /ready /live /metrics /config_dump /clusters /drain /logging\n",
            ),
        }
    }

    fn set_logging(&self, query: Option<&str>) -> Response<Body> {
        let level = query.and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "level")
                .map(|(_, v)| percent_decode(v))
        });
        let Some(level) = level else {
            return text(StatusCode::BAD_REQUEST, "expected ?level=<filter>\n");
        };
        match self.log.set(&level) {
            Ok(()) => text(StatusCode::OK, format!("{level}\n")),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        }
    }
}

fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// Decodes `%XX` escapes and `+` (filters contain `,` `=` `[` that clients may escape).
/// Malformed escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json(body: String) -> Response<Body> {
    respond(StatusCode::OK, "application/json", body)
}

fn allow(status: StatusCode, methods: &'static str) -> Response<Body> {
    let mut resp = text(status, "method not allowed\n");
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(methods));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("debug%2Ch2%3Dinfo"), "debug,h2=info");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }

    #[test]
    fn loopback_includes_mapped_v4() {
        assert!(is_loopback("127.0.0.1:1".parse().unwrap()));
        assert!(is_loopback("[::1]:1".parse().unwrap()));
        assert!(is_loopback("[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1:1".parse().unwrap()));
    }
}
