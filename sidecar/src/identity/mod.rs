//! Workload identity: the sidecar's key, its certificate from the control plane, and rotation.
//!
//! Start-up, in order (the sidecar's app wiring does this):
//! 1. `let token = JoinToken::resolve(std::env::var(TOKEN_ENV).ok(), token_file)?;`
//! 2. `let store = CertStore::new(identity, TrustBundle::from_pem(&bootstrap_roots)?);` — the
//!    bootstrap roots (operator's root file) also verify the control plane's TLS certificate
//!    (`control_plane_tls(&roots, "localhost")` for the tonic channel).
//! 3. `tokio::spawn(Rotation { client, token, store: store.clone(), ttl: None }.run());` then
//!    `store.ready().await` before serving mTLS. The key is generated in-process
//!    ([`WorkloadKey`]) and never leaves it; each renewal uses a fresh key.
//! 4. Hand `store` to [`crate::tls::MeshAcceptor`] / [`crate::tls::MeshConnector`]; feed
//!    `Runtime.trust_bundle_pem` updates to `store.set_trust_bundle`; export
//!    `store.expiration_timestamp_seconds()` as `mesh_cert_expiration_timestamp_seconds`.

mod client;
mod credentials;
mod rotate;
mod spiffe;
mod store;

pub use client::{IdentityError, JoinToken, TOKEN_ENV, certify, control_plane_tls};
pub use credentials::{Credentials, CredentialsError, WorkloadKey};
pub use rotate::{Rotation, renew_delay};
pub use spiffe::{SpiffeError, SpiffeId, TrustDomain};
pub use store::CertStore;
