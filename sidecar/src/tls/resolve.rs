//! Certificate resolvers reading the `CertStore`, so a rotated certificate is used by the next handshake.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::identity::CertStore;

/// Serves the store's current certificate, as server and as client.
#[derive(Debug, Clone)]
pub struct CertResolver {
    store: Arc<CertStore>,
}

impl CertResolver {
    pub fn new(store: Arc<CertStore>) -> Self {
        Self { store }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.store.current()
    }
}

impl ResolvesClientCert for CertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.store.current()
    }

    fn has_certs(&self) -> bool {
        self.store.current().is_some()
    }
}
