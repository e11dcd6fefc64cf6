//! Workload identity: the sidecar's key, its certificate from the control plane, and rotation.
//!
//! Start-up, in order (the sidecar's app wiring does this):
//! 1. `let token = JoinToken::resolve(std::env::var(TOKEN_ENV).ok(), token_file)?;`
//! 2. `let store = CertStore::new(identity, TrustBundle::from_pem(&bootstrap_roots)?);` — the
//!    bootstrap roots (operator's root file) also verify the control plane's TLS certificate
//!    ([`ControlTls::new`]`(&roots, host, Some(store))` for the tonic channels, which present
//!    the store's current certificate).
//! 3. `tokio::spawn(Rotation { client, token, store: store.clone(), ttl: None }.run());` then
//!    `store.ready().await` before serving mTLS. The key is generated in-process
//!    ([`WorkloadKey`]) and never leaves it; each renewal uses a fresh key.
//! 4. Hand `store` to [`crate::tls::MeshAcceptor`] / [`crate::tls::MeshConnector`]; feed
//!    `Runtime.trust_bundle_pem` updates to `store.set_trust_bundle`; export
//!    `store.expiration_timestamp_seconds()` as `mesh_cert_expiration_timestamp_seconds`.
//!    An empty bundle in a resource is refused by `TrustBundle::from_pem` (keep the old one).
//! 5. Inbound authorization is `inbound::authz`: the `state` domain's AuthorizationPolicy,
//!    evaluated with the peer from `tls::PeerIdentity`.
//!
//! The join token is used for the first certificate (and again only if the current one has
//! expired); a renewal proves the current certificate over mTLS, so a workload keeps its
//! identity for as long as it runs, however short its token's life. Revoking the identity
//! (`mesh-cli identity revoke`) stops its renewals and its discovery streams.

mod channel;
mod client;
mod credentials;
mod rotate;
mod spiffe;
mod store;

pub use channel::{ControlTls, ControlTlsError};
pub use client::{IdentityError, JoinToken, TOKEN_ENV, certify};
pub use credentials::{Credentials, CredentialsError, WorkloadKey};
pub use rotate::{Rotation, renew_delay};
pub use spiffe::{SpiffeError, SpiffeId, TrustDomain};
pub use store::CertStore;
