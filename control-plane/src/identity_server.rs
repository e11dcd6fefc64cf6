//! The `mesh.identity.v1.Identity` gRPC service over the CA, and the control plane's own server TLS.
//!
//! - [`IdentityService`]: `Certify` = verify the join token → check the requested identity →
//!   sign the CSR. Status codes: `Unauthenticated` (unknown, revoked or expired token),
//!   `PermissionDenied` (identity differs from the token's), `InvalidArgument` (garbage CSR or
//!   identity), `ResourceExhausted` (too many concurrent requests; retry with backoff).
//!   Serve it with `IdentityService::new(ca, tokens).into_server()`.
//! - [`ControlPlaneTls`]: a server certificate for the control plane itself, issued by the CA
//!   for `spiffe://<td>/ns/mesh-system/sa/control-plane` + DNS `localhost` + IPs `127.0.0.1`
//!   and `::1`, as a tonic [`ServerTlsConfig`] (`Server::builder().tls_config(..)`), served on
//!   the discovery and the admin port. Client certificates are optional (admin callers may
//!   present one) and verified against the bundle. Sidecars and `mesh-cli` verify it with the
//!   trust bundle and the host of the URL they dial (`127.0.0.1`, `localhost`, a SAN).
//!
//! Wiring in the control plane's start-up:
//! ```ignore
//! let storage = Arc::new(FileCaStorage::new(data_dir.join("ca")));
//! let ca = Arc::new(CertificateAuthority::load_or_create(CaConfig { trust_domain, ..Default::default() }, storage)?);
//! let tokens = JoinTokens::new(store_backed_token_store);      // impl TokenStore over the store
//! let tls = ControlPlaneTls::issue(&ca)?;
//! Server::builder().tls_config(tls.tonic_config())?
//!     .add_service(IdentityService::new(ca.clone(), tokens.clone()).into_server())
//!     .add_service(discovery) ...;
//! // Runtime resource: trust_bundle_pem = ca.trust_bundle() (republish after rotate_root).
//! // Admin API: CreateToken → tokens.create(td.workload(ns, sa)?, ttl) → (secret shown once,
//! // record.id, record.identity, record.expires_unix); ListTokens → tokens.list();
//! // RevokeToken → tokens.revoke(id).
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_proto::identity::v1::identity_server::{Identity, IdentityServer};
use mesh_proto::identity::v1::{CertifyRequest, CertifyResponse};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio::sync::Semaphore;
use tonic::transport::{Certificate, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::ca::{CaError, CertificateAuthority, JoinTokens, SpiffeId, TokenError};
use crate::peer::Peer;

/// Signing costs ~0.1 ms of CPU; 64 in flight absorbs a whole node of sidecars starting at
/// once while bounding what a flood of requests can take from discovery on the same runtime.
const MAX_CONCURRENT_CERTIFY: usize = 64;
/// Namespace and service account of the control plane's own identity.
pub const CONTROL_PLANE_NAMESPACE: &str = "mesh-system";
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "control-plane";
/// Lifetime of a serving certificate issued with [`ControlPlaneTls::issue`] (in-process test
/// servers); the control plane's own listeners renew theirs (`serving::ServingTls`).
const TEST_SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Whether an identity was revoked (`mesh-cli identity revoke`).
pub type Revocations = Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>;

/// Serves `Identity.Certify` from a CA and a token registry.
#[derive(Clone)]
pub struct IdentityService {
    ca: Arc<CertificateAuthority>,
    tokens: JoinTokens,
    inflight: Arc<Semaphore>,
    revoked: Revocations,
}

/// The control plane's own TLS identity, PEM.
#[derive(Clone)]
pub struct ControlPlaneTls {
    pub identity: SpiffeId,
    /// Leaf followed by intermediates.
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub trust_bundle_pem: Vec<String>,
    pub not_after: SystemTime,
}

// === impl IdentityService ===

impl IdentityService {
    pub fn new(ca: Arc<CertificateAuthority>, tokens: JoinTokens) -> Self {
        Self {
            ca,
            tokens,
            inflight: Arc::new(Semaphore::new(MAX_CONCURRENT_CERTIFY)),
            revoked: Arc::new(|_| false),
        }
    }

    /// Refuses certificates (first ones and renewals) for identities `revoked` names.
    pub fn with_revocations(mut self, revoked: Revocations) -> Self {
        self.revoked = revoked;
        self
    }

    pub fn into_server(self) -> IdentityServer<Self> {
        IdentityServer::new(self)
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let _permit = self.inflight.try_acquire().map_err(|_| {
            Status::resource_exhausted(
                "too many concurrent certificate requests; retry with backoff",
            )
        })?;
        // A renewal proves the current certificate (mTLS) instead of a token, so a workload
        // keeps its identity for as long as it runs, however short its join token's life.
        let peer = request
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.identity.clone());
        let req = request.into_inner();
        let authorised = match (req.token.is_empty(), peer) {
            (false, _) => self.tokens.verify(&req.token).map_err(token_status)?,
            (true, Some(id)) => id,
            (true, None) => {
                return Err(Status::unauthenticated(
                    "no join token and no mesh client certificate: a first certificate needs a join token, a renewal the current certificate",
                ));
            }
        };
        if (self.revoked)(&authorised) {
            tracing::warn!(identity = %authorised, "certificate request for a revoked identity");
            return Err(Status::permission_denied(format!(
                "identity {authorised} was revoked"
            )));
        }
        let ttl = (req.requested_ttl_secs > 0).then(|| Duration::from_secs(req.requested_ttl_secs));
        let issued = self
            .ca
            .certify(&authorised, &req.identity, &req.csr_der, ttl)
            .map_err(|e| ca_status(&authorised, e))?;
        let not_after_unix = issued
            .not_after
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        tracing::info!(identity = %authorised, not_after_unix, "issued workload certificate");
        Ok(Response::new(CertifyResponse {
            leaf_pem: issued.leaf_pem,
            chain_pem: issued.chain_pem,
            trust_bundle_pem: issued.trust_bundle_pem,
            not_after_unix,
        }))
    }
}

