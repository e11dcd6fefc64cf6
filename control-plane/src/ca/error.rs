//! The CA's error type, classified so the gRPC edge can map it to a status code.

use super::csr::CsrError;
use super::pem::PemError;
use super::spiffe::SpiffeError;
use super::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The requested identity is malformed.
    #[error("invalid identity: {0}")]
    Identity(#[from] SpiffeError),
    /// The caller asked for an identity other than the one it is authorised for.
    #[error("identity {requested:?} requested, but the join token is bound to {authorised}")]
    IdentityMismatch {
        requested: String,
        authorised: String,
    },
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// Operator-supplied or stored CA material is unusable.
    #[error("CA material: {0}")]
    Material(String),
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
}

impl CaError {
    /// True when the caller sent something unusable (maps to InvalidArgument).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            CaError::Identity(_)
                | CaError::Csr(
                    CsrError::TooLarge(_) | CsrError::Garbage(_) | CsrError::Unacceptable(_)
                )
        )
    }

    /// True when the caller asked for an identity it may not have (maps to PermissionDenied).
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            CaError::IdentityMismatch { .. } | CaError::Csr(CsrError::Mismatch { .. })
        )
    }
}
