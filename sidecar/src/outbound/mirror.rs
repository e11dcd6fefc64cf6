//! Request mirroring: a fire-and-forget copy of a share of a rule's traffic to another service,
//! over mTLS to an endpoint with an identity (the same peer policy as the request itself).

use std::time::Duration;

use http::header::HOST;
use http::request::Parts;
use http::{HeaderValue, Request};

use super::{OutboundCtx, peer_headers};
use crate::balance::Outcome;
use crate::proxy::ProxyBody;
use crate::state::{Mirror, Snapshot};

/// A mirrored request gets this long to answer. 10 s bounds the work a slow shadow service can
/// pile up in the proxy; its answer is discarded anyway.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a copy of a bodyless request to the mirror service for `m.permille` of requests.
/// Requests with a body are not mirrored: that would mean buffering the body.
pub(super) fn maybe_mirror(
    ctx: &OutboundCtx,
    snap: &Snapshot,
    m: &Mirror,
    parts: &Parts,
    bodyless: bool,
) {
    if !bodyless || rand::random_range(0..1000u16) >= m.permille {
        return;
    }
    let known = snap.lb(&m.service).cloned();
    let mut copy = clone_parts(parts);
    if let Ok(host) = HeaderValue::try_from(&*m.service) {
        copy.headers.insert(HOST, host);
    }
    let (ctx, service, subset) = (ctx.clone(), m.service.clone(), m.subset.clone());
    let from_h2 = parts.version == http::Version::HTTP_2;
    tokio::spawn(async move {
        // A mirror target this proxy never called is not subscribed yet: subscribe on demand
        // as a request to it would. Only the copy waits; the client's request does not.
        let lb = match known {
            Some(lb) => lb,
            None => {
                let wait = ctx.inner.cfg.discovery_wait;
                let Some(lb) = super::known(&ctx.inner.state, &service, wait)
                    .await
                    .lb(&service)
                    .cloned()
                else {
                    tracing::debug!(%service, "mirror target unknown");
                    return;
                };
                lb
            }
        };
        let Some(ep) = lb
            .subset(subset.as_deref())
            .and_then(|s| s.pick(None))
            .cloned()
        else {
            return;
        };
        peer_headers::mesh_headers(&mut copy.headers, &ep, from_h2);
        let req = Request::from_parts(copy, ProxyBody::empty());
        let h2 = ep.endpoint.is_meshed() || from_h2;
        let guard = ep.start();
        let sent = ctx.inner.clients.send(
            req,
            ep.endpoint.addr,
            &ep.authority,
            h2,
            ep.endpoint.identity.as_ref(),
        );
        let outcome = match tokio::time::timeout(MIRROR_TIMEOUT, sent).await {
            Ok(Ok(rsp)) => Outcome::Status(rsp.status().as_u16()),
            _ => Outcome::Failed,
        };
        guard.finish(outcome);
    });
}

/// A copy of the request head (extensions are not carried).
fn clone_parts(p: &Parts) -> Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = p.method.clone();
    parts.uri = p.uri.clone();
    parts.version = p.version;
    parts.headers = p.headers.clone();
    parts
}
