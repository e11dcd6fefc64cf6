//! `Snapshot`: everything currently applied, plus per-service data pre-built for the data path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::{AuthorizationPolicy, Cluster, Endpoints, Listener, Name, Route, Runtime};
use crate::balance::ServiceLb;

/// The resource types a snapshot holds (one per discovery type URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Listener,
    Route,
    Cluster,
    Endpoints,
    AuthorizationPolicy,
    Runtime,
}

/// The snapshot's maps hash with foldhash, not SipHash: their keys (service names, VIPs) come
/// from the control plane, never from request bytes, so hash flooding is not a concern, and
/// the data path looks names up several times per request.
pub type FastHasher = foldhash::fast::RandomState;
pub type NameMap<V> = HashMap<Name, V, FastHasher>;

/// Everything applied at one moment. Immutable once published; the discovery client edits a
/// copy through [`super::StateHandle::update`] and the data path reads it without locks.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub listener: Option<Arc<Listener>>,
    pub routes: NameMap<Arc<Route>>,
    pub clusters: NameMap<Arc<Cluster>>,
    pub endpoints: NameMap<Arc<Endpoints>>,
    pub authz: NameMap<Arc<AuthorizationPolicy>>,
    pub runtime: Option<Arc<Runtime>>,
    /// Services the control plane answered as not existing: answer `no-route` at once.
    pub absent: HashSet<Name, FastHasher>,
    /// Version of each applied resource, for ACKs, `/config_dump` and reconnects.
    pub versions: HashMap<(ResourceKind, Name), Name>,
    /// Bumped on every published update.
    pub generation: u64,
    /// This proxy has a workload identity, so it speaks mTLS and never downgrades: in a
    /// strict cluster (the default) it dials only endpoints with an identity bound to the
    /// service. Set once at start-up.
    pub mtls_peers: bool,
    /// Derived: balancers per service, rebuilt only for services whose inputs changed.
    lbs: NameMap<Arc<ServiceLb>>,
    /// Derived: `vip:port` → service, for transparent mode.
    vips: HashMap<SocketAddr, Name, FastHasher>,
}

// === impl Snapshot ===

impl Snapshot {
    /// The pre-built balancers of `service` (present when it has endpoints or a cluster).
    pub fn lb(&self, service: &str) -> Option<&Arc<ServiceLb>> {
        self.lbs.get(service)
    }

    /// Every service's balancers (for `/clusters`).
    pub fn lbs(&self) -> impl Iterator<Item = (&Name, &Arc<ServiceLb>)> {
        self.lbs.iter()
    }

    /// The service whose cluster VIP and port are `dst` (transparent mode).
    pub fn service_by_vip(&self, dst: SocketAddr) -> Option<&Name> {
        self.vips.get(&dst)
    }

    /// The interned name of a routable service (one with a route, endpoints or a cluster).
    pub fn service_key(&self, service: &str) -> Option<Name> {
        self.lbs
            .get_key_value(service)
            .map(|(k, _)| k)
            .or_else(|| self.routes.get_key_value(service).map(|(k, _)| k))
            .cloned()
    }

    /// True when `service` is known to the proxy (routable or answered as absent).
    pub fn knows(&self, service: &str) -> bool {
        self.lbs.contains_key(service)
            || self.routes.contains_key(service)
            || self.absent.contains(service)
    }

    /// Rebuilds derived data after an edit. Balancers whose cluster and endpoints are the same
    /// `Arc`s as before are reused as they are, so their latency and in-flight state survives;
    /// rebuilt ones carry over the per-endpoint stats of endpoints that remain.
    pub(crate) fn rebuild_derived(&mut self, prev: &Snapshot) {
        let names: HashSet<&Name> = self.clusters.keys().chain(self.endpoints.keys()).collect();
        let mut lbs = HashMap::with_capacity_and_hasher(names.len(), FastHasher::default());
        for name in names {
            let cluster = self.clusters.get(name);
            let endpoints = self.endpoints.get(name);
            let old = prev.lbs.get(name);
            let lb = match old {
                Some(old) if old.inputs_are(cluster, endpoints) => old.clone(),
                _ => {
                    let lb = Arc::new(ServiceLb::build_admitting(
                        name.clone(),
                        cluster.cloned(),
                        endpoints.cloned(),
                        old.map(|o| &**o),
                        self.mtls_peers,
                    ));
                    crate::balance::watch_health(&lb);
                    lb
                }
            };
            lbs.insert(name.clone(), lb);
        }
        self.lbs = lbs;

        self.vips.clear();
        for (name, c) in &self.clusters {
            if let Some(ip) = c.vip {
                for &port in &c.ports {
                    self.vips.insert(SocketAddr::new(ip, port), name.clone());
                }
            }
        }
    }
}
