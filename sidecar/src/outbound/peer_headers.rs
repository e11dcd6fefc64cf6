//! The headers a request carries to a peer sidecar: the target app port and the protocol its
//! app gets. Shared by the forwarded request and its mirrored copy.

use http::HeaderValue;

use crate::balance::LbEndpoint;
use crate::proxy::headers::{MESH_APP_PORT, MESH_ORIG_PROTO};

/// Marks the request for a peer sidecar: the target app port and the protocol its app gets
/// (`from_h2`: HTTP/2).
pub(super) fn mesh_headers(headers: &mut http::HeaderMap, ep: &LbEndpoint, from_h2: bool) {
    if !ep.endpoint.is_meshed() {
        return;
    }
    if ep.endpoint.app_port != 0 {
        headers.insert(MESH_APP_PORT, HeaderValue::from(ep.endpoint.app_port));
    }
    // Always sent to a peer: it restores exactly this version for the app.
    let proto = if from_h2 { "h2" } else { "h1" };
    headers.insert(MESH_ORIG_PROTO, HeaderValue::from_static(proto));
}
