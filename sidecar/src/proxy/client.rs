//! Upstream HTTP clients: pooled keep-alive HTTP/1.1 connections and one multiplexed HTTP/2
//! connection per endpoint, both connected separately from sending so that a failed connect
//! leaves the request unsent and retryable, each dialled and kept per its service's [`Dial`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{CONNECTION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::ProxyBody;
use super::error::Cause;
use super::pool::{FastMap, H1Pool, IDLE_TICK, Slot, idle_ticks};

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
    pools: Arc<Pools>,
    /// For callers that name no service (passthrough, the inbound side's local app).
    dial: Dial,
    /// mTLS to peers whose endpoint has an identity; `None` = this sidecar has no identity.
    tls: Option<crate::tls::MeshConnector>,
}

#[derive(Debug, Default)]
struct Pools {
    /// HTTP/1.1: parked keep-alive connections per endpoint address (`super::pool`).
    h1: H1Pool,
    /// HTTP/2: one multiplexed connection per endpoint address. A DashMap read is an
    /// uncontended shard read lock; the connection itself is shared by every request.
    h2: FastMap<SocketAddr, PooledH2>,
    /// Sweeps so far: the clock both pools age idle connections by.
    tick: AtomicU64,
}

/// How connections to one service are dialled and kept: its Cluster's connect and idle
/// timeouts, or the process defaults. Plain data, built per request without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    /// Bound on the TCP connect to an endpoint.
    pub connect_timeout: Duration,
    /// Sweeps a pooled connection may stay unused before it is closed.
    idle_ticks: u64,
}

/// A pooled HTTP/2 connection, the sweep count when a request last used it, and how many
/// unused sweeps close it (the idle limit of the service that dialled it).
#[derive(Debug)]
struct PooledH2 {
    tx: http2::SendRequest<ProxyBody>,
    last_used: AtomicU64,
    idle_ticks: u64,
    /// The peer identity the connection verified (`None`: dialled in plaintext); it serves
    /// only requests that expect exactly that.
    identity: Option<crate::state::Name>,
}

/// A ready HTTP/2 connection to one endpoint (a handle on the shared connection).
#[derive(Debug)]
pub struct H2Conn(http2::SendRequest<ProxyBody>);

/// An HTTP/1.1 connection to one endpoint, ready for one request: parked again in its slot
/// once the response head arrives, unless the connection cannot be reused.
#[derive(Debug)]
pub struct H1Conn {
    tx: http1::SendRequest<ProxyBody>,
    slot: Arc<Slot>,
    addr: SocketAddr,
    /// Taken from the pool (it may have been closed by the server since).
    reused: bool,
    /// How it is parked again (its idle limit) and re-dialled.
    dial: Dial,
}

/// A send failure: its cause and a human-readable chain.
pub type SendError = (Cause, String);

// === impl Dial ===

impl Dial {
    /// Connects bounded by `connect_timeout`; pooled connections close after `idle` unused
    /// (kept to whole sweeps of [`IDLE_TICK`], never sooner).
    pub fn new(connect_timeout: Duration, idle: Duration) -> Self {
        Self {
            connect_timeout,
            idle_ticks: idle_ticks(idle),
        }
    }
}

// === impl Clients ===

