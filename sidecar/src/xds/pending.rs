//! First answers of a newly subscribed service, held until its cluster, endpoints and route
//! have all been answered, so the data path never routes on half a service.
//!
//! The control plane pushes each type in its own response (cluster, then endpoints, then
//! route). Applied one by one, a request arriving between the cluster and the endpoints would
//! find a known service without endpoints and fail; held and applied together, the service
//! appears complete in one snapshot.

use std::collections::{BTreeMap, HashMap};

use mesh_proto::types::v1::Resource;

use super::apply::Change;
use crate::state::ResourceKind;

/// One answer for a (kind, name): the resource, or its removal.
#[derive(Debug, Clone)]
enum Answer {
    Updated(Box<Resource>),
    Removed,
}

/// Held answers per service (the latest per kind wins).
#[derive(Debug, Default)]
pub(super) struct Pending {
    held: HashMap<String, BTreeMap<ResourceKind, Answer>>,
}

/// What to apply now, per kind.
#[derive(Debug, Default)]
pub(super) struct Batch {
    by_kind: BTreeMap<ResourceKind, (Vec<Resource>, Vec<String>)>,
}

// === impl Pending ===

impl Pending {
    /// Splits one validated response: answers for services in `holding` are held until
    /// `completes` says the service has all its answers, then released with this batch.
    pub fn split(
        &mut self,
        kind: ResourceKind,
        updated: &[Resource],
        removed: &[String],
        holding: impl Fn(&str) -> bool,
        completes: impl Fn(&str) -> bool,
    ) -> Batch {
        let mut batch = Batch::default();
        let mut touched = Vec::new();
        let answers = updated
            .iter()
            .map(|r| (r.name.as_str(), Answer::Updated(Box::new(r.clone()))))
            .chain(removed.iter().map(|n| (n.as_str(), Answer::Removed)));
        for (name, answer) in answers {
            if holding(name) {
                self.held
                    .entry(name.to_string())
                    .or_default()
                    .insert(kind, answer);
                touched.push(name.to_string());
            } else {
                batch.add(kind, name, answer);
            }
        }
        for name in touched {
            if completes(&name)
                && let Some(answers) = self.held.remove(&name)
            {
                for (k, answer) in answers {
                    batch.add(k, &name, answer);
                }
            }
        }
        batch
    }

    /// Services with held answers (for logs and tests).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Drops everything held: a new stream starts the answers over.
    pub fn clear(&mut self) {
        self.held.clear();
    }
}

// === impl Batch ===

impl Batch {
    fn add(&mut self, kind: ResourceKind, name: &str, answer: Answer) {
        let (updated, removed) = self.by_kind.entry(kind).or_default();
        match answer {
            Answer::Updated(r) => updated.push(*r),
            Answer::Removed => removed.push(name.to_string()),
        }
    }

    /// The batch as changes for [`super::apply::apply`].
    pub fn changes(&self) -> Vec<Change<'_>> {
        self.by_kind
            .iter()
            .map(|(kind, (updated, removed))| Change {
                kind: *kind,
                updated,
                removed,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, version: &str) -> Resource {
        Resource {
            name: name.into(),
            version: version.into(),
            kind: None,
        }
    }

    #[test]
    fn held_until_complete_then_released_together() {
        let mut p = Pending::default();
        let holding = |n: &str| n == "new";
        let b = p.split(
            ResourceKind::Cluster,
            &[r("new", "c1"), r("old", "c1")],
            &[],
            holding,
            |_| false,
        );
        let changes = b.changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].updated[0].name, "old");
        assert_eq!(p.len(), 1);

        // A newer endpoints answer replaces the held one.
        p.split(
            ResourceKind::Endpoints,
            &[r("new", "e1")],
            &[],
            holding,
            |_| false,
        );
        p.split(
            ResourceKind::Endpoints,
            &[r("new", "e2")],
            &[],
            holding,
            |_| false,
        );
        let b = p.split(ResourceKind::Route, &[], &["new".into()], holding, |n| {
            n == "new"
        });
        let changes = b.changes();
        let kinds: Vec<_> = changes.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                ResourceKind::Route,
                ResourceKind::Cluster,
                ResourceKind::Endpoints
            ]
        );
        assert_eq!(changes[2].updated.len(), 1);
        assert_eq!(changes[2].updated[0].version, "e2");
        assert_eq!(changes[0].removed, ["new"]);
        assert_eq!(p.len(), 0);
    }
}
