//! Which service a request or connection is for, and waiting for discovery to know it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::state::{Snapshot, StateHandle};

/// The service named by an authority or host: port stripped, lower-cased, and a
/// `.<ns>`, `.<ns>.svc` or `.<ns>.svc.<trust-domain>` suffix removed. Other dotted names
/// (external hosts) are returned whole.
pub fn service_name(authority: &str) -> Cow<'_, str> {
    let host = strip_port(authority).trim_end_matches('.');
    let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    let Some((first, rest)) = host.split_once('.') else {
        return host;
    };
    let mut labels = rest.split('.');
    let _ns = labels.next();
    let is_mesh_suffix = match labels.next() {
        None => true,
        Some("svc") => true,
        Some(_) => false,
    };
    if !is_mesh_suffix {
        return host;
    }
    match host {
        Cow::Borrowed(h) => Cow::Borrowed(&h[..first.len()]),
        Cow::Owned(ref h) => Cow::Owned(h[..first.len()].to_owned()),
    }
}

/// The port of an authority, if any.
pub fn port_of(authority: &str) -> Option<u16> {
    let host = strip_port(authority);
    authority.get(host.len() + 1..)?.parse().ok()
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The current snapshot once it knows `service` (or `wait` has passed): asks the discovery
/// client for unknown services and waits for its answer.
pub async fn known(state: &StateHandle, service: &str, wait: Duration) -> Arc<Snapshot> {
    let snap = state.snapshot();
    if snap.knows(service) {
        return snap;
    }
    // Subscribe before asking, so an answer arriving in between is not missed.
    let mut changed = state.changed();
    state.want(service);
    let _ = tokio::time::timeout(wait, async {
        while changed.changed().await.is_ok() {
            if state.load().knows(service) {
                break;
            }
        }
    })
    .await;
    state.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_authorities() {
        assert_eq!(service_name("reviews"), "reviews");
        assert_eq!(service_name("reviews:9080"), "reviews");
        assert_eq!(service_name("Reviews.Default:80"), "reviews");
        assert_eq!(service_name("reviews.default.svc"), "reviews");
        assert_eq!(service_name("reviews.default.svc.cluster.local"), "reviews");
        assert_eq!(service_name("www.example.com"), "www.example.com");
        assert_eq!(service_name("[::1]:80"), "::1");
        assert_eq!(port_of("reviews:9080"), Some(9080));
        assert_eq!(port_of("reviews"), None);
    }
}
