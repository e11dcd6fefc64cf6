//! The local control plane as `run` needs it: the sidecar's discovery URL, and a join token
//! from the admin API (reached through [`crate::access`], like every other command).

use std::net::SocketAddr;
use std::time::Duration;

use mesh_proto::admin::v1::CreateTokenRequest;
use tonic::transport::Endpoint;

use crate::access::{AccessError, Sources};
pub use crate::access::{LocalAddrs as Addrs, data_dir, read_addrs};

/// The control plane's discovery port on this host when nothing says otherwise.
pub const DEFAULT_DISCOVERY: &str = "127.0.0.1:15010";
/// Connecting to and answering from a local admin API takes milliseconds; 5 s tolerates a busy
/// machine, and a control plane that does not answer in that time should not hold up the start.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("admin API at {at}: {reason}")]
    Admin { at: String, reason: String },
}

/// The discovery URL the sidecar gets: the flag (a bare `host:port` gets `http://`), else
/// the local control plane's (the URL it wrote, else `https://` when `local_tls`), else the
/// default port on this host.
pub fn discovery_url(flag: Option<&str>, local: Option<&Addrs>, local_tls: bool) -> String {
    let scheme = if local_tls { "https" } else { "http" };
    match (flag, local) {
        (Some(f), _) if f.contains("://") => f.to_string(),
        (Some(f), _) => format!("http://{f}"),
        (
            None,
            Some(Addrs {
                discovery_url: Some(url),
                ..
            }),
        ) => url.clone(),
        (None, Some(a)) => format!("{scheme}://{}", a.discovery),
        (None, None) => format!("{scheme}://{DEFAULT_DISCOVERY}"),
    }
}

/// Whether the control plane's discovery port at `addr` serves TLS with a certificate the
/// trust bundle `bundle_pem` verifies (`--discovery-tls=true`), for an address file without
/// `discovery_url` (an older control plane): a TLS connection is tried; a plaintext server
/// fails the handshake. Bounded by the admin timeout.
pub async fn serves_tls(addr: SocketAddr, bundle_pem: &str) -> bool {
    let Ok(endpoint) = Endpoint::from_shared(format!("https://{addr}")) else {
        return false;
    };
    let tls = crate::access::client_tls(bundle_pem, &addr.ip().to_string());
    let Ok(endpoint) = endpoint.tls_config(tls) else {
        return false;
    };
    matches!(
        tokio::time::timeout(ADMIN_TIMEOUT, endpoint.connect()).await,
        Ok(Ok(_))
    )
}

/// Creates a join token for `namespace`/`service_account` through the admin API found from
/// `sources` (TLS verified with the trust bundle, bearer token), binding the identity to
/// `service`: the workload's own service account may serve its service.
pub async fn create_join_token(
    sources: &Sources,
    namespace: &str,
    service_account: &str,
    service: &str,
) -> Result<String, ControlPlaneError> {
    let call = async {
        let (mut admin, target) = sources.connect().await?;
        let fail = |reason: String| ControlPlaneError::Admin {
            at: target.shown.clone(),
            reason,
        };
        let resp = admin
            .create_token(CreateTokenRequest {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
                // 0 = the control plane's default lifetime.
                ttl_secs: 0,
                services: vec![service.to_string()],
                max_uses: 0,
            })
            .await
            .map_err(|s| fail(format!("{:?}: {}", s.code(), s.message())))?;
        Ok(resp.into_inner().token)
    };
    tokio::time::timeout(ADMIN_TIMEOUT, call)
        .await
        .map_err(|_| ControlPlaneError::Admin {
            at: sources.admin_target().shown,
            reason: format!("no answer within {ADMIN_TIMEOUT:?}"),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::parse_addrs;

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
        let written =
            parse_addrs(r#"{"discovery":"127.0.0.1:7","discovery_url":"https://127.0.0.1:7"}"#)
                .expect("valid");
        assert_eq!(
            discovery_url(None, Some(&written), false),
            "https://127.0.0.1:7",
            "the URL the control plane wrote wins over a probe"
        );
        assert_eq!(discovery_url(None, None, false), "http://127.0.0.1:15010");
    }
}
