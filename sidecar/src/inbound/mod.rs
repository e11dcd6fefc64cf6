//! Inbound: accept from peer sidecars, detect, forward to the local app.
//!
//! Each connection passes the [`Transport`] (plaintext, or mTLS per the Listener's mode), then
//! detection: a `MESH-TCP <port>` preamble is opaque TCP to that app port (under mTLS only with
//! ALPN `mesh-tcp`, and a `mesh-tcp` stream must start with it); HTTP/1 or HTTP/2 is served by
//! hyper and each request goes to `app_ip:<port>` (port from `x-mesh-app-port`, else the
//! original destination, else the first app port; hints are limited to the app's ports) in
//! the protocol the client app spoke (`x-mesh-orig-proto`, default HTTP/1.1); TLS and other
//! bytes are passed through to the app. Drain stops accepting and lets requests finish.

mod authz;
mod http;
mod tls;
mod transport;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

pub use tls::MtlsTransport;
pub use transport::{Peer, Plaintext, Transport};

use crate::proxy::{self, Cause, Clients, Detected, Drain, guard};
use crate::state::{Name, StateHandle};
use crate::telemetry::Direction;
use crate::tls::Alpn;

/// Which HTTP version the local app speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppProtocol {
    /// What the client app spoke (carried in `x-mesh-orig-proto`); HTTP/1.1 when unknown.
    #[default]
    Auto,
    Http1,
    Http2,
}

/// Inbound settings from flags.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    /// The app's ports; the first is the default target without a port hint.
    pub app_ports: Vec<u16>,
    /// Where the app listens (loopback in a pod).
    pub app_ip: IpAddr,
    pub app_protocol: AppProtocol,
    pub detect_timeout: Duration,
    pub max_header_bytes: usize,
    pub connect_timeout: Duration,
    /// The workload's own service: its AuthorizationPolicy guards every inbound request.
    /// `None` (tests, static setups) = no authorization.
    pub service: Option<crate::state::Name>,
    /// The sidecar's own listener ports (admin, inbound, outbound, DNS, fixed forwards): never
    /// a target, whatever a peer hints or dials.
    pub own_ports: Vec<u16>,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            app_ports: Vec::new(),
            app_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            app_protocol: AppProtocol::Auto,
            detect_timeout: proxy::DEFAULT_DETECT_TIMEOUT,
            max_header_bytes: proxy::DEFAULT_MAX_HEADER_BYTES,
            // The app is on loopback: 1 s only ever elapses when it is wedged.
            connect_timeout: Duration::from_secs(1),
            service: None,
            own_ports: Vec::new(),
        }
    }
}

/// Everything inbound connections share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InboundCtx {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: StateHandle,
    cfg: InboundConfig,
    clients: Clients,
    /// `app_ip:port` authorities of the configured app ports, built once.
    app_authorities: Vec<(u16, ::http::uri::Authority)>,
}

/// Facts about one downstream connection.
#[derive(Debug, Clone)]
struct ConnInfo {
    peer: SocketAddr,
    orig_dst: Option<SocketAddr>,
    /// The peer's verified identity (mTLS); `None` on plaintext.
    identity: Option<Name>,
}

// === impl InboundCtx ===

impl InboundCtx {
    pub fn new(state: StateHandle, cfg: InboundConfig) -> Self {
        let clients = Clients::new(cfg.connect_timeout);
        let app_authorities = cfg
            .app_ports
            .iter()
            .map(|&p| (p, authority(SocketAddr::new(cfg.app_ip, p))))
            .collect();
        Self {
            inner: Arc::new(Inner {
                state,
                cfg,
                clients,
                app_authorities,
            }),
        }
    }

    /// The authority of the app at `port` (prebuilt for configured ports).
    fn app_authority(&self, port: u16) -> ::http::uri::Authority {
        match self.inner.app_authorities.iter().find(|(p, _)| *p == port) {
            Some((_, a)) => a.clone(),
            None => authority(SocketAddr::new(self.inner.cfg.app_ip, port)),
        }
    }

    /// Whether a peer may reach `port` (a header or preamble hint, or the port it dialled in
    /// transparent mode). Never one of the sidecar's own listeners; only the app's declared
    /// ports when it declares any: otherwise any caller could reach every loopback service of
    /// the pod, the sidecar's admin port (`POST /drain`) and DNS port included.
    fn hint_allowed(&self, port: u16) -> bool {
        if self.inner.cfg.own_ports.contains(&port) {
            return false;
        }
        let cfg = &self.inner.cfg.app_ports;
        let snap = self.inner.state.load();
        let listener: &[u16] = snap.listener.as_ref().map_or(&[], |l| &l.app_ports);
        (cfg.is_empty() && listener.is_empty()) || cfg.contains(&port) || listener.contains(&port)
    }

    /// The app port for a connection without a port hint: the original destination port
    /// (transparent mode) when a peer may reach it, else the first configured app port, else
    /// the first app port of the Listener resource. A refused original destination gives
    /// `None` (no route), never a fallback to another port.
    fn default_port(&self, orig_dst: Option<SocketAddr>) -> Option<u16> {
        if let Some(d) = orig_dst {
            return self.hint_allowed(d.port()).then_some(d.port());
        }
        self.inner.cfg.app_ports.first().copied().or_else(|| {
            let snap = self.inner.state.load();
            snap.listener.as_ref()?.app_ports.first().copied()
        })
    }
}

