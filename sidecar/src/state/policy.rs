//! Listener, authorization and runtime domain types.

use std::time::Duration;

use super::Name;

/// Whether meshed connections must, may or must not use mTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    #[default]
    Strict,
    Permissive,
    Disabled,
}

/// The proxy's own listener settings.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: Name,
    pub app_ports: Vec<u16>,
    /// Never sniffed: proxied as opaque TCP.
    pub opaque_ports: Vec<u16>,
    /// Server speaks first: detection is skipped so the server's greeting is never stalled.
    pub server_first_ports: Vec<u16>,
    /// `None` = the proxy default.
    pub detect_timeout: Option<Duration>,
    pub tls_mode: TlsMode,
    pub max_connections: Option<u32>,
}

impl Listener {
    /// True when connections to `port` skip protocol detection.
    pub fn skips_detection(&self, port: u16) -> bool {
        self.opaque_ports.contains(&port) || self.server_first_ports.contains(&port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthzAction {
    #[default]
    Allow,
    Deny,
}

/// Who may call a service.
#[derive(Debug, Clone)]
pub struct AuthorizationPolicy {
    pub service: Name,
    pub default_action: AuthzAction,
    pub allow: Vec<AuthzRule>,
}

#[derive(Debug, Clone)]
pub struct AuthzRule {
    pub sources: Vec<SourceMatch>,
    /// Empty = every port.
    pub ports: Vec<u16>,
    pub path_prefix: Option<Name>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMatch {
    Any,
    Exact(Name),
    /// `spiffe://<td>/ns/<namespace>/` prefix (from a `.../*` wildcard).
    Prefix(Name),
}

impl SourceMatch {
    pub fn matches(&self, identity: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(id) => **id == *identity,
            Self::Prefix(p) => identity.starts_with(&**p),
        }
    }
}

/// Mesh-wide runtime knobs.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub trace_sampling_ratio: f64,
    pub trust_bundle_pem: Vec<Name>,
    pub access_log_ratio: f64,
}
