//! Outbound HTTP entry: which service a request is for, CONNECT tunnels, and passthrough.

use http::header::{HOST, VIA};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use super::{ConnInfo, OutboundCtx, tcp};
use crate::balance::Outcome;
use crate::proxy::headers::strip_hop_by_hop;
use crate::proxy::{Cause, ProxyBody, tcp as ptcp};

/// This proxy's `Via` entry (RFC 9110 §7.6.3) on requests it passes to a host the app named.
const VIA_ENTRY: &str = "1.1 mesh-sidecar";

/// Port of an `http://` authority that names none.
const DEFAULT_HTTP_PORT: u16 = 80;

/// Handles one request from the local app.
pub(super) async fn handle(
    ctx: OutboundCtx,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        return connect(ctx, conn, req).await;
    }
    let wait = ctx.inner.cfg.discovery_wait;
    // Transparent mode to a service VIP: the address the app dialled names the service.
    let vip = conn
        .orig_dst
        .and_then(|d| ctx.inner.state.load().service_by_vip(d).cloned());
    // Otherwise the authority: absolute-form URI or HTTP/2 :authority first, then Host. The
    // name is borrowed from the request and swapped for the snapshot's interned `Name`, so a
    // known service costs no allocation. IP literals name no service.
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()));
    // Explicit mode (no original destination) to an IP literal that is no VIP: the app named
    // the host itself, so it is forwarded there as any HTTP proxy would, with a `Via` entry so
    // a request that comes back to this proxy (its own address) is refused, not looped.
    let mut literal = None;
    let (snap, service) = match (vip, authority) {
        (Some(vip), _) => (ctx.inner.state.snapshot(), Some(vip)),
        (None, Some(a)) => {
            let name = super::service_name(a, &ctx.inner.cfg.namespace);
            if !crate::names::valid_name(&name) {
                return Cause::BadRequest.respond(&format_args!("{a:?} is not a valid host name"));
            }
            if let Ok(ip) = name.parse::<std::net::IpAddr>() {
                let port = super::port_of(a).unwrap_or(DEFAULT_HTTP_PORT);
                literal = Some(std::net::SocketAddr::new(ip, port));
                (ctx.inner.state.snapshot(), None)
            } else {
                let snap = super::known(&ctx.inner.state, &name, wait).await;
                let key = snap.service_key(&name);
                (snap, key)
            }
        }
        (None, None) => (ctx.inner.state.snapshot(), None),
    };
    match service {
        Some(service) => super::forward::forward(&ctx, conn, &snap, &service, req).await,
        // Transparent mode to a destination outside the mesh: pass the request through.
        None => match (conn.orig_dst, literal) {
            (Some(dst), _) => passthrough(&ctx, dst, req).await,
            (None, Some(dst)) => {
                let looped = req
                    .headers()
                    .get_all(VIA)
                    .iter()
                    .any(|v| v.as_bytes().ends_with(VIA_ENTRY.as_bytes()));
                if looped {
                    return Cause::NoRoute.respond(&format_args!(
                        "{dst}: the request looped back to this proxy"
                    ));
                }
                let mut req = req;
                req.headers_mut()
                    .append(VIA, http::HeaderValue::from_static(VIA_ENTRY));
                passthrough(&ctx, dst, req).await
            }
            (None, None) => Cause::NoRoute.respond(&format_args!("{:?}", req.headers().get(HOST))),
        },
    }
}

/// Forwards a request unchanged (apart from hop-by-hop headers) to its original destination.
async fn passthrough(
    ctx: &OutboundCtx,
    dst: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let Ok(authority) = http::uri::Authority::try_from(dst.to_string()) else {
        return Cause::BadRequest.respond(&dst);
    };
    let h2 = parts.version == Version::HTTP_2;
    let req = Request::from_parts(parts, ProxyBody::from(body));
    match ctx.inner.clients.send(req, dst, &authority, h2, None).await {
        Ok(rsp) => {
            let (mut parts, body) = rsp.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, ProxyBody::from(body))
        }
        Err((cause, detail)) => cause.respond(&format_args!("passthrough {dst}: {detail}")),
    }
}

/// `CONNECT svc:port`: an opaque tunnel to an endpoint of the service.
async fn connect(
    ctx: OutboundCtx,
    conn: ConnInfo,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned()) else {
        return Cause::BadRequest.respond(&"CONNECT without authority");
    };
    let service = super::service_name(&authority, &ctx.inner.cfg.namespace).into_owned();
    if !crate::names::valid_name(&service) {
        return Cause::BadRequest.respond(&format_args!("{authority:?} is not a valid host name"));
    }
    let Some(port) = super::port_of(&authority) else {
        return Cause::BadRequest.respond(&"CONNECT without port");
    };
    let ep = match tcp::pick(&ctx, &service, conn.peer).await {
        Ok(ep) => ep,
        Err(c) => return c.respond(&format_args!("CONNECT {authority}")),
    };
    let (mut up, guard) = match tcp::open(&ctx, &ep, port).await {
        Ok(x) => x,
        Err(c) => {
            return c.respond(&format_args!(
                "CONNECT {authority} via {}",
                ep.endpoint.addr
            ));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(down) => {
                let mut down = hyper_util::rt::TokioIo::new(down);
                let ok = ptcp::copy(&mut down, &mut up).await.is_ok();
                guard.finish(Outcome::Status(if ok { 200 } else { 502 }));
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(ProxyBody::empty())
}