fn authority(addr: SocketAddr) -> ::http::uri::Authority {
    // A socket address always formats as a valid authority.
    ::http::uri::Authority::try_from(addr.to_string())
        .unwrap_or_else(|_| ::http::uri::Authority::from_static("127.0.0.1"))
}

/// Serves the inbound listener until drain begins: then stops accepting, and each live
/// connection finishes its in-flight requests (HTTP/2 GOAWAY, HTTP/1 close after response).
pub async fn serve<T: Transport>(
    listener: TcpListener,
    ctx: InboundCtx,
    transport: Arc<T>,
    mut drain: Drain,
) {
    let limit = proxy::limit::ConnLimit::default();
    loop {
        let Some((stream, peer, permit)) =
            proxy::limit::accept(&listener, &mut drain, &ctx.inner.state, &limit, "inbound").await
        else {
            return;
        };
        let (ctx, transport, drain) = (ctx.clone(), transport.clone(), drain.clone());
        tokio::spawn(async move {
            connection(stream, peer, ctx, transport, drain).await;
            drop(permit);
        });
    }
}

async fn connection<T: Transport>(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: InboundCtx,
    transport: Arc<T>,
    drain: Drain,
) {
    let _ = stream.set_nodelay(true);
    let orig_dst = crate::orig_dst::original_dst(&stream).ok();
    let (io, accepted) = match transport.accept(stream).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, %peer, "inbound handshake failed");
            return;
        }
    };
    let conn = ConnInfo {
        peer,
        orig_dst,
        identity: accepted.identity,
    };
    let listener = ctx.inner.state.load().listener.clone();
    // Only a redirected plaintext connection's port can be server-first: peer sidecars always
    // speak first (a TLS client hello, then the preamble or the HTTP/2 preface).
    let skip = match (&listener, orig_dst, accepted.alpn) {
        (Some(l), Some(dst), None) => l.skips_detection(dst.port()),
        _ => false,
    };
    let timeout = listener
        .as_ref()
        .and_then(|l| l.detect_timeout)
        .unwrap_or(ctx.inner.cfg.detect_timeout);
    let Some((proto, io)) = proxy::detect_unless_skipped(io, skip, timeout, "inbound").await else {
        return;
    };
    if let Some(alpn) = accepted.alpn
        && !alpn_agrees(alpn, proto)
    {
        return Cause::BadRequest.record(&format_args!(
            "ALPN {:?} stream from {peer} started as {proto:?}",
            alpn
        ));
    }
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
            let conn = Arc::new(conn);
            let svc_ctx = ctx.clone();
            let svc = service_fn(move |req| {
                let (ctx, conn) = (svc_ctx.clone(), conn.clone());
                async move {
                    let identity = conn.identity.clone();
                    let rsp = crate::observe::observe(Direction::Inbound, identity, req, |req| {
                        http::handle(&ctx, &conn, req)
                    });
                    Ok::<_, std::convert::Infallible>(rsp.await)
                }
            });
            proxy::server::serve_http(io, proto == Detected::Http2, max, svc, drain).await;
        }
        Detected::MeshTcp(port) if ctx.hint_allowed(port) => {
            tcp_authorized(&ctx, &conn, port, io).await;
        }
        Detected::MeshTcp(port) => {
            Cause::NoRoute.record(&format_args!("preamble port {port} is not an app port"));
        }
        Detected::Tls | Detected::Opaque => match ctx.default_port(orig_dst) {
            Some(port) => tcp_authorized(&ctx, &conn, port, io).await,
            None => Cause::NoRoute.record(&"inbound opaque connection without an app port"),
        },
    }
}

/// Whether the first bytes of an mTLS stream are what its ALPN promised: `mesh-tcp` always
/// starts with the preamble (so its port is authorized like any preamble), `h2` with the
/// HTTP/2 preface, `http/1.1` (upgrading requests) with an HTTP/1.1 head. Anything else is a
/// confused or hostile peer.
fn alpn_agrees(alpn: Alpn, proto: Detected) -> bool {
    match alpn {
        Alpn::MeshTcp => matches!(proto, Detected::MeshTcp(_)),
        Alpn::H2 => proto == Detected::Http2,
        Alpn::Http1 => proto == Detected::Http1,
    }
}

/// Opaque TCP to the local app if the caller is authorized; a denied connection is closed.
async fn tcp_authorized<I: AsyncRead + AsyncWrite + Unpin>(
    ctx: &InboundCtx,
    conn: &ConnInfo,
    port: u16,
    io: I,
) {
    match authz::check(ctx, conn.identity.as_deref(), port, None) {
        Ok(()) => to_app(ctx, port, io).await,
        Err(denied) => Cause::AuthzDenied.record(&denied),
    }
}

/// Opaque TCP to the local app.
async fn to_app<I: AsyncRead + AsyncWrite + Unpin>(ctx: &InboundCtx, port: u16, mut io: I) {
    let addr = SocketAddr::new(ctx.inner.cfg.app_ip, port);
    let up = tokio::time::timeout(ctx.inner.cfg.connect_timeout, TcpStream::connect(addr)).await;
    let mut up = match up {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Cause::ConnectRefused.record(&addr),
        Err(_) => return Cause::ConnectTimeout.record(&addr),
    };
    let _ = up.set_nodelay(true);
    if let Err(e) = proxy::tcp::copy(&mut io, &mut up).await {
        tracing::debug!(error = %e, %addr, "inbound tcp ended with error");
    }
}
