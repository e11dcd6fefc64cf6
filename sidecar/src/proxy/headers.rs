//! Header hygiene: hop-by-hop removal (RFC 9110 §7.6.1), forwarding and request-id headers.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Target app port, sent by the client sidecar and removed by the server sidecar.
pub const MESH_APP_PORT: HeaderName = HeaderName::from_static("x-mesh-app-port");
/// The protocol the client app spoke (`h2`), so the server sidecar can restore it.
pub const MESH_ORIG_PROTO: HeaderName = HeaderName::from_static("x-mesh-orig-proto");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// True for an HTTP/1.1 upgrade request or a 101 response (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// True for the names [`strip_hop_by_hop`] acts on (the `Connection`-named ones aside, which
/// only exist when `Connection` does).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::TE || *name == header::UPGRADE || is_always_removed(name)
}

/// The hop-by-hop names removed whatever their value.
fn is_always_removed(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TRANSFER_ENCODING
        || *name == header::PROXY_AUTHORIZATION
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers: the fixed set and every header the `Connection` header names.
/// `TE: trailers` survives (gRPC needs it end to end); with `keep_upgrade` the
/// `Connection: upgrade` and `Upgrade` headers survive so the next hop can switch protocols.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them (every h2 message, most responses): one pass over the
    // few distinct names is cheaper than the seven hashed removals below.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // Names listed in Connection are hop-by-hop too. Collecting them allocates, but only
        // for messages whose Connection header names more than the fixed set (`keep-alive`,
        // the usual one, is removed below anyway).
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(keep_upgrade && *n == header::UPGRADE))
            .filter(|n| !is_always_removed(n))
            .collect();
        for n in named {
            headers.remove(n);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::PROXY_AUTHORIZATION);
    if let Some(te) = headers.get(header::TE)
        && !has_token(te, "trailers")
    {
        headers.remove(header::TE);
    } else if headers.contains_key(header::TE) {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade && headers.contains_key(header::UPGRADE) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Adds `x-forwarded-for: <client ip>` when the request carries none.
pub fn add_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    if headers.contains_key(X_FORWARDED_FOR) {
        return;
    }
    // A sidecar's clients are nearly always one address (the local app outbound, a few peer
    // sidecars inbound): keep the last formatted value per thread, so a request costs a
    // refcount instead of formatting and allocating the address.
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let value = LAST.with_borrow_mut(|last| match last {
        Some((ip, v)) if *ip == client => Some(v.clone()),
        _ => {
            let v = HeaderValue::try_from(client.to_string()).ok()?;
            *last = Some((client, v.clone()));
            Some(v)
        }
    });
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Adds a random `x-request-id` (128 bits, hex) when the request carries none.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if headers.contains_key(X_REQUEST_ID) {
        return;
    }
    let id: u128 = rand::random();
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    if let Ok(v) = HeaderValue::from_bytes(&buf) {
        headers.insert(X_REQUEST_ID, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key(header::UPGRADE));
        assert_eq!(h[header::TE], "trailers");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn keeps_upgrade_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert!(is_upgrade(&h));
    }

    #[test]
    fn request_id_and_xff_added_once() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h[X_REQUEST_ID].clone();
        assert_eq!(id.len(), 32);
        ensure_request_id(&mut h);
        assert_eq!(h[X_REQUEST_ID], id);
        add_forwarded_for(&mut h, [10, 0, 0, 1].into());
        add_forwarded_for(&mut h, [10, 0, 0, 2].into());
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1");
        // The per-thread cache follows the client address.
        for ip in ["10.0.0.2", "10.0.0.2", "::1", "10.0.0.2"] {
            let mut h = HeaderMap::new();
            add_forwarded_for(&mut h, ip.parse().unwrap());
            assert_eq!(h[X_FORWARDED_FOR], ip);
        }
    }

    #[test]
    fn untouched_without_hop_by_hop_and_connection_lists_fixed_names() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert("x-a", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-a"),
        );
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key(KEEP_ALIVE));
        assert!(!h.contains_key("x-a"));
        assert_eq!(h.len(), 1);
    }
}
