//! Converts discovery resources to the domain model and applies them all-or-nothing.
//!
//! Every resource of a batch is converted before the state is touched; one bad resource rejects
//! the whole batch and the previous snapshot stays in force.

use std::sync::Arc;

use mesh_proto::types::v1::{Resource, resource::Kind};

use super::LocalListener;
use super::store::{kind_of, url_of};
use crate::state::{
    AuthorizationPolicy, Cluster, ConvertError, Endpoints, Listener, Name, ResourceKind, Route,
    Runtime, Snapshot, StateHandle,
};

/// The changes of one response (or one type of a snapshot file).
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub kind: ResourceKind,
    pub updated: &'a [Resource],
    pub removed: &'a [String],
}

/// Why a batch was rejected, naming the resource and the field: the NACK's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{type_url} {name:?} (version {version:?}): {detail}")]
pub struct Rejected {
    pub type_url: &'static str,
    pub name: String,
    pub version: String,
    /// `field: reason`.
    pub detail: String,
}

/// A resource converted to its domain type.
enum Converted {
    Listener(Arc<Listener>),
    Route(Arc<Route>),
    Cluster(Arc<Cluster>),
    Endpoints(Arc<Endpoints>),
    Authz(Arc<AuthorizationPolicy>),
    Runtime(Arc<Runtime>),
}

/// A resource converted, with its name and version.
type Item = (Name, Name, Converted);

/// Converts every resource of `changes`, then publishes them in one snapshot update.
pub fn apply(
    state: &StateHandle,
    local: &LocalListener,
    changes: &[Change<'_>],
) -> Result<(), Rejected> {
    let converted = convert_all(changes)?;
    state.update(|snap| {
        for (change, items) in converted {
            for name in change.removed {
                remove(snap, local, change.kind, name);
            }
            for (name, version, c) in items {
                insert(snap, local, name, version, c);
            }
        }
    });
    Ok(())
}

/// Checks that every resource of `change` converts, without touching any state.
pub fn validate(change: &Change<'_>) -> Result<(), Rejected> {
    convert_all(std::slice::from_ref(change)).map(drop)
}

fn convert_all<'c, 'a>(
    changes: &'c [Change<'a>],
) -> Result<Vec<(&'c Change<'a>, Vec<Item>)>, Rejected> {
    let mut converted = Vec::with_capacity(changes.len());
    for change in changes {
        let mut items = Vec::with_capacity(change.updated.len());
        for r in change.updated {
            let c = convert(change.kind, r).map_err(|e| Rejected {
                type_url: url_of(change.kind),
                name: r.name.clone(),
                version: r.version.clone(),
                detail: e.to_string(),
            })?;
            items.push((
                Name::from(r.name.as_str()),
                Name::from(r.version.as_str()),
                c,
            ));
        }
        converted.push((change, items));
    }
    Ok(converted)
}

fn convert(kind: ResourceKind, r: &Resource) -> Result<Converted, ConvertError> {
    if r.name.is_empty() {
        return Err(err("name", "must not be empty"));
    }
    let Some(inner) = &r.kind else {
        return Err(err("kind", "not set"));
    };
    if kind_of(r) != Some(kind) {
        return Err(err(
            "kind",
            format!("{:?} sent under type URL {}", kind_of(r), url_of(kind)),
        ));
    }
    let named = |field: &str, inner_name: &str| {
        if inner_name.is_empty() || inner_name == r.name {
            Ok(())
        } else {
            Err(err(
                field,
                format!("{inner_name:?} differs from the resource name {:?}", r.name),
            ))
        }
    };
    Ok(match inner {
        Kind::Listener(l) => {
            named("listener.name", &l.name)?;
            Converted::Listener(Arc::new(within("listener", Listener::try_from(l))?))
        }
        Kind::Route(x) => {
            named("route.service", &x.service)?;
            Converted::Route(Arc::new(within("route", Route::try_from(x))?))
        }
        Kind::Cluster(x) => {
            named("cluster.name", &x.name)?;
            Converted::Cluster(Arc::new(within("cluster", Cluster::try_from(x))?))
        }
        Kind::Endpoints(x) => {
            named("endpoints.service", &x.service)?;
            Converted::Endpoints(Arc::new(within("endpoints", Endpoints::try_from(x))?))
        }
        Kind::AuthorizationPolicy(x) => {
            named("authorization_policy.service", &x.service)?;
            Converted::Authz(Arc::new(within(
                "authorization_policy",
                AuthorizationPolicy::try_from(x),
            )?))
        }
        Kind::Runtime(x) => Converted::Runtime(Arc::new(within("runtime", Runtime::try_from(x))?)),
    })
}

fn err(field: &str, reason: impl std::fmt::Display) -> ConvertError {
    ConvertError {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

fn within<T>(outer: &str, r: Result<T, ConvertError>) -> Result<T, ConvertError> {
    r.map_err(|mut e| {
        e.field = if e.field.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}.{}", e.field)
        };
        e
    })
}

