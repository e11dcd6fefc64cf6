//! What a gRPC handler knows about the connection its request came on, as the control plane's
//! TLS listener (`serving`) established it: `request.extensions().get::<Peer>()`.

use std::net::SocketAddr;

use crate::ca::SpiffeId;

#[derive(Debug, Clone)]
pub struct Peer {
    pub remote: SocketAddr,
    /// The SPIFFE ID of a verified mesh client certificate; `None` for a client without one.
    pub identity: Option<SpiffeId>,
}
