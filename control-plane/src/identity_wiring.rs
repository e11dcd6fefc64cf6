//! Start-up wiring of the CA into the control plane: CA load, admin-API tokens as CA tokens,
//! the trust bundle in the Runtime resource and on disk, and the discovery port's TLS identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::ca::{
    CaConfig, CaError, CertificateAuthority, FileCaStorage, JoinTokens, SpiffeId, TokenError,
    TokenRecord, TokenStore, TrustDomain,
};
use crate::core::{Core, CoreError};
use crate::identity_server::IdentityService;
use crate::serving::{ServingError, ServingTls};

/// File in `DATA_DIR/ca/` holding the trust bundle (PEM roots), written by the CA's storage;
/// local clients (sidecars, `mesh-cli`) verify the control plane's TLS certificate with it.
pub const BUNDLE_FILE: &str = "trust-bundle.pem";

/// Operator-supplied CA material; without it the CA is created (once) in the data dir.
#[derive(Debug, Clone, Default)]
pub struct OperatorCa {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub bundle: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentitySetupError {
    #[error("certificate authority: {0}")]
    Ca(#[from] CaError),
    #[error("--ca-cert and --ca-key must be given together")]
    HalfOperatorCa,
    #[error("publishing the trust bundle: {0}")]
    Core(#[from] CoreError),
    #[error(transparent)]
    Serving(#[from] ServingError),
}

/// What the servers need: the Identity service and the discovery port's TLS identity.
pub struct IdentityParts {
    pub ca: Arc<CertificateAuthority>,
    pub service: IdentityService,
    pub tls: Arc<ServingTls>,
    pub bundle_path: PathBuf,
}

/// Join tokens as the core stores them (created by the admin API), seen through the CA's
/// [`TokenStore`]: one set of tokens, whichever side created or revokes them.
pub struct CoreTokenStore(pub Arc<Core>);

/// Loads or creates the CA under `data_dir/ca`, publishes its bundle, issues the control
/// plane's own certificate (with `discovery_sans` besides `localhost`/`127.0.0.1`).
pub fn setup(
    data_dir: &Path,
    trust_domain: &str,
    operator: &OperatorCa,
    core: &Arc<Core>,
    discovery_sans: &[String],
    workload_cert_ttl: Duration,
    serving_cert_ttl: Duration,
) -> Result<IdentityParts, IdentitySetupError> {
    let ca_dir = data_dir.join("ca");
    let storage = Arc::new(FileCaStorage::new(ca_dir.clone()));
    let config = CaConfig {
        trust_domain: TrustDomain::new(trust_domain).map_err(CaError::from)?,
        default_leaf_ttl: workload_cert_ttl,
        ..CaConfig::default()
    };
    let ca = match (&operator.cert, &operator.key) {
        (Some(cert), Some(key)) => CertificateAuthority::from_operator_files(
            config,
            storage,
            cert,
            key,
            operator.bundle.as_deref(),
        )?,
        (None, None) => CertificateAuthority::load_or_create(config, storage)?,
        _ => return Err(IdentitySetupError::HalfOperatorCa),
    };
    let ca = Arc::new(ca);
    let bundle = ca.trust_bundle();
    core.set_trust_bundle(bundle.clone())?;
    let bundle_path = ca_dir.join(BUNDLE_FILE);
    let tls = ServingTls::new(ca.clone(), discovery_sans.to_vec(), serving_cert_ttl)?;
    let tokens = JoinTokens::new(Arc::new(CoreTokenStore(core.clone())));
    let revocations = core.clone();
    Ok(IdentityParts {
        service: IdentityService::new(ca.clone(), tokens).with_revocations(Arc::new(
            move |id: &SpiffeId| revocations.is_revoked(id.as_str()),
        )),
        ca,
        tls,
        bundle_path,
    })
}

// === impl CoreTokenStore ===

impl CoreTokenStore {
    fn convert(r: crate::core::TokenRecord) -> Result<TokenRecord, TokenError> {
        let identity = SpiffeId::parse(&r.identity)
            .map_err(|e| TokenError::Store(format!("token {}: {e}", r.id)))?;
        Ok(TokenRecord {
            id: r.id,
            hash: r.hash,
            identity,
            created_unix: r.created_unix,
            expires_unix: r.expires_unix,
            revoked: r.revoked,
        })
    }
}

impl TokenStore for CoreTokenStore {
    fn insert(&self, _: TokenRecord) -> Result<(), TokenError> {
        Err(TokenError::Store(
            "join tokens are created through the admin API (CreateToken)".into(),
        ))
    }

    /// The CA looks a token up by the first 8 bytes of its hash (hex). The core names tokens
    /// with a random id, so match on the hash prefix: tokens number in the tens to thousands
    /// and certification happens once a day per workload, so a scan costs nothing that matters.
    fn get(&self, id: &str) -> Result<Option<TokenRecord>, TokenError> {
        self.0
            .list_tokens()
            .into_iter()
            .find(|r| r.hash.starts_with(id))
            .map(Self::convert)
            .transpose()
    }

    fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        self.0
            .revoke_token(id)
            .map_err(|e| TokenError::Store(e.to_string()))
    }

    fn consume(&self, id: &str) -> Result<(), TokenError> {
        match self.0.use_token(id) {
            Ok(true) => Ok(()),
            Ok(false) => Err(TokenError::UsedUp(id.to_string())),
            Err(e) => Err(TokenError::Store(e.to_string())),
        }
    }

    fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        self.0
            .list_tokens()
            .into_iter()
            .map(Self::convert)
            .collect()
    }
}
