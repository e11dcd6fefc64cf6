//! Outbound HTTP: authority → route → weighted backend → balanced endpoint → upstream request.

use std::sync::Arc;

use http::header::{HOST, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::{ConnInfo, OutboundCtx, tcp};
use crate::balance::{Outcome, cookie, hash64, request_hash};
use crate::proxy::headers::{
    MESH_APP_PORT, MESH_ORIG_PROTO, add_forwarded_for, ensure_request_id, is_upgrade,
    strip_hop_by_hop,
};
use crate::proxy::{Cause, ProxyBody, tcp as ptcp, upgrade};
use crate::routing::{self, RequestInfo};
use crate::state::{HashKey, Snapshot};

/// Handles one request from the local app.
pub(super) async fn handle(
    ctx: OutboundCtx,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        return connect(ctx, conn, req).await;
    }
    // The authority: absolute-form URI or HTTP/2 :authority first, then Host.
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()));
    let service = match authority {
        Some(a) => super::service_name(a).into_owned(),
        None => match conn
            .orig_dst
            .and_then(|d| ctx.inner.state.load().service_by_vip(d).cloned())
        {
            Some(s) => s.to_string(),
            None => return Cause::BadRequest.respond(&"request without authority or Host"),
        },
    };
    let snap = super::known(&ctx.inner.state, &service, ctx.inner.cfg.discovery_wait).await;
    forward(&ctx, conn, &snap, &service, req).await
}

async fn forward(
    ctx: &OutboundCtx,
    conn: ConnInfo,
    snap: &Arc<Snapshot>,
    service: &str,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    // Route selection (no Route resource: all endpoints of the service).
    let selected = match snap.routes.get(service) {
        Some(route) => match routing::select(route, RequestInfo::from_request(&req)) {
            Some(sel) => Some(sel),
            None => return Cause::NoRoute.respond(&format_args!("{service}: no rule matched")),
        },
        None => None,
    };
    if let Some(r) = selected.as_ref().and_then(|s| s.rule.redirect.as_ref()) {
        let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
        return match routing::redirect_target(r, req.uri(), host) {
            Some((status, location)) => {
                let mut rsp = Response::new(ProxyBody::empty());
                *rsp.status_mut() = status;
                rsp.headers_mut().insert(routing::REDIRECT_HEADER, location);
                rsp
            }
            None => Cause::BadRequest.respond(&"redirect target not buildable"),
        };
    }
    let (target, subset) = match selected
        .as_ref()
        .and_then(|s| routing::pick_backend_random(s.rule))
    {
        Some(b) => (&*b.service, b.subset.as_deref()),
        None => (service, None),
    };
    let resolved;
    let snap = if snap.lb(target).is_none() && target != service {
        resolved = super::known(&ctx.inner.state, target, ctx.inner.cfg.discovery_wait).await;
        &resolved
    } else {
        snap
    };
    let Some(lb) = snap.lb(target) else {
        let cause = if snap.routes.contains_key(service)
            || snap.knows(target) && !snap.absent.contains(target)
        {
            Cause::NoEndpoints
        } else {
            Cause::NoRoute
        };
        return cause.respond(&format_args!("{target}"));
    };
    let Some(pool) = lb.subset(subset).filter(|s| !s.is_empty()) else {
        return Cause::NoEndpoints.respond(&format_args!("{target} subset {subset:?}"));
    };

    // Consistent hashing key, and a generated sticky cookie when configured and absent.
    let mut set_cookie = None;
    let hash = match (&lb.cluster.hash_on, pool.is_hashed()) {
        (Some(h), true) => request_hash(h, req.headers(), Some(conn.peer.ip())).or_else(|| {
            let HashKey::Cookie(name) = &h.key else {
                return None;
            };
            if !h.generate_cookie || cookie(req.headers(), name).is_some() {
                return None;
            }
            let value = format!("{:032x}", rand::random::<u128>());
            let hash = hash64(value.as_bytes());
            let max_age = h
                .cookie_ttl
                .map(|t| format!("; Max-Age={}", t.as_secs()))
                .unwrap_or_default();
            set_cookie =
                HeaderValue::try_from(format!("{name}={value}; Path=/; HttpOnly{max_age}")).ok();
            Some(hash)
        }),
        _ => None,
    };
    let Some(ep) = pool.pick(hash).cloned() else {
        return Cause::NoEndpoints.respond(&target);
    };

    // The upstream request.
    let upgrade = is_upgrade(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let rewritten = selected
        .as_ref()
        .and_then(|s| routing::rewrite(s, req.uri()));
    let (mut parts, body) = req.into_parts();
    let from_h2 = parts.version == Version::HTTP_2;
    if !parts.headers.contains_key(HOST)
        && let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(HOST, v);
    }
    strip_hop_by_hop(&mut parts.headers, upgrade);
    add_forwarded_for(&mut parts.headers, conn.peer.ip());
    ensure_request_id(&mut parts.headers);
    if let Some(sel) = &selected {
        routing::apply_header_ops(&sel.rule.request_headers, &mut parts.headers);
    }
    let meshed = ep.endpoint.is_meshed();
    parts.headers.remove(&MESH_APP_PORT);
    parts.headers.remove(&MESH_ORIG_PROTO);
    if meshed {
        if ep.endpoint.app_port != 0 {
            parts
                .headers
                .insert(MESH_APP_PORT, HeaderValue::from(ep.endpoint.app_port));
        }
        // Always sent to a peer: it restores exactly this version for the app.
        let proto = if from_h2 { "h2" } else { "h1" };
        parts
            .headers
            .insert(MESH_ORIG_PROTO, HeaderValue::from_static(proto));
    }
    if let Some(uri) = rewritten {
        parts.uri = uri;
    }
    // Sidecar↔sidecar HTTP is multiplexed HTTP/2, except upgrades (HTTP/2 has no Upgrade);
    // an unmeshed endpoint gets the app's own protocol.
    let use_h2 = !upgrade && (meshed || from_h2);
    let up_req = Request::from_parts(parts, ProxyBody::from(body));

    let guard = ep.start();
    let timeout = selected
        .as_ref()
        .and_then(|s| s.rule.timeout)
        .or(lb.cluster.request_timeout);
    let sent = ctx
        .inner
        .clients
        .send(up_req, ep.endpoint.addr, &ep.authority, use_h2);
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, sent)
            .await
            .unwrap_or_else(|_| Err((Cause::RequestTimeout, format!("no response within {t:?}")))),
        None => sent.await,
    };
    let mut rsp = match result {
        Ok(rsp) => rsp,
        Err((cause, detail)) => {
            guard.finish(Outcome::Failed);
            return cause.respond(&format_args!("{target} via {}: {detail}", ep.endpoint.addr));
        }
    };
    guard.finish(Outcome::Status(rsp.status().as_u16()));

    let switching = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(down) = on_upgrade {
        upgrade::spawn_tunnel(down, hyper::upgrade::on(&mut rsp));
    }
    let (mut parts, body) = rsp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching);
    if let Some(sel) = &selected {
        routing::apply_header_ops(&sel.rule.response_headers, &mut parts.headers);
    }
    if let Some(c) = set_cookie {
        parts.headers.append(SET_COOKIE, c);
    }
    Response::from_parts(parts, ProxyBody::from(body))
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
    let service = super::service_name(&authority).into_owned();
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
