//! Inbound HTTP: restore the app's protocol and forward to `app_ip:<app port>`.

use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::{AppProtocol, ConnInfo, InboundCtx};
use crate::proxy::headers::{
    MESH_APP_PORT, MESH_ORIG_PROTO, add_forwarded_for, ensure_request_id, is_upgrade,
    strip_hop_by_hop,
};
use crate::proxy::{Cause, ProxyBody, upgrade};

/// Handles one request from a peer sidecar (or an unmeshed client).
pub(super) async fn handle(
    ctx: &InboundCtx,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let hinted = req
        .headers()
        .get(&MESH_APP_PORT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|&p| p != 0);
    if let Some(p) = hinted
        && !ctx.hint_allowed(p)
    {
        return Cause::NoRoute.respond(&format_args!("port {p} is not an app port"));
    }
    let Some(port) = hinted.or_else(|| ctx.default_port(conn.orig_dst)) else {
        return Cause::NoRoute.respond(&"no app port for inbound request");
    };
    if let Err(denied) =
        super::authz::check(ctx, conn.identity.as_deref(), port, Some(req.uri().path()))
    {
        return Cause::AuthzDenied.respond(&denied);
    }
    let orig = req
        .headers()
        .get(&MESH_ORIG_PROTO)
        .map(HeaderValue::as_bytes);
    let app_h2 = match ctx.inner.cfg.app_protocol {
        AppProtocol::Http1 => false,
        AppProtocol::Http2 => true,
        AppProtocol::Auto => match orig {
            Some(p) => p == b"h2",
            // No hint: a direct (unmeshed) client; keep its own version.
            None => req.version() == Version::HTTP_2,
        },
    };
    let upgrade = is_upgrade(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(&MESH_APP_PORT);
    parts.headers.remove(&MESH_ORIG_PROTO);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    add_forwarded_for(&mut parts.headers, conn.peer.ip());
    ensure_request_id(&mut parts.headers);
    // An HTTP/2 request from a peer carries the original Host header; an HTTP/1 app needs one.
    if !parts.headers.contains_key(http::header::HOST)
        && let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(http::header::HOST, v);
    }
    let addr = std::net::SocketAddr::new(ctx.inner.cfg.app_ip, port);
    let up_req = Request::from_parts(parts, ProxyBody::from(body));
    let authority = ctx.app_authority(port);
    let sent = ctx
        .inner
        .clients
        .send(up_req, addr, &authority, app_h2 && !upgrade, None);
    let mut rsp = match sent.await {
        Ok(r) => r,
        Err((cause, detail)) => {
            let cause = match cause {
                Cause::ConnectRefused | Cause::ConnectTimeout => Cause::AppUnavailable,
                c => c,
            };
            return cause.respond(&format_args!("app {addr}: {detail}"));
        }
    };
    let switching = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(down) = on_upgrade {
        upgrade::spawn_tunnel(down, hyper::upgrade::on(&mut rsp));
    }
    let (mut parts, body) = rsp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching);
    Response::from_parts(parts, ProxyBody::from(body))
}
