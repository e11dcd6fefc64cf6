//! The sidecar's state as the DNS server's source of VIPs, subscribing to unknown services on
//! demand the way the outbound listener does for an unknown authority.

use std::net::IpAddr;

use mesh_proto::names::qualified;

use super::{Fetch, VipLookup};
use crate::state::StateHandle;

// === impl VipLookup for StateHandle ===

impl VipLookup for StateHandle {
    /// The VIP of service `service` of `namespace` (its cluster's key is `service` in the
    /// default namespace, `service.namespace` elsewhere), when the cluster says that namespace
    /// (or names none).
    fn vip(&self, service: &str, namespace: &str) -> Option<IpAddr> {
        let key = qualified(service, namespace);
        let snap = self.load();
        let cluster = snap.clusters.get(key.as_str())?;
        match &cluster.namespace {
            Some(ns) if &**ns != namespace => None,
            _ => cluster.vip,
        }
    }

    /// Asks discovery for `service` and completes once the snapshot knows it, as present or as
    /// absent. A name that only looks like a service (`example.com` is `example` in namespace
    /// `com`) costs one subscription the control plane answers as absent, and is remembered.
    fn fetch(&self, service: &str, namespace: &str) -> Fetch {
        let (state, service) = (self.clone(), qualified(service, namespace));
        Box::pin(async move {
            // Subscribe to changes before asking, so an answer in between is not missed.
            let mut changed = state.changed();
            state.want(&service);
            while !state.load().knows(&service) {
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::state::Cluster;

    fn cluster(name: &str, namespace: Option<&str>, vip: &str) -> Cluster {
        let mut c = Cluster::with_defaults(name.into());
        c.namespace = namespace.map(Into::into);
        c.vip = Some(vip.parse().unwrap());
        c
    }

    #[test]
    fn vip_of_known_clusters_in_the_right_namespace() {
        let state = StateHandle::default();
        state.update(|s| {
            for c in [
                cluster("api.shop", Some("shop"), "240.240.0.1"),
                cluster("api", Some("default"), "240.240.0.3"),
                cluster("db", None, "240.240.0.2"),
            ] {
                s.clusters.insert(c.name.clone(), Arc::new(c));
            }
        });
        assert_eq!(
            state.vip("api", "shop"),
            Some("240.240.0.1".parse().unwrap())
        );
        assert_eq!(state.vip("api", "other"), None);
        // Same name, another namespace: another service.
        assert_eq!(
            state.vip("api", "default"),
            Some("240.240.0.3".parse().unwrap())
        );
        assert_eq!(
            state.vip("db", "default"),
            Some("240.240.0.2".parse().unwrap())
        );
        assert_eq!(state.vip("nope", "shop"), None);
    }

    /// `fetch` registers the want and completes when discovery delivers the service.
    #[tokio::test]
    async fn fetch_waits_for_the_on_demand_answer() {
        let state = StateHandle::default();
        let mut wanted = state.wanted();
        let fetch = tokio::spawn(state.fetch("api", "shop"));
        // Play the discovery client: see the want, deliver the cluster.
        tokio::time::timeout(
            Duration::from_secs(10),
            wanted.wait_for(|w| w.contains("api.shop")),
        )
        .await
        .unwrap()
        .unwrap();
        state.update(|s| {
            let c = cluster("api.shop", Some("shop"), "240.240.0.1");
            s.clusters.insert(c.name.clone(), Arc::new(c));
        });
        tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            state.vip("api", "shop"),
            Some("240.240.0.1".parse().unwrap())
        );
    }
}
