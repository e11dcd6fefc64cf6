//! Reaching the control plane from `mesh-cli`: its data dir and `addrs.json`, the admin URL
//! (TLS unless `http://`), the bearer token, the trust bundle, and the one verified TLS client
//! configuration every connection of `mesh-cli` to the control plane uses.
//!
//! On the control plane's machine nothing needs setting: URL, token and bundle come from the
//! data dir. Remotely: `MESH_CONTROL_PLANE_ADMIN=https://host:15011`, `MESH_ADMIN_TOKEN` and
//! `MESH_CA_BUNDLE`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_proto::admin::v1::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// The control plane's default admin address (ARCHITECTURE.md); TLS unless `http://` is given.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15011";
/// Files the control plane writes into its data dir.
pub const ADDRS_FILE: &str = "addrs.json";
pub const TOKEN_FILE: &str = "admin-token";
pub const BUNDLE_FILE: &str = "ca/trust-bundle.pem";

/// A reachable control plane answers a connect (and a TLS handshake) within milliseconds;
/// 3 s bounds a black-holed address without failing a busy one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Every admin call is a small unary request; 10 s only guards against a hung server.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Why the admin API cannot be used; every message says what to set.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not the control plane's address file: {reason}")]
    Addrs { path: PathBuf, reason: String },
    #[error(
        "{0:?} is not an address: {1} (use https://HOST:PORT, or HOST:PORT like 127.0.0.1:15011)"
    )]
    BadUrl(String, String),
    #[error(
        "no trust bundle to verify the control plane at {at}: {path}: {reason} (set --ca-bundle / MESH_CA_BUNDLE to its DATA_DIR/{BUNDLE_FILE}, or --data-dir to its data directory)"
    )]
    NoBundle {
        at: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "no admin token: MESH_ADMIN_TOKEN is unset and {path} {reason} (set MESH_ADMIN_TOKEN, or --data-dir to the control plane's data directory)"
    )]
    NoToken { path: PathBuf, reason: String },
    #[error("the admin token contains characters not allowed in a header (regenerate it)")]
    BadToken,
    #[error("cannot reach the control plane at {at}: {detail} ({hint})")]
    Unreachable {
        at: String,
        detail: String,
        hint: &'static str,
    },
}

/// Where the settings come from, read once: flags/env of the command, or a caller's own.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--data-dir` / `MESH_DATA_DIR`; default `$HOME/.mesh/control-plane`.
    pub data_dir: Option<PathBuf>,
    /// `--control-plane` / `MESH_CONTROL_PLANE_ADMIN` (admin URL or `host:port`).
    pub admin: Option<String>,
    /// `--ca-bundle` / `MESH_CA_BUNDLE`.
    pub ca_bundle: Option<PathBuf>,
    /// `MESH_ADMIN_TOKEN`.
    pub token: Option<String>,
}

/// The admin API to dial: the URL with its scheme, and the address as the operator gave it
/// (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTarget {
    pub url: String,
    pub shown: String,
}

/// Bound addresses and URLs the control plane wrote to `<data-dir>/addrs.json`. The URLs
/// are absent in files of older control planes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddrs {
    pub discovery: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub discovery_url: Option<String>,
    pub admin_url: Option<String>,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

// === impl Sources ===

impl Sources {
    /// The data dir: the setting, else `$HOME/.mesh/control-plane` (the control plane's own
    /// default).
    pub fn data_dir(&self) -> PathBuf {
        data_dir(self.data_dir.clone())
    }

    /// The admin URL: the setting (scheme-less means `https://`), else `admin_url` from the
    /// data dir's `addrs.json` (else its `admin` address), else the default port.
    pub fn admin_target(&self) -> AdminTarget {
        if let Some(a) = &self.admin {
            return AdminTarget::from_setting(a);
        }
        match read_addrs(&self.data_dir()) {
            Ok(LocalAddrs {
                admin_url: Some(url),
                ..
            }) => AdminTarget {
                shown: url.clone(),
                url,
            },
            Ok(LocalAddrs { admin: Some(a), .. }) => AdminTarget::from_setting(&a.to_string()),
            _ => AdminTarget::from_setting(DEFAULT_ADMIN),
        }
    }

    /// The trust bundle file: the setting, else the data dir's.
    pub fn bundle_path(&self) -> PathBuf {
        self.ca_bundle
            .clone()
            .unwrap_or_else(|| self.data_dir().join(BUNDLE_FILE))
    }

    /// `MESH_ADMIN_TOKEN`, else `<data-dir>/admin-token`.
    pub fn token(&self) -> Result<String, AccessError> {
        if let Some(t) = self.token.as_deref().map(str::trim)
            && !t.is_empty()
        {
            return Ok(t.to_string());
        }
        let path = self.data_dir().join(TOKEN_FILE);
        let no_token = |reason: String| AccessError::NoToken {
            path: path.clone(),
            reason,
        };
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            Ok(_) => Err(no_token("is empty".into())),
            Err(e) => Err(no_token(format!("cannot be read: {e}"))),
        }
    }

    /// Connects (an unreachable control plane is the likelier problem, so first), then loads
    /// the token: an authenticated admin client and the target it talks to.
    pub async fn connect(&self) -> Result<(Admin, AdminTarget), AccessError> {
        let target = self.admin_target();
        let channel = target.connect(&self.bundle_path()).await?;
        let value: MetadataValue<Ascii> = format!("Bearer {}", self.token()?)
            .parse()
            .map_err(|_| AccessError::BadToken)?;
        Ok((
            AdminClient::with_interceptor(channel, Bearer(value)),
            target,
        ))
    }
}

// === impl AdminTarget ===

