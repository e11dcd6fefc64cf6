//! Finding the local control plane (its `addrs.json`) and asking its admin API for a join token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_proto::admin::v1::CreateTokenRequest;
use mesh_proto::admin::v1::admin_client::AdminClient;
use tonic::transport::Channel;

/// The control plane's discovery port on this host when nothing says otherwise.
pub const DEFAULT_DISCOVERY: &str = "127.0.0.1:15010";
/// Connecting to and answering from a local admin API takes milliseconds; 5 s tolerates a busy
/// machine, and a control plane that does not answer in that time should not hold up the start.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not the control plane's address file: {reason}")]
    Addrs { path: PathBuf, reason: String },
    #[error("no admin token: set MESH_ADMIN_TOKEN or point --data-dir at the control plane's")]
    NoAdminToken,
    #[error("admin API at {addr}: {reason}")]
    Admin { addr: SocketAddr, reason: String },
}

/// Bound addresses the local control plane wrote to `<data-dir>/addrs.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub discovery: SocketAddr,
    pub admin: Option<SocketAddr>,
}

/// The control plane's data dir: the flag/`MESH_DATA_DIR`, else `$HOME/.mesh/control-plane`
/// (the control plane's own default).
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".mesh").join("control-plane")
    })
}

/// Reads `<dir>/addrs.json`.
pub fn read_addrs(dir: &Path) -> Result<Addrs, ControlPlaneError> {
    let path = dir.join("addrs.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ControlPlaneError::Read {
        path: path.clone(),
        source,
    })?;
    parse_addrs(&text).map_err(|reason| ControlPlaneError::Addrs { path, reason })
}

/// Parses the address file: a JSON object whose `discovery` (required) and `admin` keys are
/// socket addresses.
pub fn parse_addrs(text: &str) -> Result<Addrs, String> {
    let map: HashMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    let addr = |key: &str| -> Result<Option<SocketAddr>, String> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("`{key}` is not a socket address: {v}")),
        }
    };
    Ok(Addrs {
        discovery: addr("discovery")?.ok_or("no `discovery` address")?,
        admin: addr("admin")?,
    })
}

/// The discovery URL the sidecar gets: the flag (a bare `host:port` gets `http://`), else
/// the local control plane's (`https://` when `local_tls`: it serves TLS), else the default
/// port on this host.
pub fn discovery_url(flag: Option<&str>, local: Option<&Addrs>, local_tls: bool) -> String {
    let scheme = if local_tls { "https" } else { "http" };
    match (flag, local) {
        (Some(f), _) if f.contains("://") => f.to_string(),
        (Some(f), _) => format!("http://{f}"),
        (None, Some(a)) => format!("{scheme}://{}", a.discovery),
        (None, None) => format!("{scheme}://{DEFAULT_DISCOVERY}"),
    }
}

/// Whether the control plane's discovery port at `addr` serves TLS with a certificate the
/// trust bundle `bundle_pem` verifies (`--discovery-tls=true`): a TLS connection is tried; a
/// plaintext server fails the handshake. Bounded by the admin timeout.
pub async fn serves_tls(addr: SocketAddr, bundle_pem: &str) -> bool {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    // The control plane's certificate names `localhost` and 127.0.0.1; any other address it
    // was told about with `--discovery-san` is checked by its IP.
    let host = if addr.ip().is_loopback() {
        "localhost".to_string()
    } else {
        addr.ip().to_string()
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(bundle_pem))
        .domain_name(host);
    let Ok(endpoint) = Endpoint::from_shared(format!("https://{addr}")) else {
        return false;
    };
    let Ok(endpoint) = endpoint.tls_config(tls) else {
        return false;
    };
    matches!(
        tokio::time::timeout(ADMIN_TIMEOUT, endpoint.connect()).await,
        Ok(Ok(_))
    )
}

/// The admin bearer token: `MESH_ADMIN_TOKEN`, else `<dir>/admin-token`.
pub fn admin_token(env_value: Option<String>, dir: &Path) -> Result<String, ControlPlaneError> {
    let token = match env_value {
        Some(t) => t,
        None => std::fs::read_to_string(dir.join("admin-token"))
            .map_err(|_| ControlPlaneError::NoAdminToken)?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(ControlPlaneError::NoAdminToken);
    }
    Ok(token)
}

/// Creates a join token for `namespace`/`service_account` through the admin API.
pub async fn create_join_token(
    admin: SocketAddr,
    bearer: &str,
    namespace: &str,
    service_account: &str,
) -> Result<String, ControlPlaneError> {
    let fail = |reason: String| ControlPlaneError::Admin {
        addr: admin,
        reason,
    };
    let call = async {
        let channel = Channel::from_shared(format!("http://{admin}"))
            .map_err(|e| fail(e.to_string()))?
            .connect()
            .await
            .map_err(|e| fail(format!("connect: {e}")))?;
        let mut req = tonic::Request::new(CreateTokenRequest {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            // 0 = the control plane's default lifetime.
            ttl_secs: 0,
        });
        let value = format!("Bearer {bearer}")
            .parse()
            .map_err(|_| fail("the admin token is not a valid header value".into()))?;
        req.metadata_mut().insert("authorization", value);
        let resp = AdminClient::new(channel)
            .create_token(req)
            .await
            .map_err(|s| fail(format!("{:?}: {}", s.code(), s.message())))?;
        Ok(resp.into_inner().token)
    };
    tokio::time::timeout(ADMIN_TIMEOUT, call)
        .await
        .map_err(|_| fail(format!("no answer within {ADMIN_TIMEOUT:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addrs_file_parses_and_rejects_garbage() {
        let a = parse_addrs(
            r#"{"discovery":"127.0.0.1:1","admin":"127.0.0.1:2","http":"127.0.0.1:3"}"#,
        )
        .expect("valid file");
        assert_eq!(a.discovery, "127.0.0.1:1".parse().expect("addr"));
        assert_eq!(a.admin, Some("127.0.0.1:2".parse().expect("addr")));
        assert!(parse_addrs(r#"{"admin":"127.0.0.1:2"}"#).is_err());
        assert!(parse_addrs(r#"{"discovery":"nope"}"#).is_err());
        assert!(parse_addrs("not json").is_err());
    }

    #[test]
    fn discovery_url_prefers_flag_then_local_then_default() {
        let local = parse_addrs(r#"{"discovery":"127.0.0.1:7"}"#).expect("valid");
        assert_eq!(discovery_url(Some("h:1"), Some(&local), true), "http://h:1");
        assert_eq!(
            discovery_url(Some("https://h:1"), None, false),
            "https://h:1"
        );
        assert_eq!(
            discovery_url(None, Some(&local), false),
            "http://127.0.0.1:7"
        );
        assert_eq!(
            discovery_url(None, Some(&local), true),
            "https://127.0.0.1:7"
        );
        assert_eq!(discovery_url(None, None, false), "http://127.0.0.1:15010");
    }
}
