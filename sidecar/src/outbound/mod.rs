//! Outbound: original destination or authority, route, balance, connect to the peer sidecar.
//!
//! A connection from the local app is classified (`SO_ORIGINAL_DST` port on the Listener's
//! opaque / server-first lists skips detection; otherwise the first bytes decide). HTTP is
//! served by hyper and each request goes: service (VIP of the original destination, else the
//! authority with its namespace suffixes stripped; unknown names are asked of discovery) →
//! first matching route rule → rate limit / fault → weighted backend → the service's
//! pre-built balancer → endpoint (connect retried on another endpoint) → HTTP/2 to a peer
//! sidecar (`x-mesh-app-port`, `x-mesh-orig-proto`) or the app's own protocol to an
//! unmeshed endpoint. Opaque TCP, CONNECT and fixed local ports go to an endpoint behind the
//! `MESH-TCP <port>` preamble. Non-mesh destinations in transparent mode pass through.

mod forward;
mod http;
mod mirror;
mod peer_headers;
mod target;
mod tcp;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::net::{TcpListener, TcpStream};

pub use crate::names::{port_of, service_name};
pub use target::known;

use crate::proxy::{self, Clients, Detected, Drain, guard};
use crate::state::{Name, StateHandle};
use crate::telemetry::Direction;

/// Outbound settings from flags (the Listener resource may override detection).
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Detection timeout when the Listener resource sets none.
    pub detect_timeout: Duration,
    /// Request-head limit; larger heads get 431.
    pub max_header_bytes: usize,
    /// Connect timeout to endpoints whose cluster sets none, and to passthrough destinations.
    pub connect_timeout: Duration,
    /// How long a request for an unknown service waits for discovery to answer.
    pub discovery_wait: Duration,
    /// mTLS to meshed peers; `None` without a workload identity (plaintext).
    pub tls: Option<crate::tls::MeshConnector>,
    /// This workload's namespace: a short name in an authority names a service within it.
    pub namespace: Name,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            detect_timeout: proxy::DEFAULT_DETECT_TIMEOUT,
            max_header_bytes: proxy::DEFAULT_MAX_HEADER_BYTES,
            connect_timeout: crate::state::Cluster::DEFAULT_CONNECT_TIMEOUT,
            // 3 s: enough for a round trip to a busy control plane, and below common client
            // timeouts (5–30 s) so the client gets a clear `no-route` instead of its own timeout.
            discovery_wait: Duration::from_secs(3),
            tls: None,
            namespace: Name::from(mesh_proto::names::DEFAULT_NAMESPACE),
        }
    }
}

/// Everything outbound connections share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboundCtx {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: StateHandle,
    cfg: OutboundConfig,
    clients: Clients,
    /// Retry budgets and circuit breakers per cluster.
    resilience: crate::resilience::wiring::ClusterRegistry,
}

/// Facts about one downstream connection.
#[derive(Debug, Clone, Copy)]
struct ConnInfo {
    peer: SocketAddr,
    orig_dst: Option<SocketAddr>,
}

// === impl OutboundCtx ===

impl OutboundCtx {
    pub fn new(state: StateHandle, cfg: OutboundConfig) -> Self {
        let clients = Clients::new(cfg.connect_timeout).with_tls(cfg.tls.clone());
        Self {
            inner: Arc::new(Inner {
                state,
                cfg,
                clients,
                resilience: Default::default(),
            }),
        }
    }

    pub fn state(&self) -> &StateHandle {
        &self.inner.state
    }

    /// How connections to `cluster`'s endpoints are dialled and kept: its connect timeout
    /// (this config's where it sets none) and its idle timeout.
    fn dial(&self, cluster: &crate::state::Cluster) -> proxy::client::Dial {
        let connect = cluster
            .connect_timeout
            .unwrap_or(self.inner.cfg.connect_timeout);
        proxy::client::Dial::new(connect, cluster.idle_timeout)
    }
}

