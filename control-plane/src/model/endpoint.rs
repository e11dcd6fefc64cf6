//! Registry domain types: declared services, endpoints and the node a proxy announces.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointState {
    #[default]
    Healthy,
    /// Finishes in-flight requests, gets no new ones.
    Draining,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointSource {
    /// Announced by a proxy's node; lives as long as its stream plus the lease grace.
    Proxy(String),
    /// Registered through the admin API; durable.
    Static,
}

/// One endpoint of a service: where its sidecar (or the app, when unmeshed) listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub state: EndpointState,
    /// SPIFFE ID the endpoint presents; `None` = unmeshed, plaintext.
    pub identity: Option<String>,
    pub app_port: Option<u16>,
    pub source: EndpointSource,
}

/// A service created through the admin API (kept across restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDecl {
    pub service: String,
    pub namespace: String,
    pub ports: Vec<u16>,
    /// SPIFFE IDs allowed to serve this service (secure naming). Empty = the default binding,
    /// the service account named like the service in its namespace.
    #[serde(default)]
    pub identities: Vec<String>,
}

/// Who a proxy is, from the first request of its discovery stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyNode {
    pub id: String,
    pub identity: Option<String>,
    pub service: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub proxy_version: String,
    pub address: IpAddr,
    pub inbound_port: u16,
    pub app_ports: Vec<u16>,
    pub zone: Option<String>,
}

// === impl ProxyNode ===

impl ProxyNode {
    /// The workload endpoint this node registers for its service.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: SocketAddr::new(self.address, self.inbound_port),
            // 1 = equal share; operators weight static endpoints explicitly.
            weight: 1,
            zone: self.zone.clone(),
            labels: self.labels.clone(),
            state: EndpointState::Healthy,
            identity: self.identity.clone(),
            app_port: self.app_ports.first().copied(),
            source: EndpointSource::Proxy(self.id.clone()),
        }
    }
}