impl AdminTarget {
    /// A flag or environment value: a URL as given, a bare `host:port` as `https://` (the
    /// admin API serves TLS by default).
    pub fn from_setting(value: &str) -> Self {
        let url = if value.contains("://") {
            value.to_string()
        } else {
            format!("https://{value}")
        };
        Self {
            url,
            shown: value.to_string(),
        }
    }

    /// A channel to the admin API; for `https://` verified with the bundle at `bundle` and the
    /// URL's host. Bounded by the connect and call timeouts.
    pub async fn connect(&self, bundle: &Path) -> Result<Channel, AccessError> {
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| AccessError::BadUrl(self.shown.clone(), e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let uri = endpoint.uri().clone();
        let host = uri
            .host()
            .ok_or_else(|| AccessError::BadUrl(self.shown.clone(), "no host".into()))?;
        match uri.scheme_str() {
            Some("https") => {
                let pem = match read_bundle(bundle) {
                    Ok(pem) => pem,
                    // Without a bundle, say first whether anything listens there at all.
                    Err(reason) => return Err(self.probe(&uri, bundle, reason).await),
                };
                endpoint = endpoint
                    .tls_config(client_tls(&pem, host))
                    .map_err(|e| AccessError::BadUrl(self.shown.clone(), e.to_string()))?;
            }
            Some("http") => {}
            other => {
                return Err(AccessError::BadUrl(
                    self.shown.clone(),
                    format!("scheme {other:?}: use https:// (or http:// with --admin-tls=false)"),
                ));
            }
        }
        endpoint.connect().await.map_err(|e| {
            let detail = root_cause(&e);
            AccessError::Unreachable {
                at: self.shown.clone(),
                hint: hint(&detail),
                detail,
            }
        })
    }

    /// The error for a missing bundle, unless the address does not even accept a connection.
    async fn probe(&self, uri: &http::Uri, bundle: &Path, reason: String) -> AccessError {
        let port = uri.port_u16().unwrap_or(443);
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await;
        match tcp {
            Ok(Ok(_)) => AccessError::NoBundle {
                at: self.shown.clone(),
                path: bundle.to_path_buf(),
                reason,
            },
            Ok(Err(e)) => AccessError::Unreachable {
                at: self.shown.clone(),
                detail: root_cause(&e),
                hint: HINT_RUNNING,
            },
            Err(_) => AccessError::Unreachable {
                at: self.shown.clone(),
                detail: format!("no connection within {CONNECT_TIMEOUT:?}"),
                hint: HINT_RUNNING,
            },
        }
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// The data dir: `flag` (`--data-dir`/`MESH_DATA_DIR`), else `$HOME/.mesh/control-plane`.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".mesh").join("control-plane")
    })
}

/// Reads `<dir>/addrs.json`.
pub fn read_addrs(dir: &Path) -> Result<LocalAddrs, AccessError> {
    let path = dir.join(ADDRS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| AccessError::Read {
        path: path.clone(),
        source,
    })?;
    parse_addrs(&text).map_err(|reason| AccessError::Addrs { path, reason })
}

/// Parses the address file: a JSON object whose `discovery` (required) and `admin` keys are
/// socket addresses, and `discovery_url`/`admin_url` URLs with their scheme.
pub fn parse_addrs(text: &str) -> Result<LocalAddrs, String> {
    let map: HashMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    let string = |key: &str| -> Result<Option<&str>, String> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| format!("`{key}` is not a string: {v}")),
        }
    };
    let addr = |key: &str| -> Result<Option<SocketAddr>, String> {
        string(key)?
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("`{key}` is not a socket address: {s:?}"))
            })
            .transpose()
    };
    let url = |key: &str| -> Result<Option<String>, String> {
        match string(key)? {
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                Ok(Some(u.to_string()))
            }
            Some(u) => Err(format!("`{key}` is not an http(s) URL: {u:?}")),
            None => Ok(None),
        }
    };
    Ok(LocalAddrs {
        discovery: addr("discovery")?.ok_or("no `discovery` address")?,
        admin: addr("admin")?,
        discovery_url: url("discovery_url")?,
        admin_url: url("admin_url")?,
    })
}

/// The TLS client configuration for the control plane (admin and discovery ports): trust only
/// the mesh bundle `bundle_pem` and check the name `host` (the host of the URL dialled: the
/// certificate names `localhost`, `127.0.0.1`, `::1` and every `--discovery-san`).
pub fn client_tls(bundle_pem: &str, host: &str) -> ClientTlsConfig {
    // An IPv6 host comes bracketed out of a URI; the certificate check wants the bare address.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(bundle_pem))
        .domain_name(host)
}

/// The bundle's PEM text, or why it is unusable.
fn read_bundle(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Ok(pem),
        Ok(_) => Err("holds no PEM certificate".into()),
        Err(e) => Err(format!("cannot be read: {}", root_cause(&e))),
    }
}

const HINT_RUNNING: &str = "is mesh-control-plane running? set --control-plane";

/// What to check for a failed connection, from its root cause.
fn hint(detail: &str) -> &'static str {
    if detail.contains("certificate") || detail.contains("UnknownIssuer") {
        "is --ca-bundle / MESH_CA_BUNDLE this control plane's trust bundle, and does its certificate name this host? see --discovery-san"
    } else if detail.contains("corrupt message") || detail.contains("InvalidContentType") {
        "the control plane does not speak TLS there: use http:// for one started with --admin-tls=false"
    } else {
        HINT_RUNNING
    }
}

/// The innermost error's text: "Connection refused (os error 111)" instead of "transport error".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let s = cur.to_string();
    // "Connection refused (os error 111)" → "connection refused".
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => s,
    }
}

#[cfg(test)]
mod tests;