/// Serves the outbound listener (explicit proxy and transparent) until drain begins; live
/// connections keep their `Drain` clone and finish on their own.
pub async fn serve(listener: TcpListener, ctx: OutboundCtx, mut drain: Drain) {
    let limit = proxy::limit::ConnLimit::default();
    loop {
        let Some((stream, peer, permit)) =
            proxy::limit::accept(&listener, &mut drain, &ctx.inner.state, &limit, "outbound").await
        else {
            return;
        };
        let (ctx, drain) = (ctx.clone(), drain.clone());
        tokio::spawn(async move {
            connection(stream, peer, ctx, drain).await;
            drop(permit);
        });
    }
}

/// Serves a fixed local port for `service`: every connection is proxied as opaque TCP to the
/// service's `port` (no detection, so server-first protocols work).
pub async fn serve_fixed(
    listener: TcpListener,
    ctx: OutboundCtx,
    service: Name,
    port: u16,
    mut drain: Drain,
) {
    // Fixed ports count against the same Listener connection limit as the proxy's own.
    let limit = proxy::limit::ConnLimit::default();
    loop {
        let Some((stream, peer, permit)) = proxy::limit::accept(
            &listener,
            &mut drain,
            &ctx.inner.state,
            &limit,
            "fixed-port",
        )
        .await
        else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let (ctx, service, drain) = (ctx.clone(), service.clone(), drain.clone());
        tokio::spawn(async move {
            let io = proxy::Prefixed::new(bytes::Bytes::new(), stream);
            tcp::to_service(&ctx, &service, port, peer, io).await;
            drop((drain, permit));
        });
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, ctx: OutboundCtx, drain: Drain) {
    let _ = stream.set_nodelay(true);
    let orig_dst = crate::orig_dst::original_dst(&stream).ok();
    let conn = ConnInfo { peer, orig_dst };
    let snap = ctx.inner.state.load();
    let listener = snap.listener.clone();
    // A service declared TCP is opaque at its VIP, whatever its first bytes look like.
    let declared_tcp = orig_dst.is_some_and(|dst| tcp::declared_tcp(&snap, dst));
    drop(snap);
    let skip = declared_tcp
        || match (&listener, orig_dst) {
            (Some(l), Some(dst)) => l.skips_detection(dst.port()),
            _ => false,
        };
    let timeout = listener
        .as_ref()
        .and_then(|l| l.detect_timeout)
        .unwrap_or(ctx.inner.cfg.detect_timeout);
    let Some((proto, io)) = proxy::detect_unless_skipped(stream, skip, timeout, "outbound").await
    else {
        return;
    };
    match proto {
        Detected::Http1 | Detected::Http2 => {
            let max = ctx.inner.cfg.max_header_bytes;
            let io = if proto == Detected::Http1 {
                match guard::check_first_head(io, max).await {
                    Ok(io) => io,
                    Err(_) => return,
                }
            } else {
                io
            };
            let svc_ctx = ctx.clone();
            let svc = service_fn(move |req| {
                let ctx = svc_ctx.clone();
                async move {
                    let rsp = crate::observe::observe(Direction::Outbound, None, req, |req| {
                        http::handle(ctx, conn, req)
                    });
                    Ok::<_, std::convert::Infallible>(rsp.await)
                }
            });
            proxy::server::serve_http(io, proto == Detected::Http2, max, svc, drain).await;
        }
        Detected::Tls | Detected::Opaque | Detected::MeshTcp(_) => {
            let target = orig_dst.and_then(|dst| {
                let snap = ctx.inner.state.load();
                snap.service_by_vip(dst).map(|s| (s.clone(), dst.port()))
            });
            match (target, orig_dst) {
                (Some((service, port)), _) => tcp::to_service(&ctx, &service, port, peer, io).await,
                (None, Some(dst)) => tcp::passthrough(&ctx, dst, io).await,
                (None, None) => {
                    proxy::Cause::NoRoute.record(&"opaque connection with no original destination");
                }
            }
            drop(drain);
        }
    }
}
