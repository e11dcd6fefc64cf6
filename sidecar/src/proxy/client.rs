//! Upstream HTTP clients: pooled keep-alive connections per endpoint, HTTP/1.1 and HTTP/2.

use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ProxyBody;
use super::error::Cause;

/// Idle pooled connections close after 90 s, below common server keep-alive limits... and
/// matching the cluster default, so a reused connection is rarely one the server is closing.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// HTTP/2 PING every 20 s on idle sidecar links detects a dead peer before a request does;
/// a 10 s ack timeout tolerates GC pauses and busy peers.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection pools. Cheap to clone (the pools are shared). Pools are keyed by the URI
/// authority, which the proxy sets to the endpoint address: one pool per endpoint.
#[derive(Debug, Clone)]
pub struct Clients {
    h1: Client<HttpConnector, ProxyBody>,
    h2: Client<HttpConnector, ProxyBody>,
}

// === impl Clients ===

impl Clients {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect_timeout));
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE);
        let h1 = b.clone().build(conn.clone());
        b.http2_only(true)
            .http2_keep_alive_interval(H2_PING_INTERVAL)
            .http2_keep_alive_timeout(H2_PING_TIMEOUT)
            .http2_adaptive_window(true);
        let h2 = b.build(conn);
        Self { h1, h2 }
    }

    /// Sends `req` (absolute URI naming the endpoint) over HTTP/2 or HTTP/1.1.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
        h2: bool,
    ) -> Result<Response<Incoming>, (Cause, String)> {
        let client = if h2 {
            *req.version_mut() = Version::HTTP_2;
            &self.h2
        } else {
            *req.version_mut() = Version::HTTP_11;
            &self.h1
        };
        client
            .request(req)
            .await
            .map_err(|e| (classify(&e), error_chain(&e)))
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> Cause {
    if e.is_connect() {
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::TimedOut => Cause::ConnectTimeout,
                    _ => Cause::ConnectRefused,
                };
            }
            src = s.source();
        }
        return Cause::ConnectRefused;
    }
    Cause::UpstreamReset
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
