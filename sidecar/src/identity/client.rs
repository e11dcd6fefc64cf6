//! Talking to the control plane's Identity service: the join token, one `Certify` call, the CP channel's TLS.

use std::path::Path;
use std::time::Duration;

use mesh_proto::identity::v1::CertifyRequest;
use mesh_proto::identity::v1::identity_client::IdentityClient;
use tonic::transport::Channel;

use super::credentials::{Credentials, CredentialsError, WorkloadKey};
use super::spiffe::SpiffeId;
use crate::tls::{BundleError, TrustBundle};

/// Environment variable holding the join token.
pub const TOKEN_ENV: &str = "MESH_JOIN_TOKEN";
/// A Certify round-trip is milliseconds; 15 s tolerates a busy control plane and still lets the
/// rotation loop retry well inside a short certificate's lifetime.
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// The join token; `Debug` never prints it.
#[derive(Clone)]
pub struct JoinToken(String);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "no join token: set {TOKEN_ENV} or pass a token file (create one with `mesh-cli token create`)"
    )]
    NoToken,
    #[error("cannot read join token file {path}: {source}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control plane refused the certificate request: {0}")]
    Refused(tonic::Status),
    #[error("control plane did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

impl IdentityError {
    /// Retrying cannot help: the token is bad or the identity is not ours.
    pub fn is_permanent(&self) -> bool {
        match self {
            IdentityError::Refused(s) => matches!(
                s.code(),
                tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::InvalidArgument
            ),
            IdentityError::NoToken | IdentityError::TokenFile { .. } => true,
            _ => false,
        }
    }
}

// === impl JoinToken ===

impl JoinToken {
    pub fn new(token: impl Into<String>) -> Result<Self, IdentityError> {
        let token = token.into().trim().to_owned();
        if token.is_empty() {
            return Err(IdentityError::NoToken);
        }
        Ok(Self(token))
    }

    /// The token from the environment value (`MESH_JOIN_TOKEN`, read once by the caller at
    /// start-up), else from `file`. The environment wins so a test can override a mounted file.
    pub fn resolve(env_value: Option<String>, file: Option<&Path>) -> Result<Self, IdentityError> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Self::new(v);
        }
        let path = file.ok_or(IdentityError::NoToken)?;
        let s = std::fs::read_to_string(path).map_err(|source| IdentityError::TokenFile {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

/// Generates a fresh key, sends a CSR with the token (`None`: a renewal, proven by the
/// current certificate the channel presents), and returns the credentials and the trust
/// bundle from the answer. A new key per certificate: a renewal never reuses a key.
pub async fn certify(
    client: &mut IdentityClient<Channel>,
    token: Option<&JoinToken>,
    identity: &SpiffeId,
    ttl: Option<Duration>,
) -> Result<(Credentials, TrustBundle), IdentityError> {
    let key = WorkloadKey::generate()?;
    let req = CertifyRequest {
        token: token.map(|t| t.as_str().to_owned()).unwrap_or_default(),
        identity: identity.to_string(),
        csr_der: key.csr_der(identity)?,
        requested_ttl_secs: ttl.map_or(0, |t| t.as_secs()),
    };
    let resp = tokio::time::timeout(CERTIFY_TIMEOUT, client.certify(req))
        .await
        .map_err(|_| IdentityError::Timeout(CERTIFY_TIMEOUT))?
        .map_err(IdentityError::Refused)?
        .into_inner();
    let credentials = key.credentials(identity, &resp.leaf_pem, &resp.chain_pem)?;
    let bundle = TrustBundle::from_pem(&resp.trust_bundle_pem)?;
    Ok((credentials, bundle))
}
