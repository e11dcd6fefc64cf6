//! Endpoint domain types: where a service's instances are and whether they take new work.

use std::net::SocketAddr;

use super::Name;

/// A service's endpoint set.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub service: Name,
    pub endpoints: Vec<Endpoint>,
}

/// One instance: `addr` is its sidecar's inbound listener (or the app itself when unmeshed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The app port behind the endpoint's sidecar; 0 = the sidecar's default app port.
    pub app_port: u16,
    /// Relative weight, ≥ 1.
    pub weight: u32,
    pub zone: Option<Name>,
    /// Sorted by key, so lookups can binary-search.
    pub labels: Vec<(Name, Name)>,
    pub state: EndpointState,
    /// SPIFFE ID the endpoint presents; `None` = unmeshed (plaintext, the app's own protocol).
    pub identity: Option<Name>,
    pub source: Name,
}

impl Endpoint {
    /// The label subsets select on.
    pub const VERSION_LABEL: &'static str = "version";

    /// Value of label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&Name> {
        self.labels
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &self.labels[i].1)
    }

    /// True when a peer sidecar fronts this endpoint (it speaks the mesh protocol): it has an
    /// identity, or a proxy registered it (before mTLS, registered proxies have no identity).
    pub fn is_meshed(&self) -> bool {
        self.identity.is_some() || self.source.starts_with("proxy:")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointState {
    #[default]
    Healthy,
    /// Finishes in-flight work, gets no new requests while a healthy endpoint exists.
    Draining,
    Unhealthy,
}
