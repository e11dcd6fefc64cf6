//! The mTLS inbound transport: accept per the Listener's TLS mode, report the peer SPIFFE ID.

use std::io;

use tokio::net::TcpStream;

use super::transport::{Peer, Transport};
use crate::state::{Name, StateHandle, TlsMode};
use crate::tls::{InboundMode, InboundStream, MeshAcceptor, PeerIdentity};

/// Accepts with [`MeshAcceptor`] in the mode of the current Listener resource (strict until
/// the control plane says otherwise: a sidecar with an identity never silently accepts
/// plaintext).
#[derive(Clone)]
pub struct MtlsTransport {
    acceptor: MeshAcceptor,
    state: StateHandle,
}

impl MtlsTransport {
    pub fn new(acceptor: MeshAcceptor, state: StateHandle) -> Self {
        Self { acceptor, state }
    }

    fn mode(&self) -> InboundMode {
        let snap = self.state.load();
        match snap.listener.as_ref().map(|l| l.tls_mode) {
            Some(TlsMode::Permissive) => InboundMode::Permissive,
            Some(TlsMode::Disabled) => InboundMode::Disabled,
            Some(TlsMode::Strict) | None => InboundMode::Strict,
        }
    }
}

impl Transport for MtlsTransport {
    type Io = InboundStream;

    async fn accept(&self, tcp: TcpStream) -> io::Result<(InboundStream, Peer)> {
        match self.acceptor.accept(tcp, self.mode()).await {
            Ok((io, PeerIdentity::Mtls { id, alpn })) => Ok((
                io,
                Peer {
                    identity: Some(Name::from(id.as_str())),
                    alpn,
                },
            )),
            Ok((io, PeerIdentity::Plaintext)) => Ok((io, Peer::default())),
            // The caller logs it and closes the connection; a plaintext client on a strict
            // port is refused here, before a byte reaches the app.
            Err(e) => Err(io::Error::other(e)),
        }
    }
}