impl Clients {
    /// Call on the data-path runtime: the idle-connection sweeper is spawned there. Requests
    /// that name no [`Dial`] connect within `connect_timeout` and keep connections for the
    /// default idle timeout.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            pools: sweep(Arc::default()),
            dial: Dial::new(connect_timeout, crate::state::Cluster::DEFAULT_IDLE_TIMEOUT),
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
    /// authority or `Host` header is what the upstream sees as the authority. `identity` is
    /// the peer's (bound) identity: with one, HTTP/2 goes over mTLS verifying it.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        addr: SocketAddr,
        endpoint: &Authority,
        h2: bool,
        identity: Option<&crate::state::Name>,
    ) -> Result<Response<Incoming>, SendError> {
        if h2 {
            let conn = self.connect_h2(addr, identity).await?;
            return Self::send_h2(conn, req, endpoint).await;
        }
        let conn = self.connect_h1(addr).await?;
        self.send_h1(conn, req, endpoint)
            .await
            .map_err(|(e, _unsent)| e)
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

    /// A pooled HTTP/1.1 connection to `addr` ready for a request, connecting when none is,
    /// with the default [`Dial`]. Separate from sending so a connect failure leaves the
    /// request unsent and retryable.
    pub async fn connect_h1(&self, addr: SocketAddr) -> Result<H1Conn, SendError> {
        match self.pooled_h1(addr, self.dial) {
            Some(conn) => Ok(conn),
            None => self.dial_h1(addr, self.dial).await,
        }
    }

    /// A parked HTTP/1.1 connection to `addr` ready for a request, if there is one; from now
    /// on it is kept (and, should the server have closed it, re-dialled) per `dial`.
    pub fn pooled_h1(&self, addr: SocketAddr, dial: Dial) -> Option<H1Conn> {
        let slot = self.pools.h1.slot(addr);
        let tx = slot.checkout()?;
        Some(H1Conn {
            tx,
            slot,
            addr,
            reused: true,
            dial,
        })
    }

    /// A new HTTP/1.1 connection to `addr`, connected within `dial.connect_timeout` and
    /// pooled after its exchange for `dial`'s idle limit.
    pub async fn dial_h1(&self, addr: SocketAddr, dial: Dial) -> Result<H1Conn, SendError> {
        let tx = Box::pin(self.handshake_h1(addr, dial.connect_timeout)).await?;
        Ok(H1Conn {
            tx,
            slot: self.pools.h1.slot(addr),
            addr,
            reused: false,
            dial,
        })
    }

    /// Sends over a connection from [`Self::connect_h1`] in origin form (the `Host` header is
    /// kept; `endpoint` when there is none). A pooled connection the server closed before
    /// the request was written is replaced by a fresh one, once. On failure the request comes
    /// back when it provably was not sent.
    pub async fn send_h1(
        &self,
        conn: H1Conn,
        mut req: Request<ProxyBody>,
        endpoint: &Authority,
    ) -> Result<Response<Incoming>, (SendError, Option<Request<ProxyBody>>)> {
        let connect = req.method() == Method::CONNECT;
        let target = if connect {
            Uri::from(req.uri().authority().unwrap_or(endpoint).clone())
        } else {
            Uri::from(path_and_query(&req))
        };
        *req.uri_mut() = target;
        *req.version_mut() = Version::HTTP_11;
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, host_header(endpoint));
        }
        let H1Conn {
            mut tx,
            slot,
            addr,
            mut reused,
            dial,
        } = conn;
        loop {
            let mut err = match tx.try_send_request(req).await {
                Ok(rsp) => {
                    if !connect && keeps_alive(&rsp) {
                        let now = self.pools.tick.load(Ordering::Relaxed);
                        slot.park(tx, now, dial.idle_ticks);
                    }
                    return Ok(rsp);
                }
                Err(e) => e,
            };
            let unsent = err.take_message();
            match unsent {
                Some(again) if reused => {
                    // Closed as it was checked out (the server's keep-alive ended): the
                    // request never left, so a fresh connection takes it.
                    req = again;
                    reused = false;
                    tx = match Box::pin(self.handshake_h1(addr, dial.connect_timeout)).await {
                        Ok(tx) => tx,
                        Err(e) => return Err((e, Some(req))),
                    };
                }
                unsent => {
                    let e = err.into_error();
                    return Err(((Cause::UpstreamReset, error_chain(&e)), unsent));
                }
            }
        }
    }

    /// A new HTTP/1.1 connection to `addr` (plaintext: HTTP/1.1 goes to unmeshed endpoints
    /// and the local app only), its connection task spawned with upgrade support so a 101 or
    /// a CONNECT hands its IO to `hyper::upgrade::on`. Boxed by callers, as
    /// [`Self::handshake_h2`].
    /// A new HTTP/1.1 connection over mTLS (ALPN `http/1.1`) to a meshed peer presenting
    /// `identity`, for a request that upgrades it (WebSocket): never pooled, it becomes the
    /// tunnel. Separate from sending so a failed connect leaves the request retryable.
    pub async fn dial_h1_mtls(
        &self,
        addr: SocketAddr,
        identity: &crate::state::Name,
        connect_timeout: Duration,
    ) -> Result<http1::SendRequest<ProxyBody>, SendError> {
        let tcp = tcp_connect(addr, connect_timeout).await?;
        let io = crate::outbound::tls::secure(
            self.tls.as_ref(),
            tcp,
            addr,
            Some(identity),
            crate::tls::Alpn::Http1,
        )
        .await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| (Cause::UpstreamReset, error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, %addr, "upstream mTLS HTTP/1.1 connection ended");
            }
        });
        Ok(tx)
    }

    /// Sends an upgrading request on a connection from [`Self::dial_h1_mtls`].
    pub async fn send_h1_upgrade(
        mut tx: http1::SendRequest<ProxyBody>,
        mut req: Request<ProxyBody>,
        endpoint: &Authority,
    ) -> Result<Response<Incoming>, SendError> {
        *req.uri_mut() = Uri::from(path_and_query(&req));
        *req.version_mut() = Version::HTTP_11;
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, host_header(endpoint));
        }
        tx.send_request(req)
            .await
            .map_err(|e| (Cause::UpstreamReset, error_chain(&e)))
    }

    async fn handshake_h1(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<http1::SendRequest<ProxyBody>, SendError> {
        let tcp = tcp_connect(addr, connect_timeout).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| (Cause::UpstreamReset, error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, %addr, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(tx)
    }

    /// The live HTTP/2 connection to `addr`, connecting when there is none (or it closed),
    /// with the default [`Dial`]. Separate from sending so a connect failure leaves the
    /// request unsent and retryable.
    pub async fn connect_h2(
        &self,
        addr: SocketAddr,
        identity: Option<&crate::state::Name>,
    ) -> Result<H2Conn, SendError> {
        match self.pooled_h2(addr, identity) {
            Some(conn) => Ok(conn),
            None => self.dial_h2(addr, identity, self.dial).await,
        }
    }

    /// The live pooled HTTP/2 connection to `addr`, if there is one that was opened for the
    /// same expected peer identity: a connection dialled in plaintext never carries traffic
    /// that expects a verified peer, nor one verified as another identity, and the reverse.
    pub fn pooled_h2(
        &self,
        addr: SocketAddr,
        identity: Option<&crate::state::Name>,
    ) -> Option<H2Conn> {
        let tx = self.pools.h2.get(&addr).and_then(|c| {
            (c.identity.as_deref() == identity.map(|i| &**i)).then(|| {
                c.last_used
                    .store(self.pools.tick.load(Ordering::Relaxed), Ordering::Relaxed);
                c.tx.clone()
            })
        })?;
        (!tx.is_closed()).then_some(H2Conn(tx))
    }

    /// A new HTTP/2 connection to `addr` (mTLS when the endpoint has an identity), connected
    /// within `dial.connect_timeout` and pooled for `dial`'s idle limit.
    pub async fn dial_h2(
        &self,
        addr: SocketAddr,
        identity: Option<&crate::state::Name>,
        dial: Dial,
    ) -> Result<H2Conn, SendError> {
        Box::pin(self.handshake_h2(addr, identity, dial)).await
    }

    /// The body of [`Self::dial_h2`], boxed there: connecting (TCP, TLS, HTTP/2 handshake) is
    /// a large state machine that only a new connection needs, and inline it would grow every
    /// request's future, which is moved (copied) several times per request.
    async fn handshake_h2(
        &self,
        addr: SocketAddr,
        identity: Option<&crate::state::Name>,
        dial: Dial,
    ) -> Result<H2Conn, SendError> {
        let tcp = tcp_connect(addr, dial.connect_timeout).await?;
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
        self.pools.h2.insert(
            addr,
            PooledH2 {
                tx: tx.clone(),
                last_used: AtomicU64::new(self.pools.tick.load(Ordering::Relaxed)),
                idle_ticks: dial.idle_ticks,
                identity: identity.cloned(),
            },
        );
        Ok(H2Conn(tx))
    }

    /// HTTP/1.1 connections parked across all endpoints (tests, diagnostics).
    pub fn parked_h1(&self) -> usize {
        self.pools.h1.parked()
    }
}

/// A TCP connection to `addr` (no Nagle: requests and responses are written whole), bounded
/// by `timeout`.
async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, SendError> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err((Cause::ConnectTimeout, format!("connect to {addr}"))),
        Ok(Err(e)) => return Err((Cause::ConnectRefused, format!("connect to {addr}: {e}"))),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Every `IDLE_TICK`: advances the pools' sweep count, closes HTTP/1.1 connections parked
/// past their idle limit and drops HTTP/2 connections unused as long (endpoints that left, or
/// quiet ones; hyper closes a connection once its last handle is gone and its streams are
/// done). The sweeper ends with the pools.
fn sweep(pools: Arc<Pools>) -> Arc<Pools> {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&pools);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TICK).await;
                let Some(pools) = weak.upgrade() else { return };
                let now = pools.tick.fetch_add(1, Ordering::Relaxed) + 1;
                pools.h1.sweep(now);
                pools.h2.retain(|_, c| {
                    !c.tx.is_closed()
                        && now.saturating_sub(c.last_used.load(Ordering::Relaxed)) < c.idle_ticks
                });
            }
        });
    }
    pools
}

/// Whether the connection that carried `rsp` may take another request: not switched to
/// another protocol, HTTP/1.1 (an HTTP/1.0 server closes by default) and no `Connection:
/// close`.
fn keeps_alive(rsp: &Response<Incoming>) -> bool {
    rsp.status() != StatusCode::SWITCHING_PROTOCOLS
        && rsp.version() == Version::HTTP_11
        && !rsp.headers().get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        })
}

/// The `Host` for a request that has none: the endpoint, without the default port.
fn host_header(endpoint: &Authority) -> HeaderValue {
    let host = match endpoint.port_u16() {
        Some(80) => endpoint.host(),
        _ => endpoint.as_str(),
    };
    HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
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

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
