//! Outbound TLS: `MeshConnector::connect` to a peer sidecar, verifying the identity published for that endpoint.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::resolve::CertResolver;
use super::verify::MeshServerVerifier;
use super::{Alpn, HANDSHAKE_TIMEOUT};
use crate::identity::{CertStore, SpiffeId};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Includes a server with the wrong identity, a foreign CA or an expired certificate
    /// (the message says which).
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {addr} did not finish within {timeout:?}")]
    HandshakeTimeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} did not agree to ALPN {wanted:?}; is it a mesh sidecar inbound port?")]
    Alpn { addr: SocketAddr, wanted: Alpn },
    #[error("no certificate yet: the sidecar has not obtained its identity from the control plane")]
    NoCertificate,
}

/// Opens mTLS connections to peer sidecars. Cheap to clone; build once.
#[derive(Debug, Clone)]
pub struct MeshConnector {
    store: Arc<CertStore>,
    resolver: Arc<CertResolver>,
}

/// The process's connector, for background work that has no handle plumbed to it (active
/// health checks, started from inside a snapshot update).
static PROCESS: OnceLock<MeshConnector> = OnceLock::new();

impl MeshConnector {
    /// Makes this the process's connector ([`Self::process`]); the first call wins (a
    /// sidecar has one identity for its whole life).
    pub fn install_for_process(&self) {
        let _ = PROCESS.set(self.clone());
    }

    /// The connector installed for this process; `None` in a sidecar without an identity.
    pub fn process() -> Option<&'static MeshConnector> {
        PROCESS.get()
    }

    pub fn new(store: Arc<CertStore>) -> Self {
        Self {
            resolver: Arc::new(CertResolver::new(store.clone())),
            store,
        }
    }

    /// A client config that accepts only a server proving `expected`. Built per connection:
    /// it is a handful of `Arc` clones, negligible next to the handshake's signatures.
    pub fn client_config(&self, expected: &SpiffeId, alpn: Alpn) -> Arc<ClientConfig> {
        let verifier = Arc::new(MeshServerVerifier::new(
            self.store.clone(),
            expected.clone(),
        ));
        let mut config = ClientConfig::builder_with_provider(super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap_or_else(|e| unreachable!("ring supports TLS 1.3: {e}"))
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        // Full handshakes only, so every connection re-verifies the server (see module docs).
        config.resumption = Resumption::disabled();
        // No SNI: peers are named by SPIFFE ID; an IP server name is never sent anyway.
        config.enable_sni = false;
        Arc::new(config)
    }

    /// Connects over TCP and runs the handshake.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: &SpiffeId,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        self.handshake(tcp, addr, expected, alpn).await
    }

    /// Runs the handshake on a TCP stream the caller connected (with its own timeouts and
    /// socket options). Failures are counted by reason.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        expected: &SpiffeId,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        let result = self.handshake_inner(tcp, addr, expected, alpn).await;
        if let Some(reason) = result.as_ref().err().and_then(ConnectError::reason) {
            super::failures::record(super::HandshakeSide::Outbound, reason);
        }
        result
    }

    async fn handshake_inner(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        expected: &SpiffeId,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        if self.store.current().is_none() {
            return Err(ConnectError::NoCertificate);
        }
        let connector = TlsConnector::from(self.client_config(expected, alpn));
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::HandshakeTimeout {
                addr,
                timeout: HANDSHAKE_TIMEOUT,
            })?
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        if tls.get_ref().1.alpn_protocol() != Some(alpn.as_bytes()) {
            return Err(ConnectError::Alpn { addr, wanted: alpn });
        }
        Ok(tls)
    }
}
