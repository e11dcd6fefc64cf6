//! The channel to the control plane (discovery and identity): TLS verified against the mesh
//! bundle and the URL's host, presenting the workload certificate of the moment (read from
//! the `CertStore` at every handshake), so the control plane knows who the proxy is and a
//! renewal proves the current certificate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use super::store::CertStore;
use crate::tls::{Alpn, CertResolver, provider};

/// TLS to the control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlTlsError {
    #[error("trust bundle: {0}")]
    Bundle(String),
    #[error("control plane host {0:?} is not a DNS name or IP address")]
    Host(String),
    #[error("control plane URL {0:?}: {1}")]
    Url(String, String),
}

/// Dials TCP, then TLS, for tonic (`connect_with_connector`).
#[derive(Clone)]
struct Connector {
    tls: ControlTls,
}

// === impl ControlTls ===

impl ControlTls {
    /// Trusts only `bundle_pem` (the operator's root file) and checks the control plane's
    /// certificate names `host`; presents `workload`'s current certificate when it has one.
    pub fn new(
        bundle_pem: &[String],
        host: &str,
        workload: Option<Arc<CertStore>>,
    ) -> Result<Self, ControlTlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for pem in bundle_pem {
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let der = der.map_err(|e| ControlTlsError::Bundle(e.to_string()))?;
                roots
                    .add(der)
                    .map_err(|e| ControlTlsError::Bundle(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(ControlTlsError::Bundle("no certificate in it".into()));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| ControlTlsError::Host(host.to_string()))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ControlTlsError::Bundle(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match workload {
            Some(store) => builder.with_client_cert_resolver(Arc::new(CertResolver::new(store))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![Alpn::H2.as_bytes().to_vec()];
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }

    /// A tonic endpoint for `url` whose connections this TLS wraps. The URI handed to tonic
    /// says `http`: TLS is done here, not by tonic.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ControlTlsError> {
        let plain = match url.strip_prefix("https://") {
            Some(rest) => format!("http://{rest}"),
            None => url.to_string(),
        };
        Endpoint::from_shared(plain).map_err(|e| ControlTlsError::Url(url.into(), e.to_string()))
    }

    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        endpoint
            .connect_with_connector(Connector { tls: self.clone() })
            .await
    }

    /// A channel that connects on first use (and reconnects after failures).
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(Connector { tls: self.clone() })
    }
}

impl std::fmt::Debug for ControlTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

// === impl Connector ===

type Conn = TokioIo<TlsStream<TcpStream>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("control plane URL without a host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            let _ = tcp.set_nodelay(true);
            let io = TlsConnector::from(tls.config.clone())
                .connect(tls.server_name.clone(), tcp)
                .await?;
            Ok(TokioIo::new(io))
        })
    }
}
