//! The trust bundle: the mesh's root certificates as PEM, a rustls root store and a client-cert verifier over it.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BundleError {
    #[error("trust bundle is empty: the control plane sent no root certificate")]
    Empty,
    #[error("trust bundle root #{index} is not a valid PEM certificate: {detail}")]
    BadRoot { index: usize, detail: String },
    #[error("trust bundle unusable: {0}")]
    Verifier(String),
}

/// One immutable snapshot of the trusted roots. Swapped whole (in the `CertStore`) when the
/// control plane publishes a new bundle, e.g. old + new root during a root rotation.
pub struct TrustBundle {
    pem: Vec<String>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

// === impl TrustBundle ===

impl TrustBundle {
    /// Each entry may hold one or more PEM certificates.
    pub fn from_pem(pems: &[String]) -> Result<Self, BundleError> {
        let mut roots = RootCertStore::empty();
        for (index, pem) in pems.iter().enumerate() {
            let bad = |detail: String| BundleError::BadRoot { index, detail };
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no certificate".to_owned()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(BundleError::Empty);
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), super::provider())
                .build()
                .map_err(|e| BundleError::Verifier(e.to_string()))?;
        Ok(Self {
            pem: pems.to_vec(),
            roots,
            client_verifier,
        })
    }

    pub fn pem(&self) -> &[String] {
        &self.pem
    }

    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// Verifies client chains against these roots (client auth mandatory).
    pub(crate) fn client_verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.client_verifier
    }
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.roots.len())
            .finish()
    }
}
