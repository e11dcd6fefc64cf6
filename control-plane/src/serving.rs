//! The control plane's TLS listeners (discovery + identity, admin): its own serving
//! certificate, re-issued at half its life and swapped in without a restart; client
//! certificates verified against the CA's current trust bundle; the verified peer's SPIFFE ID
//! handed to the gRPC handlers (`request.extensions().get::<Peer>()`); a handshake deadline
//! and a cap on open connections so nothing unauthenticated holds resources for long.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::ca::{CaError, CertificateAuthority, SpiffeId};
use crate::identity_server::ControlPlaneTls;
use crate::peer::Peer;

/// A TLS handshake takes milliseconds on a LAN; 10 s tolerates a loaded host and still frees
/// the slot of a peer that opened a connection and never finished (or never started) one.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per port: above the 10,000 proxies one replica is sized for, low enough
/// that a flood of idle sockets cannot take every file descriptor. Connections past it are
/// closed at once (the client retries with backoff).
pub const MAX_CONNECTIONS: usize = 16_384;
/// Accepted connections waiting for tonic to take them; tonic takes them as fast as they come.
const ACCEPT_QUEUE: usize = 64;
/// After an accept error (e.g. out of file descriptors) wait this long before the next accept,
/// so the loop does not spin while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// When renewing the serving certificate failed, try again after this long (well inside the
/// remaining half of even a one-minute certificate).
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// The serving certificate and the rustls configuration built from it and the trust bundle.
pub struct ServingTls {
    ca: Arc<CertificateAuthority>,
    sans: Vec<String>,
    ttl: Duration,
    config: ArcSwap<rustls::ServerConfig>,
    not_after: ArcSwap<SystemTime>,
}

/// One accepted, handshaken connection.
pub struct TlsConn {
    io: TlsStream<TcpStream>,
    peer: Peer,
    _slot: OwnedSemaphorePermit,
}

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("serving TLS: {0}")]
    Tls(String),
}

// === impl ServingTls ===

impl ServingTls {
    /// Issues the first serving certificate (names `localhost`, `127.0.0.1`, `::1` and `sans`).
    pub fn new(
        ca: Arc<CertificateAuthority>,
        sans: Vec<String>,
        ttl: Duration,
    ) -> Result<Arc<Self>, ServingError> {
        let (config, not_after) = build(&ca, &sans, ttl)?;
        Ok(Arc::new(Self {
            ca,
            sans,
            ttl,
            config: ArcSwap::from_pointee(config),
            not_after: ArcSwap::from_pointee(not_after),
        }))
    }

    /// When the certificate in force expires.
    pub fn not_after(&self) -> SystemTime {
        **self.not_after.load()
    }

    /// Issues a new certificate and swaps it in: new handshakes present it, established
    /// connections (and their streams) are untouched. The trust bundle is re-read too.
    pub fn renew(&self) -> Result<(), ServingError> {
        let (config, not_after) = build(&self.ca, &self.sans, self.ttl)?;
        self.config.store(Arc::new(config));
        self.not_after.store(Arc::new(not_after));
        tracing::info!(
            not_after_unix = unix(not_after),
            "control plane serving certificate renewed"
        );
        Ok(())
    }

    /// Renews at half of each certificate's life, forever.
    pub async fn run_renewal(self: Arc<Self>) {
        loop {
            let left = self
                .not_after()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(left.min(self.ttl) / 2).await;
            while let Err(e) = self.renew() {
                tracing::error!(error = %e, "renewing the serving certificate failed; retrying");
                tokio::time::sleep(RENEW_RETRY).await;
            }
        }
    }

    /// Accepts on `listener` and yields connections whose TLS handshake completed in time.
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsConn, io::Error>> {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let tls = self.clone();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                // The server dropped its end (shutdown): stop accepting and free the port.
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = tx.closed() => return,
                };
                let (tcp, remote) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%remote, limit = MAX_CONNECTIONS, "connection limit reached; closing");
                    continue;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.load_full());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let io =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(io)) => io,
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    let identity = io
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(spiffe_of);
                    let peer = Peer { remote, identity };
                    let _ = tx
                        .send(Ok(TlsConn {
                            io,
                            peer,
                            _slot: slot,
                        }))
                        .await;
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

fn build(
    ca: &CertificateAuthority,
    sans: &[String],
    ttl: Duration,
) -> Result<(rustls::ServerConfig, SystemTime), ServingError> {
    let issued = ControlPlaneTls::issue_with_sans(ca, sans, ttl)?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ServingError::Tls(format!("serving certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
        .map_err(|e| ServingError::Tls(format!("serving key: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for pem in &issued.trust_bundle_pem {
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let der = der.map_err(|e| ServingError::Tls(format!("trust bundle: {e}")))?;
            roots
                .add(der)
                .map_err(|e| ServingError::Tls(format!("trust bundle: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // A client certificate is optional at the TLS layer (mesh-cli, bootstrapping sidecars
    // with a join token); each service decides what an unauthenticated caller may do.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ServingError::Tls(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServingError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ServingError::Tls(format!("serving certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, issued.not_after))
}

/// The SPIFFE ID in a certificate's URI SANs, if it has exactly one.
pub fn spiffe_of(cert: &CertificateDer<'_>) -> Option<SpiffeId> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, x509) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let san = x509.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) if u.starts_with("spiffe://") => SpiffeId::parse(u).ok(),
        _ => None,
    });
    let id = ids.next()?;
    ids.next().is_none().then_some(id)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl TlsConn ===

impl Connected for TlsConn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
