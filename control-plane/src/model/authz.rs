//! Authorization policy domain types: the allow-list of source identities a service accepts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthzAction {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRule {
    /// Exact SPIFFE IDs, `spiffe://<td>/ns/<ns>/*`, or `*`.
    pub sources: Vec<String>,
    pub ports: Vec<u16>,
    pub path_prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzPolicy {
    pub service: String,
    pub default_action: AuthzAction,
    pub allow: Vec<AuthzRule>,
}
