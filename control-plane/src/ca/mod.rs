//! The mesh certificate authority: SPIFFE identities, join tokens, CSR signing and the trust bundle.
//!
//! How the pieces fit:
//! - [`CertificateAuthority::load_or_create`] loads the CA from a [`CaStorage`] (the data dir:
//!   [`FileCaStorage`]) or creates a self-signed ECDSA P-256 root on first start;
//!   [`CertificateAuthority::from_operator_files`] uses an operator's root or intermediate.
//! - [`JoinTokens`] creates tokens bound to one [`SpiffeId`] (only the SHA-256 hash is stored,
//!   through a [`TokenStore`] the store owner implements), verifies and revokes them.
//! - A proxy proves its identity with a token; [`CertificateAuthority::certify`] signs its CSR
//!   if the requested identity (field and CSR URI SAN) equals the token's. The leaf carries the
//!   URI SAN only, EKU serverAuth + clientAuth, default lifetime 24 h (capped at 7 days).
//! - [`CertificateAuthority::trust_bundle`] lists every trusted root; `rotate_root` adds a new
//!   one (old + new trusted during the overlap), `retire_root` ends the overlap. Publish the
//!   bundle in the `Runtime` resource so proxies follow rotations.
//!
//! Garbage input is refused with a [`CaError`] and never changes CA state: signing only reads
//! the current state snapshot.

mod authority;
mod csr;
mod error;
mod material;
mod pem;
mod spiffe;
mod storage;
mod token;

pub use authority::{
    CaConfig, CertificateAuthority, DEFAULT_LEAF_TTL, DEFAULT_ROOT_VALIDITY, IssuedCert,
    MAX_LEAF_TTL, MIN_LEAF_TTL,
};
pub use csr::{CsrError, MAX_CSR_LEN};
pub use error::CaError;
pub use pem::{PemError, encode_cert, parse_certs};
pub use spiffe::{SpiffeError, SpiffeId, TrustDomain};
pub use storage::{CaMaterial, CaStorage, FileCaStorage, MemoryCaStorage, StorageError};
pub use token::{
    DEFAULT_TOKEN_TTL, JoinToken, JoinTokens, MAX_TOKEN_TTL, MemoryTokenStore, TokenError,
    TokenRecord, TokenStore,
};
