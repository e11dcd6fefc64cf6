//! The accept-side transport seam: plaintext, or mTLS (`super::tls`) with the same shape.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::state::Name;
use crate::tls::Alpn;

/// What the transport learned about the peer.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The verified SPIFFE ID (`None` = unauthenticated plaintext).
    pub identity: Option<Name>,
    /// The negotiated ALPN (`None` on plaintext): `mesh-tcp` streams must start with the
    /// preamble, `h2` streams with the HTTP/2 preface.
    pub alpn: Option<Alpn>,
}

/// Wraps an accepted TCP connection (e.g. a TLS handshake) and reports the peer's identity.
pub trait Transport: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The connection's IO and what was verified about the peer.
    fn accept(&self, tcp: TcpStream) -> impl Future<Output = io::Result<(Self::Io, Peer)>> + Send;
}

/// No encryption, no identity: a sidecar without a workload certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plaintext;

impl Transport for Plaintext {
    type Io = TcpStream;

    async fn accept(&self, tcp: TcpStream) -> io::Result<(TcpStream, Peer)> {
        Ok((tcp, Peer::default()))
    }
}
