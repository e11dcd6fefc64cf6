//! Inbound TLS: the server config, strict/permissive/disabled modes and `MeshAcceptor::accept`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::NoServerSessionStorage;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::detect::{DETECT_TIMEOUT, Detected, detect};
use super::resolve::CertResolver;
use super::verify::{MeshClientVerifier, peer_spiffe_id};
use super::{Alpn, HANDSHAKE_TIMEOUT};
use crate::identity::{CertStore, SpiffeId};

/// TLS requirement of an inbound port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InboundMode {
    /// mTLS only; plaintext is refused. The default for meshed traffic.
    #[default]
    Strict,
    /// mTLS or plaintext (migration while some clients are not meshed yet).
    Permissive,
    /// Plaintext only; no TLS is attempted.
    Disabled,
}

/// Who is on the other end of an inbound connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// Verified client certificate; `alpn` is what was negotiated (the client always offers one).
    Mtls { id: SpiffeId, alpn: Option<Alpn> },
    /// No TLS (permissive or disabled mode): the peer is unauthenticated.
    Plaintext,
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("plaintext connection refused: this port requires mTLS (inbound mode strict)")]
    PlaintextRefused,
    #[error("peer closed the connection before sending anything")]
    Closed,
    #[error("protocol detection failed: {0}")]
    Detect(#[source] io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    #[error("TLS handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("no certificate yet: the sidecar has not obtained its identity from the control plane")]
    NoCertificate,
}

/// An accepted inbound connection, TLS or plain.
#[derive(Debug)]
pub enum InboundStream {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// Accepts inbound connections in any mode. Cheap to clone; build once per listener.
#[derive(Clone)]
pub struct MeshAcceptor {
    store: Arc<CertStore>,
    acceptor: TlsAcceptor,
}

// === impl MeshAcceptor ===

impl MeshAcceptor {
    pub fn new(store: Arc<CertStore>) -> Self {
        let config = server_config(store.clone());
        Self {
            store,
            acceptor: TlsAcceptor::from(config),
        }
    }

    /// Detects (permissive), refuses plaintext (strict) or skips TLS (disabled), runs the
    /// handshake and returns the stream with the peer's verified identity. Failures are
    /// counted by reason.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        mode: InboundMode,
    ) -> Result<(InboundStream, PeerIdentity), AcceptError> {
        let result = self.accept_inner(tcp, mode).await;
        if let Some(reason) = result.as_ref().err().and_then(AcceptError::reason) {
            super::failures::record(super::HandshakeSide::Inbound, reason);
        }
        result
    }

    async fn accept_inner(
        &self,
        tcp: TcpStream,
        mode: InboundMode,
    ) -> Result<(InboundStream, PeerIdentity), AcceptError> {
        if mode == InboundMode::Disabled {
            return Ok((InboundStream::Plain(tcp), PeerIdentity::Plaintext));
        }
        match detect(&tcp, DETECT_TIMEOUT)
            .await
            .map_err(AcceptError::Detect)?
        {
            Detected::Closed => return Err(AcceptError::Closed),
            Detected::Plaintext if mode == InboundMode::Permissive => {
                return Ok((InboundStream::Plain(tcp), PeerIdentity::Plaintext));
            }
            Detected::Plaintext => return Err(AcceptError::PlaintextRefused),
            Detected::Tls => {}
        }
        if self.store.current().is_none() {
            return Err(AcceptError::NoCertificate);
        }
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp))
            .await
            .map_err(|_| AcceptError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?
            .map_err(AcceptError::Handshake)?;
        let (_, conn) = tls.get_ref();
        let alpn = conn.alpn_protocol().and_then(Alpn::from_bytes);
        // The verifier already required exactly one valid SPIFFE ID; this cannot fail for a
        // completed handshake, but a missing one is treated as a handshake failure, not a panic.
        let id = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| handshake_io("no client certificate"))
            .and_then(|c| peer_spiffe_id(c).map_err(|e| handshake_io(&e.to_string())))
            .map_err(AcceptError::Handshake)?;
        Ok((
            InboundStream::Tls(Box::new(tls)),
            PeerIdentity::Mtls { id, alpn },
        ))
    }
}

fn handshake_io(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// TLS 1.3 only, client certificate mandatory, ALPN `h2` and `mesh-tcp`, no resumption.
fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        // The ring provider supports TLS 1.3; this cannot fail with it.
        .unwrap_or_else(|e| unreachable!("ring supports TLS 1.3: {e}"));
    let mut config = builder
        .with_client_cert_verifier(Arc::new(MeshClientVerifier::new(store.clone())))
        .with_cert_resolver(Arc::new(CertResolver::new(store)));
    config.alpn_protocols = vec![
        Alpn::H2.as_bytes().to_vec(),
        Alpn::MeshTcp.as_bytes().to_vec(),
        Alpn::Http1.as_bytes().to_vec(),
    ];
    // Full handshakes only: a resumed session would skip re-verifying the client against the
    // current bundle, and the peer identity must be fresh on every connection.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

// === impl InboundStream ===

impl InboundStream {
    pub fn get_ref(&self) -> &TcpStream {
        match self {
            InboundStream::Tls(t) => t.get_ref().0,
            InboundStream::Plain(t) => t,
        }
    }
}

impl AsyncRead for InboundStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            InboundStream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
            InboundStream::Plain(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for InboundStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            InboundStream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
            InboundStream::Plain(t) => Pin::new(t).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            InboundStream::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
            InboundStream::Plain(t) => Pin::new(t).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            InboundStream::Tls(t) => t.is_write_vectored(),
            InboundStream::Plain(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            InboundStream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
            InboundStream::Plain(t) => Pin::new(t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            InboundStream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
            InboundStream::Plain(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}
