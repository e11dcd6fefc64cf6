//! The accept-side transport seam: plaintext today; mTLS plugs in here with the same shape.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::state::Name;

/// Wraps an accepted TCP connection (e.g. a TLS handshake) and reports the peer's identity.
pub trait Transport: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The connection's IO and the verified peer identity (`None` = unauthenticated).
    fn accept(
        &self,
        tcp: TcpStream,
    ) -> impl Future<Output = io::Result<(Self::Io, Option<Name>)>> + Send;
}

/// No encryption, no identity: the transport until mTLS lands.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plaintext;

impl Transport for Plaintext {
    type Io = TcpStream;

    async fn accept(&self, tcp: TcpStream) -> io::Result<(TcpStream, Option<Name>)> {
        Ok((tcp, None))
    }
}
