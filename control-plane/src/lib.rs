//! The mesh control plane: durable store, service registry, discovery (delta xDS) server,
//! admin API and metrics, startable in-process with [`run`].

pub mod api;
pub mod ca;
pub mod config;
pub mod core;
pub mod encode;
pub mod http;
pub mod identity_server;
pub mod identity_wiring;
pub mod metrics;
pub mod model;
pub mod otel;
pub mod peer;
pub mod proxies;
pub mod registry;
pub mod serving;
pub mod snapshot;
pub mod store;
pub mod validate;
pub mod xds;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::admin::v1::admin_server::AdminServer;
use mesh_proto::discovery::v1::discovery_server::DiscoveryServer;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::{Args, Config};

use crate::core::{Core, CoreConfig, CoreError};
use crate::store::{RedbStore, StoreError};

/// HTTP/2 keepalive on the discovery port: a proxy that vanished without closing its
/// connection (host died, network partition) is noticed within ~30 s, and its endpoint lease
/// starts running out instead of living forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the control plane listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Addrs {
    pub discovery: SocketAddr,
    pub admin: SocketAddr,
    pub http: SocketAddr,
}

/// The content of `addrs.json`: the bound socket addresses (the fields older readers know)
/// plus the URLs a local client dials, scheme included, so it knows whether to speak TLS.
#[derive(Debug, Serialize)]
struct AddrsFile<'a> {
    #[serde(flatten)]
    addrs: &'a Addrs,
    discovery_url: &'a str,
    admin_url: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("binding {what} on {addr}: {source} (is another control plane running?)")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("loading state: {0}")]
    Core(#[from] CoreError),
    #[error(transparent)]
    Identity(#[from] identity_wiring::IdentitySetupError),
    #[error(transparent)]
    Otel(#[from] otel::ExportError),
}

/// A running control plane. Dropping it leaves it running; call [`Handle::shutdown`].
pub struct Handle {
    pub addrs: Addrs,
    /// `https://…` (or `http://…` with `admin_tls` off), as written to `addrs.json`.
    pub admin_url: String,
    /// `https://…` (or `http://…` with `discovery_tls` off), as written to `addrs.json`.
    pub discovery_url: String,
    pub admin_token: String,
    pub core: Arc<Core>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the control plane: opens the store, loads state, binds every listener, writes the
/// address files, and serves in background tasks of the current runtime.
pub async fn run(config: Config) -> Result<Handle, RunError> {
    let dir = &config.data_dir;
    create_private_dir(dir)?;
    let admin_token = api::auth::load_or_create(dir).map_err(|source| RunError::Io {
        what: "writing the admin token in",
        path: dir.clone(),
        source,
    })?;
    let db = dir.join("mesh.redb");
    let store = tokio::task::spawn_blocking(move || RedbStore::open(&db))
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
    let core_config = CoreConfig {
        trust_domain: config.trust_domain.clone(),
        vip_range: config.vip_range,
        lease_grace: config.lease_grace,
        coalesce: config.coalesce,
        allow_anonymous_proxies: config.allow_anonymous_proxies,
        vip_grace: config.vip_grace,
    };
    let core = Core::load(core_config, Arc::new(store), metrics::Metrics::new())?;
    if config.allow_anonymous_proxies {
        tracing::warn!(
            "--allow-anonymous-proxies: proxies WITHOUT a mesh certificate may register endpoints \
             (development only); they are marked anonymous and strict callers never dial them"
        );
    }
    let identity = identity_wiring::setup(
        dir,
        &config.trust_domain,
        &config.operator_ca,
        &core,
        &config.discovery_sans,
        config.workload_cert_ttl,
        config.serving_cert_ttl,
    )?;

    let discovery = bind("discovery", config.discovery_addr).await?;
    let admin = bind("admin", config.admin_addr).await?;
    let http = bind("http", config.http_addr).await?;
    let local = |l: &TcpListener, what| {
        l.local_addr().map_err(|source| RunError::Io {
            what,
            path: PathBuf::new(),
            source,
        })
    };
    let addrs = Addrs {
        discovery: local(&discovery, "discovery address")?,
        admin: local(&admin, "admin address")?,
        http: local(&http, "http address")?,
    };

    let mut tasks = vec![
        tokio::spawn(core.clone().run_builder()),
        tokio::spawn(core.clone().run_vip_sweeper()),
    ];
    if config.discovery_tls || config.admin_tls {
        tasks.push(tokio::spawn(identity.tls.clone().run_renewal()));
    }
    let discovery_router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(DiscoveryServer::new(xds::DiscoveryService::new(
            core.clone(),
        )))
        .add_service(identity.service.into_server());
    tasks.push(if config.discovery_tls {
        let incoming = identity.tls.incoming(discovery);
        tokio::spawn(async move {
            report(
                "discovery",
                discovery_router.serve_with_incoming(incoming).await,
            )
        })
    } else {
        let incoming = TcpListenerStream::new(discovery);
        tokio::spawn(async move {
            report(
                "discovery",
                discovery_router.serve_with_incoming(incoming).await,
            )
        })
    });
    if let Some(endpoint) = &config.otlp_endpoint {
        otel::install(endpoint, &addrs.admin.to_string())?;
    }
    let auth = api::auth::Auth::new(&admin_token);
    // The admin port presents the same certificate as discovery: one identity for the control
    // plane, renewed for both ports at once.
    let admin_router = tonic::transport::Server::builder().add_service(otel::AdminSpans::new(
        AdminServer::with_interceptor(
            api::AdminService::new(core.clone(), identity.ca.clone()),
            move |req| auth.check(req),
        ),
    ));
    tasks.push(if config.admin_tls {
        let incoming = identity.tls.incoming(admin);
        tokio::spawn(
            async move { report("admin", admin_router.serve_with_incoming(incoming).await) },
        )
    } else {
        let incoming = TcpListenerStream::new(admin);
        tokio::spawn(
            async move { report("admin", admin_router.serve_with_incoming(incoming).await) },
        )
    });
    tasks.push(tokio::spawn(http::serve(http, core.clone())));

    let discovery_url = dial_url(addrs.discovery, config.discovery_tls);
    let admin_url = dial_url(addrs.admin, config.admin_tls);
    let json = serde_json::to_vec(&AddrsFile {
        addrs: &addrs,
        discovery_url: &discovery_url,
        admin_url: &admin_url,
    })
    .unwrap_or_default();
    write_atomic(&dir.join("addrs.json"), &json)?;
    if let Some(f) = &config.addrs_file {
        write_atomic(f, &json)?;
    }
    tracing::info!(
        discovery = %addrs.discovery, admin = %addrs.admin, http = %addrs.http,
        data_dir = %dir.display(), discovery_tls = config.discovery_tls,
        admin_tls = config.admin_tls,
        trust_bundle = %identity.bundle_path.display(), "control plane ready"
    );
    Ok(Handle {
        addrs,
        admin_url,
        discovery_url,
        admin_token,
        core,
        tasks,
    })
}

// === impl Handle ===

impl Handle {
    /// Stops accepting and serving. Every acknowledged write is already durable.
    pub fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// The URL a client on this host dials for a listener bound at `addr`: a wildcard bind
/// (`0.0.0.0`, `[::]`) is reached on loopback, which the control plane's certificate names.
pub fn dial_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

fn report(what: &'static str, res: Result<(), tonic::transport::Error>) {
    if let Err(e) = res {
        tracing::error!(error = %e, "{what} server failed");
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { what, addr, source })
}

fn create_private_dir(dir: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| RunError::Io {
            what: "creating data dir",
            path: dir.to_path_buf(),
            source,
        })
}

/// Write to a temp file next to the target, then rename: readers never see half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let io = |source| RunError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_url_has_the_scheme_and_a_loopback_host_for_wildcard_binds() {
        let at = |s: &str| s.parse::<SocketAddr>().expect("socket address");
        assert_eq!(
            dial_url(at("127.0.0.1:15011"), true),
            "https://127.0.0.1:15011"
        );
        assert_eq!(
            dial_url(at("0.0.0.0:15011"), true),
            "https://127.0.0.1:15011"
        );
        assert_eq!(dial_url(at("[::]:15011"), false), "http://[::1]:15011");
        assert_eq!(
            dial_url(at("10.0.0.7:15010"), false),
            "http://10.0.0.7:15010"
        );
    }
}
