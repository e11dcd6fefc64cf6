//! The applied resources as the control plane sent them (protos with versions), per type URL.
//!
//! The domain snapshot keeps converted types only; this store keeps the wire form for
//! `/config_dump`, the snapshot file and `initial_resource_versions` on reconnect.

use std::collections::{BTreeMap, HashMap};

use mesh_proto::type_url;
use mesh_proto::types::v1::{Resource, resource::Kind};
use serde::{Deserialize, Serialize};

use crate::state::ResourceKind;

/// Every applied resource, keyed by kind and name. Cloned and swapped whole on each change
/// (changes are rare and small next to request traffic).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceStore {
    resources: BTreeMap<(ResourceKind, String), Resource>,
}

/// The snapshot file and `/config_dump` body: every resource with its version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreFile {
    /// Services subscribed on demand (also those answered as absent).
    pub services: Vec<String>,
    pub resources: Vec<Resource>,
}

// === impl ResourceStore ===

impl ResourceStore {
    pub fn get(&self, kind: ResourceKind, name: &str) -> Option<&Resource> {
        self.resources.get(&(kind, name.to_string()))
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Every resource in kind, then name order.
    pub fn iter(&self) -> impl Iterator<Item = (ResourceKind, &Resource)> {
        self.resources.iter().map(|((k, _), r)| (*k, r))
    }

    /// name → version of every resource of `kind` (a reconnect's `initial_resource_versions`).
    pub fn versions(&self, kind: ResourceKind) -> HashMap<String, String> {
        self.iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, r)| (r.name.clone(), r.version.clone()))
            .collect()
    }

    /// Applies one response that was already validated. Resources whose kind does not match
    /// are skipped (validation rejects them before this point).
    pub fn apply(&mut self, kind: ResourceKind, updated: &[Resource], removed: &[String]) {
        for name in removed {
            self.resources.remove(&(kind, name.clone()));
        }
        for r in updated {
            if kind_of(r) == Some(kind) {
                self.resources.insert((kind, r.name.clone()), r.clone());
            }
        }
    }

    /// Builds a store from resources (snapshot file or static config), kinds taken from each.
    pub fn from_resources(resources: &[Resource]) -> Self {
        let mut store = Self::default();
        for r in resources {
            if let Some(kind) = kind_of(r) {
                store.resources.insert((kind, r.name.clone()), r.clone());
            }
        }
        store
    }

    pub fn to_file(&self, services: Vec<String>) -> StoreFile {
        StoreFile {
            services,
            resources: self.resources.values().cloned().collect(),
        }
    }
}

/// The domain kind of a type URL.
pub fn kind_of_url(url: &str) -> Option<ResourceKind> {
    Some(match url {
        type_url::LISTENER => ResourceKind::Listener,
        type_url::ROUTE => ResourceKind::Route,
        type_url::CLUSTER => ResourceKind::Cluster,
        type_url::ENDPOINTS => ResourceKind::Endpoints,
        type_url::AUTHORIZATION_POLICY => ResourceKind::AuthorizationPolicy,
        type_url::RUNTIME => ResourceKind::Runtime,
        _ => return None,
    })
}

/// The type URL of a kind.
pub fn url_of(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Listener => type_url::LISTENER,
        ResourceKind::Route => type_url::ROUTE,
        ResourceKind::Cluster => type_url::CLUSTER,
        ResourceKind::Endpoints => type_url::ENDPOINTS,
        ResourceKind::AuthorizationPolicy => type_url::AUTHORIZATION_POLICY,
        ResourceKind::Runtime => type_url::RUNTIME,
    }
}

/// The kind a resource carries; `None` when its `kind` oneof is unset.
pub fn kind_of(r: &Resource) -> Option<ResourceKind> {
    Some(match r.kind.as_ref()? {
        Kind::Listener(_) => ResourceKind::Listener,
        Kind::Route(_) => ResourceKind::Route,
        Kind::Cluster(_) => ResourceKind::Cluster,
        Kind::Endpoints(_) => ResourceKind::Endpoints,
        Kind::AuthorizationPolicy(_) => ResourceKind::AuthorizationPolicy,
        Kind::Runtime(_) => ResourceKind::Runtime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::types::v1::Route;

    fn route(name: &str, version: &str) -> Resource {
        Resource {
            name: name.into(),
            version: version.into(),
            kind: Some(Kind::Route(Route {
                service: name.into(),
                rules: vec![],
            })),
        }
    }

    #[test]
    fn apply_updates_removes_and_reports_versions() {
        let mut s = ResourceStore::default();
        s.apply(
            ResourceKind::Route,
            &[route("a", "1"), route("b", "1")],
            &[],
        );
        s.apply(ResourceKind::Route, &[route("a", "2")], &["b".into()]);
        let v = s.versions(ResourceKind::Route);
        assert_eq!(v.len(), 1);
        assert_eq!(v["a"], "2");
        assert!(s.versions(ResourceKind::Cluster).is_empty());
    }

    #[test]
    fn file_round_trips_through_json() {
        let mut s = ResourceStore::default();
        s.apply(ResourceKind::Route, &[route("a", "1")], &[]);
        let json = serde_json::to_string(&s.to_file(vec!["a".into()])).unwrap();
        let back: StoreFile = serde_json::from_str(&json).unwrap();
        assert_eq!(back.services, ["a"]);
        assert_eq!(ResourceStore::from_resources(&back.resources), s);
    }
}
