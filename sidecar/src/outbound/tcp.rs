//! Outbound opaque TCP: to a service's endpoint (preamble, in mTLS when meshed, for peer sidecars) or passthrough.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::OutboundCtx;
use super::tls::{UpstreamIo, secure};
use crate::balance::{InFlight, LbEndpoint, Outcome, hash64};
use crate::proxy::{Cause, tcp};
use crate::resilience::Resource;
use crate::state::{Protocol, Snapshot};
use crate::tls::Alpn;

/// True when `dst` is the VIP:port of a service whose cluster declares protocol TCP: its
/// connections are opaque, never sniffed (transparent mode).
pub(super) fn declared_tcp(snap: &Snapshot, dst: SocketAddr) -> bool {
    snap.service_by_vip(dst)
        .and_then(|s| snap.clusters.get(s))
        .is_some_and(|c| c.protocol == Protocol::Tcp)
}

/// The backend service for connection-level traffic: a Route's first rule without matches
/// (request matches need a request), or the service itself.
fn backend<'s>(snap: &'s Snapshot, service: &'s str) -> (&'s str, Option<&'s str>) {
    let rule = snap
        .routes
        .get(service)
        .and_then(|r| r.rules.iter().find(|rule| rule.matches.is_empty()));
    match rule.and_then(|r| crate::routing::pick_backend_random(r)) {
        Some(b) => (&b.service, b.subset.as_deref()),
        None => (service, None),
    }
}

/// Picks an endpoint of `service` for a connection from `peer` (hashed on the source IP for
/// consistent-hash clusters).
pub(super) async fn pick(
    ctx: &OutboundCtx,
    service: &str,
    peer: SocketAddr,
) -> Result<Arc<LbEndpoint>, Cause> {
    let wait = ctx.inner.cfg.discovery_wait;
    let first = super::known(&ctx.inner.state, service, wait).await;
    let (target, subset) = backend(&first, service);
    let resolved;
    let snap = if first.lb(target).is_none() && target != service {
        resolved = super::known(&ctx.inner.state, target, wait).await;
        &resolved
    } else {
        &first
    };
    let Some(lb) = snap.lb(target) else {
        return Err(if snap.knows(target) {
            Cause::NoEndpoints
        } else {
            Cause::NoRoute
        });
    };
    let subset = lb.subset(subset).ok_or(Cause::NoEndpoints)?;
    let hash = subset.is_hashed().then(|| match peer.ip() {
        std::net::IpAddr::V4(v4) => hash64(&v4.octets()),
        std::net::IpAddr::V6(v6) => hash64(&v6.octets()),
    });
    subset.pick(hash).cloned().ok_or(Cause::NoEndpoints)
}

/// Connects to a picked endpoint within its cluster's connect timeout, as one of the
/// cluster's pending connects (`max_pending_requests`); classifies failures.
pub(super) async fn connect(ep: &Arc<LbEndpoint>, ctx: &OutboundCtx) -> Result<TcpStream, Cause> {
    let cluster = ep.cluster();
    let _pending = ctx
        .inner
        .resilience
        .get(cluster)
        .circuit
        .try_acquire(Resource::Pending)?;
    let timeout = ctx.dial(cluster).connect_timeout;
    match tokio::time::timeout(timeout, TcpStream::connect(ep.endpoint.addr)).await {
        Err(_) => Err(Cause::ConnectTimeout),
        Ok(Err(_)) => Err(Cause::ConnectRefused),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// Opens an upstream stream to `ep`. A peer sidecar gets the `MESH-TCP <port>` preamble, inside
/// mTLS (ALPN `mesh-tcp`, the endpoint's SPIFFE ID verified) when the endpoint has an identity
/// and this sidecar has a certificate; plaintext otherwise (unmeshed or identity-less peers).
pub(super) async fn open(
    ctx: &OutboundCtx,
    ep: &Arc<LbEndpoint>,
    port: u16,
) -> Result<(UpstreamIo, InFlight), Cause> {
    let guard = ep.start();
    let up = match connect(ep, ctx).await {
        Ok(s) => s,
        // Refused here (pending connects full): the endpoint was never tried.
        Err(Cause::CircuitOpen) => return Err(Cause::CircuitOpen),
        Err(c) => {
            guard.finish(Outcome::Failed);
            return Err(c);
        }
    };
    if !ep.endpoint.is_meshed() {
        return Ok((UpstreamIo::Plain(up), guard));
    }
    let addr = ep.endpoint.addr;
    let tls = ctx.inner.cfg.tls.as_ref();
    let mut up = match secure(tls, up, addr, ep.endpoint.identity.as_ref(), Alpn::MeshTcp).await {
        Ok(io) => io,
        Err((cause, detail)) => {
            tracing::debug!(%detail, "outbound mesh-tcp handshake failed");
            guard.finish(Outcome::Failed);
            return Err(cause);
        }
    };
    let app_port = if ep.endpoint.app_port != 0 {
        ep.endpoint.app_port
    } else {
        port
    };
    if tcp::write_preamble(&mut up, app_port).await.is_err() {
        guard.finish(Outcome::Failed);
        return Err(Cause::UpstreamReset);
    }
    Ok((up, guard))
}

/// Proxies `io` as opaque TCP to an endpoint of `service`.
pub(super) async fn to_service<T>(
    ctx: &OutboundCtx,
    service: &str,
    port: u16,
    peer: SocketAddr,
    mut io: T,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let ep = match pick(ctx, service, peer).await {
        Ok(ep) => ep,
        Err(c) => return c.record(&format_args!("tcp to {service}")),
    };
    let (mut up, guard) = match open(ctx, &ep, port).await {
        Ok(x) => x,
        Err(c) => return c.record(&format_args!("tcp to {service} via {}", ep.endpoint.addr)),
    };
    let res = tcp::copy(&mut io, &mut up).await;
    guard.finish(Outcome::Status(if res.is_ok() { 200 } else { 502 }));
    if let Err(e) = res {
        tracing::debug!(error = %e, service, "tcp stream ended with error");
    }
}

/// Proxies to a destination outside the mesh (transparent mode, no matching VIP) unchanged.
pub(super) async fn passthrough<T>(ctx: &OutboundCtx, dst: SocketAddr, mut io: T)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let up = tokio::time::timeout(ctx.inner.cfg.connect_timeout, TcpStream::connect(dst)).await;
    let mut up = match up {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Cause::ConnectRefused.record(&dst),
        Err(_) => return Cause::ConnectTimeout.record(&dst),
    };
    let _ = up.set_nodelay(true);
    if let Err(e) = tcp::copy(&mut io, &mut up).await {
        tracing::debug!(error = %e, %dst, "passthrough ended with error");
    }
    let _ = up.shutdown().await;
}