fn token_status(e: TokenError) -> Status {
    match e {
        TokenError::Store(_) => Status::unavailable(e.to_string()),
        _ => {
            tracing::warn!(error = %e, "certificate request with a bad join token");
            Status::unauthenticated(e.to_string())
        }
    }
}

fn ca_status(authorised: &SpiffeId, e: CaError) -> Status {
    if e.is_denied() {
        tracing::warn!(%authorised, error = %e, "certificate request for another identity");
        Status::permission_denied(e.to_string())
    } else if e.is_bad_request() {
        Status::invalid_argument(e.to_string())
    } else {
        tracing::error!(error = %e, "certificate authority failure");
        Status::internal(e.to_string())
    }
}

// === impl ControlPlaneTls ===

impl ControlPlaneTls {
    /// Generates a fresh key and has `ca` issue the control plane's server certificate.
    pub fn issue(ca: &CertificateAuthority) -> Result<Self, CaError> {
        Self::issue_with_sans(ca, &[], TEST_SERVER_CERT_TTL)
    }

    /// Like `issue`, with `extra` names (DNS names or IP addresses, `--discovery-san`) besides
    /// `localhost`/`127.0.0.1`/`::1`: for clients that reach the control plane at another address,
    /// such as workloads in network namespaces dialling the host side of their veth.
    pub fn issue_with_sans(
        ca: &CertificateAuthority,
        extra: &[String],
        ttl: Duration,
    ) -> Result<Self, CaError> {
        let identity = ca
            .trust_domain()
            .workload(CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut dns = vec!["localhost"];
        let mut ips = vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        for san in extra {
            match san.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => dns.push(san),
            }
        }
        let issued = ca.issue_server_cert(&key, &identity, &dns, &ips, Some(ttl))?;
        let mut cert_chain_pem = issued.leaf_pem;
        for c in &issued.chain_pem {
            cert_chain_pem.push_str(c);
        }
        Ok(Self {
            identity,
            cert_chain_pem,
            key_pem: key.serialize_pem(),
            trust_bundle_pem: issued.trust_bundle_pem,
            not_after: issued.not_after,
        })
    }

    /// For `tonic::transport::Server::builder().tls_config(..)`.
    pub fn tonic_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_chain_pem,
                &self.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(self.trust_bundle_pem.concat()))
            .client_auth_optional(true)
    }
}

impl std::fmt::Debug for ControlPlaneTls {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneTls")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}
