//! Start-up wiring of the workload identity: the control plane channel's TLS, the join token,
//! the certificate store, its rotation task, live trust-bundle updates from the `Runtime`
//! resource, and the readiness gate on the first certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_proto::identity::v1::identity_client::IdentityClient;
use tonic::transport::Endpoint;

use crate::config::Config;
use crate::health::Health;
use crate::identity::{
    CertStore, ControlTls, ControlTlsError, Credentials, IdentityError, JoinToken, Rotation,
    SpiffeError, SpiffeId, TOKEN_ENV,
};
use crate::state::{Name, StateHandle};
use crate::tls::{BundleError, TrustBundle};

/// The workload's key and certificate chain in `--data-dir` (mode 0600).
pub const IDENTITY_FILE: &str = "identity.pem";

/// Readiness gate held closed until the first workload certificate is in the store.
pub const CERT_GATE: &str = "workload-certificate";

#[derive(Debug, thiserror::Error)]
pub enum IdentityWiringError {
    #[error("--control-plane is https:// but no --ca-bundle (MESH_CA_BUNDLE) verifies it")]
    NoBundleForHttps,
    #[error("a join token needs --ca-bundle (MESH_CA_BUNDLE): the roots peers are verified with")]
    NoBundleForIdentity,
    #[error("cannot read the trust bundle {path}: {source}")]
    ReadBundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trust bundle {path}: {source}")]
    Bundle { path: PathBuf, source: BundleError },
    #[error("control plane URL {0:?}: {1}")]
    Url(String, String),
    #[error("workload identity: {0}")]
    Spiffe(#[from] SpiffeError),
    #[error(transparent)]
    Token(#[from] IdentityError),
    #[error("control plane TLS: {0}")]
    ControlTls(#[from] ControlTlsError),
}

/// The workload identity once wired: hand `store` to the inbound acceptor and outbound
/// connector, spawn [`Workload::rotation`] on the control runtime.
pub struct Workload {
    pub store: Arc<CertStore>,
    pub rotation: Rotation,
}

/// TLS for the discovery/identity channel: `Some` for an `https://` control plane, verified
/// against `--ca-bundle` and the URL's host name, presenting `workload`'s certificate.
pub fn control_plane_tls(
    cfg: &Config,
    workload: Option<Arc<CertStore>>,
) -> Result<Option<ControlTls>, IdentityWiringError> {
    // A sidecar serving `--static-config` never dials the control plane: its default https URL
    // needs no bundle then.
    if !cfg.control_plane.starts_with("https://") || cfg.static_config.is_some() {
        return Ok(None);
    }
    let path = cfg
        .ca_bundle
        .as_deref()
        .ok_or(IdentityWiringError::NoBundleForHttps)?;
    let pems = read_bundle(path)?;
    let uri: http::Uri = cfg
        .control_plane
        .parse()
        .map_err(|e: http::uri::InvalidUri| {
            IdentityWiringError::Url(cfg.control_plane.clone(), e.to_string())
        })?;
    let host = uri.host().unwrap_or("localhost");
    Ok(Some(ControlTls::new(&pems, host, workload)?))
}

/// With a join token (`MESH_JOIN_TOKEN`, read once here at start-up, or `--join-token-file`):
/// the certificate store and its rotation, and a closed readiness gate that opens on the
/// first certificate. Without one: `None`, and the sidecar speaks plaintext.
pub fn prepare(
    cfg: &Config,
    health: &Arc<Health>,
) -> Result<Option<Workload>, IdentityWiringError> {
    let token = match JoinToken::resolve(
        std::env::var(TOKEN_ENV).ok(),
        cfg.join_token_file.as_deref(),
    ) {
        Ok(t) => t,
        Err(IdentityError::NoToken) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let path = cfg
        .ca_bundle
        .as_deref()
        .ok_or(IdentityWiringError::NoBundleForIdentity)?;
    let pems = read_bundle(path)?;
    let bundle = TrustBundle::from_pem(&pems).map_err(|source| IdentityWiringError::Bundle {
        path: path.to_path_buf(),
        source,
    })?;
    let identity = SpiffeId::parse(&cfg.identity())?;
    let keep = cfg.data_dir.as_ref().map(|d| d.join(IDENTITY_FILE));
    let store = CertStore::new(identity.clone(), bundle);
    // A certificate kept by an earlier run serves at once (a restart during a control-plane
    // outage stays meshed); the rotation renews it with itself as the proof.
    if let Some(path) = &keep
        && path.exists()
    {
        match Credentials::load(path, &identity) {
            Ok(creds) => {
                tracing::info!(path = %path.display(), "serving the kept workload certificate until it is renewed");
                store.set_credentials(creds);
            }
            Err(e) => {
                tracing::info!(error = %e, "kept certificate not usable; asking for a new one")
            }
        }
    }
    let url_err = |e: String| IdentityWiringError::Url(cfg.control_plane.clone(), e);
    // Lazy: the rotation task retries with backoff while the control plane is away.
    let (client, reconnect) = match control_plane_tls(cfg, Some(store.clone()))? {
        Some(tls) => {
            let endpoint = tls.endpoint(&cfg.control_plane)?;
            let client = IdentityClient::new(tls.connect_lazy(endpoint.clone()));
            let reconnect = move || IdentityClient::new(tls.connect_lazy(endpoint.clone()));
            (client, Some(Arc::new(reconnect) as Arc<_>))
        }
        None => {
            let channel = Endpoint::from_shared(cfg.control_plane.clone())
                .map_err(|e| url_err(e.to_string()))?
                .connect_lazy();
            (IdentityClient::new(channel), None)
        }
    };
    health.add_gate(CERT_GATE);
    Ok(Some(Workload {
        rotation: Rotation {
            client,
            token,
            store: store.clone(),
            ttl: None,
            keep,
            reconnect,
        },
        store,
    }))
}

/// Runs the rotation and the trust-bundle follower, and opens the readiness gate once the
/// first certificate is loaded.
pub async fn run(
    workload: Rotation,
    store: Arc<CertStore>,
    health: Arc<Health>,
    state: StateHandle,
) {
    tokio::spawn(follow_trust_bundle(state, store.clone()));
    let rotation = tokio::spawn(workload.run());
    store.ready().await;
    health.open_gate(CERT_GATE);
    tracing::info!(identity = %store.identity(), "workload certificate loaded; mTLS ready");
    let _ = rotation.await;
}

/// Applies the `Runtime` resource's `trust_bundle_pem` to the store each time it changes, so
/// the next handshake in either direction verifies against it (e.g. old + new root during a
/// root rotation) without waiting for the next certificate renewal. The swap is one atomic
/// store: established connections are untouched. An empty bundle (no Runtime yet) changes
/// nothing; an unusable one is logged and the current roots stay in force.
pub async fn follow_trust_bundle(state: StateHandle, store: Arc<CertStore>) {
    let mut changed = state.changed();
    let mut applied: Vec<Name> = Vec::new();
    loop {
        let published = state
            .load()
            .runtime
            .as_ref()
            .map(|r| r.trust_bundle_pem.clone())
            .unwrap_or_default();
        if !published.is_empty() && published != applied {
            let pems: Vec<String> = published.iter().map(|p| p.to_string()).collect();
            match TrustBundle::from_pem(&pems) {
                Ok(bundle) => {
                    tracing::info!(
                        roots = bundle.roots().len(),
                        "trust bundle from the control plane applied to new handshakes"
                    );
                    store.set_trust_bundle(bundle);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "ignoring the control plane's trust bundle; the current roots stay in force"
                ),
            }
            applied = published;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

fn read_bundle(path: &Path) -> Result<Vec<String>, IdentityWiringError> {
    let pem = std::fs::read_to_string(path).map_err(|source| IdentityWiringError::ReadBundle {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(vec![pem])
}