fn insert(snap: &mut Snapshot, local: &LocalListener, name: Name, version: Name, c: Converted) {
    let kind = match c {
        Converted::Listener(l) => {
            snap.listener = Some(local.merge(&l));
            ResourceKind::Listener
        }
        Converted::Route(r) => {
            snap.routes.insert(name.clone(), r);
            ResourceKind::Route
        }
        Converted::Cluster(x) => {
            snap.clusters.insert(name.clone(), x);
            ResourceKind::Cluster
        }
        Converted::Endpoints(x) => {
            snap.endpoints.insert(name.clone(), x);
            ResourceKind::Endpoints
        }
        Converted::Authz(x) => {
            snap.authz.insert(name.clone(), x);
            ResourceKind::AuthorizationPolicy
        }
        Converted::Runtime(x) => {
            snap.runtime = Some(x);
            ResourceKind::Runtime
        }
    };
    if is_service_kind(kind) {
        snap.absent.remove(&name);
    }
    snap.versions.insert((kind, name), version);
}

fn remove(snap: &mut Snapshot, local: &LocalListener, kind: ResourceKind, name: &str) {
    let key = Name::from(name);
    match kind {
        ResourceKind::Listener => {
            if snap.listener.as_ref().is_some_and(|l| *l.name == *name) {
                snap.listener = local.baseline();
            }
        }
        ResourceKind::Route => drop(snap.routes.remove(name)),
        ResourceKind::Cluster => drop(snap.clusters.remove(name)),
        ResourceKind::Endpoints => drop(snap.endpoints.remove(name)),
        ResourceKind::AuthorizationPolicy => drop(snap.authz.remove(name)),
        ResourceKind::Runtime => snap.runtime = None,
    }
    snap.versions.remove(&(kind, key.clone()));
    // A service the control plane has nothing for is answered `no-route` at once instead of
    // waiting; a service with endpoints but no route is routable (to all of them).
    let gone = !snap.routes.contains_key(name)
        && !snap.clusters.contains_key(name)
        && !snap.endpoints.contains_key(name);
    if is_service_kind(kind) && gone {
        snap.absent.insert(key);
    }
}

fn is_service_kind(kind: ResourceKind) -> bool {
    matches!(
        kind,
        ResourceKind::Route | ResourceKind::Cluster | ResourceKind::Endpoints
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::types::v1 as pb;

    fn endpoints(name: &str, addr: &str) -> Resource {
        Resource {
            name: name.into(),
            version: "v1".into(),
            kind: Some(Kind::Endpoints(pb::Endpoints {
                service: name.into(),
                endpoints: vec![pb::Endpoint {
                    address: addr.into(),
                    weight: 1,
                    ..Default::default()
                }],
            })),
        }
    }

    fn change<'a>(
        kind: ResourceKind,
        updated: &'a [Resource],
        removed: &'a [String],
    ) -> Change<'a> {
        Change {
            kind,
            updated,
            removed,
        }
    }

    #[test]
    fn one_bad_resource_rejects_the_batch() {
        let state = StateHandle::default();
        let good = [endpoints("a", "127.0.0.1:1")];
        apply(
            &state,
            &LocalListener::default(),
            &[change(ResourceKind::Endpoints, &good, &[])],
        )
        .unwrap();
        let before = state.snapshot().generation;

        let mixed = [
            endpoints("b", "127.0.0.1:2"),
            endpoints("c", "not-an-address"),
        ];
        let err = apply(
            &state,
            &LocalListener::default(),
            &[change(ResourceKind::Endpoints, &mixed, &[])],
        )
        .unwrap_err();
        assert_eq!(err.name, "c");
        assert!(err.detail.starts_with("endpoints.endpoints[0]"), "{err}");
        let snap = state.snapshot();
        assert_eq!(snap.generation, before);
        assert!(snap.endpoints.contains_key("a") && !snap.endpoints.contains_key("b"));
    }

    #[test]
    fn kind_must_match_type_and_name() {
        let state = StateHandle::default();
        let r = [endpoints("a", "127.0.0.1:1")];
        let err = apply(
            &state,
            &LocalListener::default(),
            &[change(ResourceKind::Route, &r, &[])],
        )
        .unwrap_err();
        assert!(err.detail.starts_with("kind:"), "{err}");
        let mut renamed = endpoints("a", "127.0.0.1:1");
        renamed.name = "x".into();
        let err = apply(
            &state,
            &LocalListener::default(),
            &[change(ResourceKind::Endpoints, &[renamed], &[])],
        )
        .unwrap_err();
        assert!(err.detail.starts_with("endpoints.service:"), "{err}");
    }

    #[test]
    fn removal_marks_a_service_absent_until_it_appears() {
        let state = StateHandle::default();
        let removed = ["ghost".to_string()];
        apply(
            &state,
            &LocalListener::default(),
            &[change(ResourceKind::Cluster, &[], &removed)],
        )
        .unwrap();
        assert!(state.snapshot().absent.contains("ghost"));
        let eps = [endpoints("ghost", "127.0.0.1:1")];
        apply(
            &state,
            &LocalListener::default(),
            &[change(ResourceKind::Endpoints, &eps, &[])],
        )
        .unwrap();
        let snap = state.snapshot();
        assert!(!snap.absent.contains("ghost"));
        assert_eq!(
            snap.versions
                .get(&(ResourceKind::Endpoints, Name::from("ghost")))
                .map(|v| &**v),
            Some("v1")
        );
    }
}
