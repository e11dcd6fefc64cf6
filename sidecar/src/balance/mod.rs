//! Load balancers over an endpoint set: P2C/PeakEWMA, round robin, weighted round robin, ring hash.
//!
//! Everything here is built once per config update ([`ServiceLb::build`]); a pick only reads
//! atomics and immutable vectors: no locks, no allocation.

mod endpoint;
mod hash;
mod health;
mod pick;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

pub use endpoint::{InFlight, LbEndpoint, Outcome, Outlier};
pub use hash::{cookie, hash64, request_hash};
pub use health::watch as watch_health;
pub use pick::Subset;
pub use stats::EndpointStats;

use crate::state::{Cluster, Endpoint, Endpoints, Name, TlsMode};

/// Everything the data path needs to pick an endpoint of one service, built once per update.
#[derive(Debug)]
pub struct ServiceLb {
    pub service: Name,
    /// The cluster in force (defaults when the service has no Cluster resource).
    pub cluster: Arc<Cluster>,
    all: Subset,
    /// By the endpoints' `version` label.
    subsets: HashMap<Name, Subset>,
    cluster_in: Option<Arc<Cluster>>,
    endpoints_in: Option<Arc<Endpoints>>,
    /// Requests in flight on this build's endpoints (a rebuild starts from zero: requests
    /// already running on the old build are not counted against the new limit).
    in_flight: Arc<AtomicU32>,
}

/// Whether a proxy with an identity may dial `e`: never in plaintext when the cluster is
/// strict (the default), and only when its identity is one the control plane binds to the
/// service (a cluster without bindings, from a static config, trusts the endpoint's own).
/// Permissive clusters admit identity-less (plaintext) endpoints; disabled ones everything.
pub fn admissible(e: &Endpoint, cluster: &Cluster) -> bool {
    let bound = |id: &Name| cluster.identities.is_empty() || cluster.identities.contains(id);
    match (cluster.tls_mode, &e.identity) {
        (TlsMode::Disabled, _) => true,
        (TlsMode::Permissive, None) => true,
        (TlsMode::Strict, None) => false,
        (_, Some(id)) => bound(id),
    }
}

// === impl ServiceLb ===

impl ServiceLb {
    /// Builds the balancers; endpoints that stay (same address) keep their stats from `prev`.
    pub fn build(
        service: Name,
        cluster_in: Option<Arc<Cluster>>,
        endpoints_in: Option<Arc<Endpoints>>,
        prev: Option<&ServiceLb>,
    ) -> Self {
        Self::build_admitting(service, cluster_in, endpoints_in, prev, false)
    }

    /// Like [`Self::build`]; with `mtls` (this proxy has an identity) only the endpoints a
    /// meshed caller may dial take part ([`admissible`]).
    pub fn build_admitting(
        service: Name,
        cluster_in: Option<Arc<Cluster>>,
        endpoints_in: Option<Arc<Endpoints>>,
        prev: Option<&ServiceLb>,
        mtls: bool,
    ) -> Self {
        let cluster = cluster_in
            .clone()
            .unwrap_or_else(|| Arc::new(Cluster::with_defaults(service.clone())));
        let old: HashMap<SocketAddr, &Arc<EndpointStats>> = prev
            .map(|p| {
                p.all
                    .members()
                    .iter()
                    .map(|e| (e.endpoint.addr, &e.stats))
                    .collect()
            })
            .unwrap_or_default();
        let all: &[Endpoint] = endpoints_in.as_deref().map_or(&[], |e| &e.endpoints);
        let admitted: Vec<Endpoint> = all
            .iter()
            .filter(|e| {
                let ok = !mtls || admissible(e, &cluster);
                if !ok {
                    tracing::warn!(
                        %service, endpoint = %e.addr, identity = e.identity.as_deref().unwrap_or(""),
                        "endpoint not dialled: it proves no identity bound to the service (strict mTLS)"
                    );
                }
                ok
            })
            .cloned()
            .collect();
        let eps: &[Endpoint] = &admitted;
        let stats: Vec<Arc<EndpointStats>> = eps
            .iter()
            .map(|e| old.get(&e.addr).map(|s| (*s).clone()).unwrap_or_default())
            .collect();
        let outlier = cluster
            .outlier
            .clone()
            .map(|cfg| Arc::new(Outlier::new(cfg, stats.clone())));
        let in_flight = Arc::new(AtomicU32::new(0));
        let members: Vec<Arc<LbEndpoint>> = eps
            .iter()
            .zip(stats)
            .map(|(e, s)| {
                Arc::new(LbEndpoint::new(
                    e.clone(),
                    s,
                    outlier.clone(),
                    in_flight.clone(),
                    cluster.clone(),
                ))
            })
            .collect();

        let mut by_version: HashMap<Name, Vec<Arc<LbEndpoint>>> = HashMap::new();
        for m in &members {
            if let Some(v) = m.endpoint.label(Endpoint::VERSION_LABEL) {
                by_version.entry(v.clone()).or_default().push(m.clone());
            }
        }
        let subsets = by_version
            .into_iter()
            .map(|(v, ms)| (v, Subset::new(ms, cluster.lb)))
            .collect();
        Self {
            all: Subset::new(members, cluster.lb),
            subsets,
            service,
            cluster,
            cluster_in,
            endpoints_in,
            in_flight,
        }
    }

    /// Requests in flight on the service.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// True when the `max_requests` circuit breaker is open (limit reached).
    pub fn circuit_open(&self) -> bool {
        self.cluster
            .circuit_breakers
            .max_requests
            .is_some_and(|max| self.in_flight() >= max)
    }

    /// True when this was built from exactly these inputs (same `Arc`s).
    pub fn inputs_are(
        &self,
        cluster: Option<&Arc<Cluster>>,
        endpoints: Option<&Arc<Endpoints>>,
    ) -> bool {
        fn same<T>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        }
        same(self.cluster_in.as_ref(), cluster) && same(self.endpoints_in.as_ref(), endpoints)
    }

    /// The endpoints of `subset` (`version` label), or all of them for `None`.
    pub fn subset(&self, subset: Option<&str>) -> Option<&Subset> {
        match subset {
            None => Some(&self.all),
            Some(v) => self.subsets.get(v),
        }
    }

    /// Every endpoint with its live stats (for `/clusters`).
    pub fn endpoints(&self) -> &[Arc<LbEndpoint>] {
        self.all.members()
    }
}
