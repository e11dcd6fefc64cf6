//! Mutual TLS between sidecars: rustls configs, SPIFFE-checking verifiers, inbound accept and outbound connect.
//!
//! Everything reads the sidecar's [`CertStore`](crate::identity::CertStore) at handshake time,
//! so certificate rotation and trust-bundle changes apply to the next handshake without
//! rebuilding anything and without touching established connections.
//!
//! Inbound (the data path's listener):
//! ```ignore
//! let acceptor = MeshAcceptor::new(store.clone());
//! let (tcp, _) = listener.accept().await?;
//! let (stream, peer) = acceptor.accept(tcp, InboundMode::Strict).await?;
//! // peer: PeerIdentity::Mtls { id, alpn } → authorization, logs, metrics, spans;
//! //       PeerIdentity::Plaintext only in permissive/disabled mode.
//! ```
//! Outbound (to a peer sidecar whose identity the control plane published for the endpoint):
//! ```ignore
//! let connector = MeshConnector::new(store.clone());
//! let tls = connector.connect(addr, &endpoint_identity, Alpn::H2).await?;
//! ```
//! The client refuses a server whose chain does not lead to the bundle, is expired, or whose
//! URI SAN is not exactly `endpoint_identity`. Only TLS 1.3 is offered; ALPN is `h2` for
//! multiplexed HTTP and `mesh-tcp` for opaque TCP. Session resumption is off: every connection
//! is a full handshake, so each one re-checks the peer against the current bundle.
//!
//! Every failed handshake (either side) is counted by reason in
//! `mesh_tls_handshake_failures_total` ([`HandshakeFailures`]).

mod bundle;
mod client;
mod detect;
mod failures;
mod mode_proto;
mod resolve;
mod server;
mod verify;

use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;

pub use bundle::{BundleError, TrustBundle};
pub use client::{ConnectError, MeshConnector};
pub use detect::{DETECT_TIMEOUT, Detected, detect};
pub use failures::{FailureReason, HandshakeFailures, HandshakeSide, count as handshake_failures};
pub use mode_proto::UnknownTlsMode;
pub use resolve::CertResolver;
pub use server::{AcceptError, InboundMode, InboundStream, MeshAcceptor, PeerIdentity};
pub use verify::{MeshClientVerifier, MeshServerVerifier, PeerCertError, peer_spiffe_id};

/// Full TLS handshakes are bounded: a peer that connects and stalls must not hold a task.
/// 10 s covers a loaded peer on a slow network many times over (a loopback handshake is ~1 ms).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The application protocol inside a mesh TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// Multiplexed HTTP (any HTTP version is carried as HTTP/2 between sidecars).
    H2,
    /// Opaque TCP with the `MESH-TCP <port>\n` preamble.
    MeshTcp,
    /// HTTP/1.1 for a request that upgrades its connection (WebSocket): the connection
    /// becomes the tunnel, so it cannot share a multiplexed HTTP/2 connection.
    Http1,
}

impl Alpn {
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            Alpn::H2 => b"h2",
            Alpn::MeshTcp => b"mesh-tcp",
            Alpn::Http1 => b"http/1.1",
        }
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            b"h2" => Some(Alpn::H2),
            b"mesh-tcp" => Some(Alpn::MeshTcp),
            b"http/1.1" => Some(Alpn::Http1),
            _ => None,
        }
    }
}

/// The ring provider, passed explicitly everywhere so no process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}
