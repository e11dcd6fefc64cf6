//! DNS capture: answers mesh service names with their VIP, forwards every other query.
//!
//! `init` redirects the workload's DNS (UDP/TCP port 53, any destination) to this server. Mesh
//! names — `svc`, `svc.<ns>` and `svc.<ns>.svc.<trust-domain>` — are answered from the
//! sidecar's state with the service's virtual IP, so `curl http://api:9080/` works with no
//! Kubernetes DNS; the outbound listener maps VIP:port back to the service. Everything else is
//! relayed unchanged to the resolvers of resolv.conf as captured at start-up. The sidecar runs
//! as the proxy uid, which `init` exempts, so those relayed queries reach the real resolver.
//!
//! Wiring (at start-up, before the app starts); `StateHandle` implements `VipLookup`, asking
//! discovery on demand for names it does not know yet:
//! ```no_run
//! # async fn wire(state: mesh_sidecar::state::StateHandle) -> std::io::Result<()> {
//! use mesh_sidecar::dns::{DnsConfig, DnsServer, MeshNames, DEFAULT_DNS_PORT, resolv};
//! let upstreams = resolv::read("/etc/resolv.conf".as_ref())?;
//! let names = MeshNames { namespace: "default".into(), trust_domain: "cluster.local".into() };
//! let server =
//!     DnsServer::bind(DnsConfig::new(DEFAULT_DNS_PORT, upstreams, names), std::sync::Arc::new(state))
//!         .await?;
//! tokio::spawn(server.serve(std::future::pending()));
//! # Ok(()) }
//! ```

pub mod message;
pub mod resolv;
mod server;
mod state;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

pub use server::{DnsConfig, DnsServer};

/// Default port of the DNS server. Above 1024 so the sidecar binds it without
/// CAP_NET_BIND_SERVICE (it runs as an unprivileged uid), inside the mesh's 150xx block, and
/// ending in 53 so it is recognisable in rules and captures.
pub const DEFAULT_DNS_PORT: u16 = 15053;

/// A future that only signals completion.
pub type Fetch = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the sidecar's state answers "which VIP does this service have?".
pub trait VipLookup: Send + Sync + 'static {
    /// The VIP of `service` in `namespace`, if the mesh knows that service now.
    fn vip(&self, service: &str, namespace: &str) -> Option<IpAddr>;

    /// Called when `vip` had no answer for a mesh-shaped name: completes once the lookup knows
    /// whether the service exists (e.g. after an on-demand subscription was answered). The
    /// server bounds the wait and asks `vip` once more. Default: nothing to fetch.
    fn fetch(&self, _service: &str, _namespace: &str) -> Fetch {
        Box::pin(std::future::ready(()))
    }
}

impl<F> VipLookup for F
where
    F: Fn(&str, &str) -> Option<IpAddr> + Send + Sync + 'static,
{
    fn vip(&self, service: &str, namespace: &str) -> Option<IpAddr> {
        self(service, namespace)
    }
}

/// How mesh names are formed for this workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshNames {
    /// The workload's own namespace: a bare `svc` means `svc.<namespace>`.
    pub namespace: String,
    /// The mesh trust domain (e.g. `cluster.local`), the suffix of fully qualified names.
    pub trust_domain: String,
}

// === impl MeshNames ===

impl MeshNames {
    /// `(service, namespace)` if `name` (lower-case, no trailing dot) has a mesh name's shape.
    /// Whether that service exists is the lookup's call; names that are not mesh services are
    /// forwarded.
    pub fn service_of<'a>(&'a self, name: &'a str) -> Option<(&'a str, &'a str)> {
        let mut labels = name.splitn(4, '.');
        let svc = labels.next().filter(|s| !s.is_empty())?;
        let Some(ns) = labels.next() else {
            return Some((svc, self.namespace.as_str()));
        };
        match (labels.next(), labels.next()) {
            (None, _) if !ns.is_empty() => Some((svc, ns)),
            (Some("svc"), Some(td)) if !ns.is_empty() && td == self.trust_domain => Some((svc, ns)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_name_shapes() {
        let names = MeshNames {
            namespace: "shop".into(),
            trust_domain: "mesh.local".into(),
        };
        assert_eq!(names.service_of("api"), Some(("api", "shop")));
        assert_eq!(names.service_of("api.billing"), Some(("api", "billing")));
        assert_eq!(
            names.service_of("api.billing.svc.mesh.local"),
            Some(("api", "billing"))
        );
        for other in [
            "api.billing.svc.other.local",
            "www.example.com",
            "api.billing.svc",
            "",
            ".x",
        ] {
            assert_eq!(names.service_of(other), None, "{other}");
        }
    }
}
