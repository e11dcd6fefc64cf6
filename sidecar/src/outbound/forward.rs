//! Outbound forwarding of one routed request: rule → weighted backend → balanced endpoint
//! (through the resilience driver: retries, budget, timeouts) → upstream request and response,
//! over connections dialled and kept per the service's cluster (connect and idle timeouts,
//! pending connects, the HTTP version its app speaks).

use std::sync::Arc;

use http::header::{HOST, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body;
use hyper::body::Incoming;

use super::peer_headers::mesh_headers;
use super::{ConnInfo, OutboundCtx, mirror};
use crate::balance::{LbEndpoint, Outcome, cookie, hash64, request_hash};
use crate::proxy::client::{Dial, SendError};
use crate::proxy::headers::{
    MESH_APP_PORT, MESH_ORIG_PROTO, add_forwarded_for, ensure_request_id, is_upgrade,
    strip_hop_by_hop,
};
use crate::proxy::{Cause, Clients, ProxyBody, upgrade};
use crate::resilience::{self, ClusterResilience, ReplayBody, Resource, wiring};
use crate::routing::{self, RequestInfo};
use crate::state::{HashKey, Protocol, Snapshot};

pub(super) async fn forward(
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
    // Per-source limits need the caller's verified identity (inbound with mTLS); outbound
    // applies the rule's limit to all of this proxy's traffic.
    if let Some(rl) = selected.as_ref().and_then(|s| s.rule.rate_limit.as_ref())
        && !rl.limiter.try_acquire()
    {
        // A request the GCRA refuses would be admitted within one emission interval, so that
        // interval (rounded up to whole seconds) is an honest Retry-After.
        let wait = std::time::Duration::from_secs(1) / rl.requests_per_second.max(1);
        return wiring::rate_limited(
            wait,
            &format_args!("{service}: over {} rps", rl.requests_per_second),
        );
    }
    if let Some(f) = selected.as_ref().and_then(|s| s.rule.fault.as_ref())
        && let Some(rsp) = inject_fault(f).await
    {
        return rsp;
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
        // Boxed: rarely taken, and inline its state would grow every request's future.
        resolved = Box::pin(super::known(
            &ctx.inner.state,
            target,
            ctx.inner.cfg.discovery_wait,
        ))
        .await;
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
    // For the hop's span, log and metrics (crate::observe); refcount bumps only.
    crate::observe::note(|u| {
        u.route = selected.as_ref().map(|s| s.rule.name.clone());
        u.backend = Some(lb.cluster.name.clone());
    });
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
    if lb.circuit_open() {
        return Cause::CircuitOpen.respond(&format_args!("{target}: {} in flight", lb.in_flight()));
    }
    let upgrade = is_upgrade(req.headers());
    let app_h2 = app_speaks_h2(lb.cluster.protocol, req.version() == Version::HTTP_2);

    // The upstream request, minus the per-endpoint mesh headers.
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let rewritten = selected
        .as_ref()
        .and_then(|s| routing::rewrite(s, req.uri()));
    let (mut parts, body) = req.into_parts();
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
    parts.headers.remove(&MESH_APP_PORT);
    parts.headers.remove(&MESH_ORIG_PROTO);
    if let Some(uri) = rewritten {
        parts.uri = uri;
    }

    if let Some(m) = selected.as_ref().and_then(|s| s.rule.mirror.as_ref()) {
        mirror::maybe_mirror(ctx, snap, m, &parts, !upgrade && body.is_end_stream());
    }
    // Retries, retry budget, circuit breaker, per-try and request timeouts (crate::resilience):
    // safe by default (only what provably never reached an app), the route's policy on top;
    // bodies up to 64 KiB are replayable; a retry avoids the endpoint that just failed.
    let res = ctx.inner.resilience.get(&lb.cluster);
    let dial = ctx.dial(&lb.cluster);
    let retry = selected
        .as_ref()
        .and_then(|s| s.rule.retry.as_ref())
        .filter(|_| !upgrade)
        .map(resilience::RetryPolicy::from);
    let policy = resilience::CallPolicy {
        retry: retry.as_ref(),
        request_timeout: selected
            .as_ref()
            .and_then(|s| s.rule.timeout)
            .or(lb.cluster.request_timeout),
        ..Default::default()
    };
    let members = pool.members();
    // The head is moved into the attempt, not copied, when every path an attempt can take
    // hands an unsent request back: HTTP/1.1 (connect failure, or a pooled connection closed
    // before the request was written) and a failed HTTP/2 connect do. A REFUSED_STREAM from
    // a peer does not reliably (hyper only returns a request it has not started to send), so
    // a pool with peer sidecars, or an HTTP/2 app, keeps a copy for that retry-safe case.
    // (A retry policy always keeps one: `call_reclaiming`.)
    let keep_head = !upgrade && (app_h2 || pool.any_meshed());
    let result = resilience::call_reclaiming(
        &res,
        &policy,
        Request::from_parts(parts, body),
        |avoid| {
            let first = avoid.is_none().then(|| pool.pick(hash).cloned()).flatten();
            wiring::pick_index(members, first, avoid, || pool.pick(None))
        },
        |idx, req| {
            let how = How {
                upgrade,
                app_h2,
                dial,
            };
            attempt(ctx, &res, &members[idx], how, req)
        },
        keep_head,
    )
    .await;
    crate::observe::note_call(&result, members, ctx.inner.clients.has_tls());
    let mut rsp = match result {
        Ok(rsp) => rsp,
        Err(e) => return e.cause.respond(&format_args!("{target}: {e}")),
    };

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

/// Whether the service's app gets HTTP/2: the cluster's protocol when it names an HTTP
/// version (gRPC is HTTP/2), else the client's own.
fn app_speaks_h2(protocol: Protocol, from_h2: bool) -> bool {
    match protocol {
        Protocol::Http1 => false,
        Protocol::Http2 | Protocol::Grpc => true,
        Protocol::Detect | Protocol::Tcp => from_h2,
    }
}

/// How every attempt of one request is sent: the same for each endpoint tried.
#[derive(Debug, Clone, Copy)]
struct How {
    upgrade: bool,
    /// The service's app gets HTTP/2 ([`app_speaks_h2`]).
    app_h2: bool,
    /// The cluster's connect and idle timeouts.
    dial: Dial,
}

/// A new upstream connection, counted as one of the cluster's pending connects while it is
/// established: over `max_pending_requests` the attempt fails at once with `circuit-open`.
async fn pending<T>(
    res: &ClusterResilience,
    dial: impl std::future::Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    let _pending = res
        .circuit
        .try_acquire(Resource::Pending)
        .map_err(|cause| (cause, "pending connects at max_pending_requests".to_owned()))?;
    dial.await
}

/// One attempt at one endpoint: its mesh headers, the connection (multiplexed HTTP/2 to a
/// peer sidecar, except upgrades; the version the app speaks for an unmeshed endpoint; a new
/// one dialled per the cluster when none is pooled), and the balancer's in-flight guard
/// (latency, failure penalty, outlier detection). A failed connect (either protocol) or an
/// HTTP/1.1 request hyper did not write hands the request back, for a retry elsewhere.
async fn attempt(
    ctx: &OutboundCtx,
    res: &ClusterResilience,
    ep: &Arc<LbEndpoint>,
    how: How,
    req: Request<ReplayBody<Incoming>>,
) -> Result<Response<Incoming>, resilience::Failed<Incoming>> {
    let upstream = |req: Request<ReplayBody<Incoming>>| {
        let (mut parts, body) = req.into_parts();
        mesh_headers(&mut parts.headers, ep, how.app_h2);
        Request::from_parts(parts, ProxyBody::Replay(body))
    };
    let guard = ep.start();
    let clients = &ctx.inner.clients;
    let addr = ep.endpoint.addr;
    let (result, unsent) = if !how.upgrade && (ep.endpoint.is_meshed() || how.app_h2) {
        let identity = ep.endpoint.identity.as_ref();
        let conn = match clients.pooled_h2(addr, identity) {
            Some(conn) => Ok(conn),
            None => pending(res, clients.dial_h2(addr, identity, how.dial)).await,
        };
        match conn {
            Ok(conn) => (
                Clients::send_h2(conn, upstream(req), &ep.authority).await,
                None,
            ),
            Err(e) => (Err(e), Some(req)),
        }
    } else if let (true, Some(identity), true) = (
        how.upgrade,
        ep.endpoint.identity.as_ref(),
        clients.has_tls(),
    ) {
        // An upgrade to a meshed peer: HTTP/1.1 inside mTLS, the connection its tunnel.
        match pending(
            res,
            clients.dial_h1_mtls(addr, identity, how.dial.connect_timeout),
        )
        .await
        {
            Ok(tx) => (
                Clients::send_h1_upgrade(tx, upstream(req), &ep.authority).await,
                None,
            ),
            Err(e) => (Err(e), Some(req)),
        }
    } else {
        let conn = match clients.pooled_h1(addr, how.dial) {
            Some(conn) => Ok(conn),
            None => pending(res, clients.dial_h1(addr, how.dial)).await,
        };
        match conn {
            Ok(conn) => match clients.send_h1(conn, upstream(req), &ep.authority).await {
                Ok(rsp) => (Ok(rsp), None),
                Err((e, unsent)) => (Err(e), unsent.and_then(reclaim)),
            },
            Err(e) => (Err(e), Some(req)),
        }
    };
    match &result {
        Ok(rsp) => guard.finish(Outcome::Status(rsp.status().as_u16())),
        // Refused here (pending connects full) before the endpoint was tried: nothing to
        // learn about it, so no failure penalty and no outlier count.
        Err((Cause::CircuitOpen, _)) => drop(guard),
        Err(_) => guard.finish(Outcome::Failed),
    }
    result.map_err(|(cause, detail)| {
        tracing::debug!(cause = cause.as_str(), endpoint = %ep.endpoint.addr, %detail, "attempt failed");
        resilience::Failed { cause, unsent }
    })
}

/// The attempt's own request again, from one an HTTP/1.1 send handed back unsent. Its head
/// is as the attempt left it (origin-form URI, `Host` set), which every later attempt accepts.
fn reclaim(req: Request<ProxyBody>) -> Option<Request<ReplayBody<Incoming>>> {
    let (parts, body) = req.into_parts();
    match body {
        ProxyBody::Replay(body) => Some(Request::from_parts(parts, body)),
        _ => None,
    }
}

/// Applies a rule's fault: a delay and/or an abort, each for its per-mille share of requests.
async fn inject_fault(f: &crate::state::Fault) -> Option<Response<ProxyBody>> {
    if let Some(d) = f.delay
        && rand::random_range(0..1000u16) < f.delay_permille
    {
        tokio::time::sleep(d).await;
    }
    let status = f.abort_status?;
    if rand::random_range(0..1000u16) >= f.abort_permille {
        return None;
    }
    let mut rsp = Cause::FaultAbort.respond(&"fault injection");
    *rsp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(rsp)
}
