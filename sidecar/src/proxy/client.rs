//! Upstream HTTP clients: pooled keep-alive HTTP/1.1 connections and one multiplexed HTTP/2
//! connection per endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::ProxyBody;
use super::error::Cause;

/// Idle pooled connections close after 90 s, matching the cluster default idle
/// timeout and staying under common server keep-alive limits.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// HTTP/2 PING every 20 s on idle links detects a dead peer before a request does; a 10 s
/// ack timeout tolerates GC pauses and busy peers.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive windows of the multiplexed connection to a peer sidecar. One connection carries
/// every request to that peer (hundreds of concurrent streams under load), and the default
/// 64 KiB connection window makes the peer cut its responses into tiny window-sized DATA
/// frames; h2 counts those against its flood-protection budget (half the connection window)
/// and resets the connection with `ENHANCE_YOUR_CALM` ("too_many_data_frames"), failing every
/// request in flight. 8 MiB per connection and 1 MiB per stream: the window is credit, not an
/// allocation, and a proxy drains it as fast as its client reads.
const H2_CONN_WINDOW: u32 = 8 * 1024 * 1024;
const H2_STREAM_WINDOW: u32 = 1024 * 1024;

/// The connection pools. Cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct Clients {
    /// HTTP/1.1, keyed by the URI authority, which is set to the endpoint: one pool per endpoint.
    h1: Client<HttpConnector, ProxyBody>,
    /// HTTP/2: one multiplexed connection per endpoint address. A DashMap read is an
    /// uncontended shard read lock; the connection itself is shared by every request.
    h2: Arc<DashMap<SocketAddr, PooledH2>>,
    connect_timeout: Duration,
    /// mTLS to peers whose endpoint has an identity; `None` = this sidecar has no identity.
    tls: Option<crate::tls::MeshConnector>,
}

/// A pooled HTTP/2 connection and when a request last used it.
#[derive(Debug)]
struct PooledH2 {
    tx: http2::SendRequest<ProxyBody>,
    last_used: AtomicU64,
}

/// A ready HTTP/2 connection to one endpoint (a handle on the shared connection).
#[derive(Debug)]
pub struct H2Conn(http2::SendRequest<ProxyBody>);

/// A send failure: its cause and a human-readable chain.
pub type SendError = (Cause, String);

// === impl Clients ===

impl Clients {
    /// Call on the data-path runtime: the idle-connection sweeper is spawned there.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect_timeout));
        let h1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(conn);
        Self {
            h1,
            h2: sweep(Arc::default()),
            connect_timeout,
            tls: None,
        }
    }

    /// Speak mTLS to endpoints that have an identity.
    pub fn with_tls(mut self, tls: Option<crate::tls::MeshConnector>) -> Self {
        self.tls = tls;
        self
    }

    /// Whether this proxy has a workload certificate to speak mTLS with.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sends `req` to the endpoint at `addr` over HTTP/2 or HTTP/1.1. The request's own URI
    /// authority or `Host` header is what the upstream sees as the authority.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        addr: SocketAddr,
        endpoint: &Authority,
        h2: bool,
    ) -> Result<Response<Incoming>, SendError> {
        if h2 {
            let conn = self.connect_h2(addr, None).await?;
            return Self::send_h2(conn, req, endpoint).await;
        }
        self.send_h1(req, endpoint).await
    }

    /// Sends over an HTTP/2 connection from [`Self::connect_h2`].
    pub async fn send_h2(
        mut conn: H2Conn,
        mut req: Request<ProxyBody>,
        endpoint: &Authority,
    ) -> Result<Response<Incoming>, SendError> {
        let pq = path_and_query(&req);
        // :authority carries the original authority; `Host` would duplicate it.
        let authority = match req.headers_mut().remove(HOST) {
            Some(h) => Authority::try_from(h.as_bytes()).ok(),
            None => req.uri().authority().cloned(),
        }
        .unwrap_or_else(|| endpoint.clone());
        *req.uri_mut() = uri(authority, pq)?;
        *req.version_mut() = Version::HTTP_2;
        conn.0
            .send_request(req)
            .await
            .map_err(|e| (h2_cause(&e), error_chain(&e)))
    }

    /// Sends over a pooled HTTP/1.1 connection to `endpoint` (the `Host` header is kept).
    pub async fn send_h1(
        &self,
        mut req: Request<ProxyBody>,
        endpoint: &Authority,
    ) -> Result<Response<Incoming>, SendError> {
        let pq = path_and_query(&req);
        *req.uri_mut() = uri(endpoint.clone(), pq)?;
        *req.version_mut() = Version::HTTP_11;
        self.h1
            .request(req)
            .await
            .map_err(|e| (classify(&e), error_chain(&e)))
    }

    /// The live HTTP/2 connection to `addr`, connecting when there is none (or it closed).
    /// Separate from sending so a connect failure leaves the request unsent and retryable.
    pub async fn connect_h2(
        &self,
        addr: SocketAddr,
        identity: Option<&crate::state::Name>,
    ) -> Result<H2Conn, SendError> {
        if let Some(tx) = self.h2.get(&addr).map(|c| {
            c.last_used.store(now_secs(), Ordering::Relaxed);
            c.tx.clone()
        }) && !tx.is_closed()
        {
            return Ok(H2Conn(tx));
        }
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err((Cause::ConnectTimeout, format!("connect to {addr}"))),
            Ok(Err(e)) => return Err((Cause::ConnectRefused, format!("connect to {addr}: {e}"))),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let io = crate::outbound::tls::secure(
            self.tls.as_ref(),
            tcp,
            addr,
            identity,
            crate::tls::Alpn::H2,
        )
        .await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .initial_connection_window_size(H2_CONN_WINDOW)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| (Cause::UpstreamReset, error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %addr, "upstream HTTP/2 connection ended");
            }
        });
        // Concurrent first requests may each connect; the last one stays pooled and the others
        // serve their own request and close when idle.
        self.h2.insert(
            addr,
            PooledH2 {
                tx: tx.clone(),
                last_used: AtomicU64::new(now_secs()),
            },
        );
        Ok(H2Conn(tx))
    }
}

/// Seconds since a process-wide base (coarse is enough for idling out connections).
fn now_secs() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_secs()
}

/// Drops pooled HTTP/2 connections idle for `POOL_IDLE` (endpoints that left, or quiet ones)
/// every `POOL_IDLE / 3`; hyper closes a connection once its last handle is gone and its
/// streams are done. The sweeper ends with the pool.
fn sweep(pool: Arc<DashMap<SocketAddr, PooledH2>>) -> Arc<DashMap<SocketAddr, PooledH2>> {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&pool);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(POOL_IDLE / 3).await;
                let Some(pool) = weak.upgrade() else { return };
                let now = now_secs();
                pool.retain(|_, c| {
                    !c.tx.is_closed()
                        && now.saturating_sub(c.last_used.load(Ordering::Relaxed))
                            < POOL_IDLE.as_secs()
                });
            }
        });
    }
    pool
}

fn path_and_query<B>(req: &Request<B>) -> PathAndQuery {
    req.uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

fn uri(authority: Authority, pq: PathAndQuery) -> Result<Uri, SendError> {
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|e| (Cause::BadRequest, e.to_string()))
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

/// A refused stream (REFUSED_STREAM, or a graceful GOAWAY for it) provably never reached the
/// app, so it may be retried; any other HTTP/2 failure is a reset.
fn h2_cause(e: &hyper::Error) -> Cause {
    match crate::resilience::classify_client_error(e) {
        crate::resilience::Cause::RefusedStream => Cause::RefusedStream,
        _ => Cause::UpstreamReset,
    }
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
