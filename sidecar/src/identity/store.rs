//! `CertStore`: the sidecar's current certificate and trust bundle, swapped atomically and read lock-free.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::credentials::Credentials;
use super::spiffe::SpiffeId;
use crate::tls::TrustBundle;

/// Read on every handshake (`current`, `trust_bundle`: one atomic load each); written by the
/// rotation task and by discovery (trust bundle). Established connections keep the
/// certificate they started with; only new handshakes see a swap.
pub struct CertStore {
    identity: SpiffeId,
    credentials: ArcSwapOption<Credentials>,
    bundle: ArcSwap<TrustBundle>,
    /// Bumped on every credentials swap, so tasks can wait for the first certificate or a rotation.
    changes: watch::Sender<u64>,
}

impl CertStore {
    /// A store for `identity`, trusting `bundle` until the control plane says otherwise.
    pub fn new(identity: SpiffeId, bundle: TrustBundle) -> Arc<Self> {
        Arc::new(Self {
            identity,
            credentials: ArcSwapOption::empty(),
            bundle: ArcSwap::from_pointee(bundle),
            changes: watch::Sender::new(0),
        })
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The certificate and key to present, if one was obtained.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.credentials
            .load()
            .as_ref()
            .map(|c| c.certified.clone())
    }

    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credentials.load_full()
    }

    pub fn set_credentials(&self, credentials: Credentials) {
        self.credentials.store(Some(Arc::new(credentials)));
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn trust_bundle(&self) -> Arc<TrustBundle> {
        self.bundle.load_full()
    }

    /// Replaces the trusted roots (from the `Runtime` resource or a Certify response).
    pub fn set_trust_bundle(&self, bundle: TrustBundle) {
        self.bundle.store(Arc::new(bundle));
    }

    /// Value of the `mesh_cert_expiration_timestamp_seconds` gauge: the current leaf's
    /// notAfter in Unix seconds, `None` before the first certificate.
    pub fn expiration_timestamp_seconds(&self) -> Option<i64> {
        self.credentials.load().as_ref().map(|c| unix(c.not_after))
    }

    /// How many times the certificate was set (0 = none yet).
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Resolves once a certificate is present (immediately if one already is).
    pub async fn ready(&self) {
        let mut rx = self.changes.subscribe();
        // `wait_for` checks the current value first; the sender lives as long as `self`.
        let _ = rx.wait_for(|n| *n > 0).await;
    }
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("identity", &self.identity)
            .field("expires", &self.expiration_timestamp_seconds())
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
