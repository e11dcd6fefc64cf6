//! `StateHandle`: the atomically swapped current snapshot, its change signal and on-demand wants.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use super::{Name, Snapshot};

/// Shared by the discovery client (writer) and the data path (readers). Cheap to clone.
#[derive(Debug, Clone)]
pub struct StateHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: ArcSwap<Snapshot>,
    /// Serialises writers so two updates never race to publish (readers never take it).
    write: parking_lot::Mutex<()>,
    /// Carries the generation of the latest published snapshot.
    changed: watch::Sender<u64>,
    /// Services the data path has asked for but the snapshot does not know yet.
    wanted: watch::Sender<BTreeSet<Name>>,
}

// === impl StateHandle ===

impl Default for StateHandle {
    fn default() -> Self {
        Self::new(Snapshot::default())
    }
}

impl StateHandle {
    pub fn new(mut initial: Snapshot) -> Self {
        initial.rebuild_derived(&Snapshot::default());
        let generation = initial.generation;
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(initial),
                write: parking_lot::Mutex::new(()),
                changed: watch::channel(generation).0,
                wanted: watch::channel(BTreeSet::new()).0,
            }),
        }
    }

    /// The current snapshot, for the data path: lock-free, no reference-count traffic in the
    /// common case. Hold it for one request, not across long awaits.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.inner.current.load()
    }

    /// The current snapshot as an owned `Arc` (to keep across awaits).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Edits a copy of the current snapshot and publishes it atomically.
    pub fn update<R>(&self, edit: impl FnOnce(&mut Snapshot) -> R) -> R {
        match self.try_update(|s| Ok::<R, std::convert::Infallible>(edit(s))) {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// Like [`Self::update`], but publishes nothing when `edit` fails: the previous config stays
    /// in force (how a NACKed response is handled).
    pub fn try_update<R, E>(
        &self,
        edit: impl FnOnce(&mut Snapshot) -> Result<R, E>,
    ) -> Result<R, E> {
        let _writer = self.inner.write.lock();
        let prev = self.inner.current.load_full();
        let mut next = (*prev).clone();
        let out = edit(&mut next)?;
        next.rebuild_derived(&prev);
        next.generation = prev.generation + 1;
        let generation = next.generation;
        // Wants that are now answered are dropped so the discovery client sees only open ones.
        self.inner.wanted.send_if_modified(|w| {
            let before = w.len();
            w.retain(|name| !next.knows(name));
            w.len() != before
        });
        self.inner.current.store(Arc::new(next));
        self.inner.changed.send_replace(generation);
        Ok(out)
    }

    /// Fires after every published update (value: the generation).
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Asks for `service` to be fetched (on-demand subscription). Off the hot path: only called
    /// when a request names a service the snapshot does not know.
    pub fn want(&self, service: &str) {
        self.inner.wanted.send_if_modified(|w| {
            if w.contains(service) {
                false
            } else {
                w.insert(Name::from(service))
            }
        });
    }

    /// The services wanted but not yet known; the discovery client subscribes to them.
    pub fn wanted(&self) -> watch::Receiver<BTreeSet<Name>> {
        self.inner.wanted.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Cluster, Endpoint, EndpointState, Endpoints};

    fn endpoints(service: &str, port: u16) -> Arc<Endpoints> {
        Arc::new(Endpoints {
            service: service.into(),
            endpoints: vec![Endpoint {
                addr: ([127, 0, 0, 1], port).into(),
                app_port: 0,
                weight: 1,
                zone: None,
                labels: Vec::new(),
                state: EndpointState::Healthy,
                identity: None,
                source: "static".into(),
            }],
        })
    }

    #[test]
    fn update_publishes_and_rebuilds_only_changed_services() {
        let h = StateHandle::default();
        let rx = h.changed();
        h.update(|s| {
            s.endpoints.insert("a".into(), endpoints("a", 1));
            s.endpoints.insert("b".into(), endpoints("b", 2));
        });
        assert_eq!(*rx.borrow(), 1);
        let before = h.snapshot();
        h.update(|s| {
            s.endpoints.insert("b".into(), endpoints("b", 3));
        });
        let after = h.snapshot();
        assert!(Arc::ptr_eq(before.lb("a").unwrap(), after.lb("a").unwrap()));
        assert!(!Arc::ptr_eq(
            before.lb("b").unwrap(),
            after.lb("b").unwrap()
        ));
        assert_eq!(after.generation, 2);
    }

    #[test]
    fn failed_update_keeps_previous_config() {
        let h = StateHandle::default();
        let r: Result<(), &str> = h.try_update(|s| {
            s.clusters
                .insert("a".into(), Arc::new(Cluster::with_defaults("a".into())));
            Err("nack")
        });
        assert!(r.is_err());
        assert!(h.load().clusters.is_empty());
        assert_eq!(h.load().generation, 0);
    }

    #[test]
    fn wants_are_cleared_once_known() {
        let h = StateHandle::default();
        h.want("a");
        h.want("a");
        assert_eq!(h.wanted().borrow().len(), 1);
        h.update(|s| {
            s.absent.insert("a".into());
        });
        assert!(h.wanted().borrow().is_empty());
        assert!(h.load().knows("a"));
    }

    #[test]
    fn vip_maps_to_service() {
        let h = StateHandle::default();
        h.update(|s| {
            let mut c = Cluster::with_defaults("a".into());
            c.vip = Some([10, 96, 0, 1].into());
            c.ports = vec![80];
            s.clusters.insert("a".into(), Arc::new(c));
        });
        let dst = ([10, 96, 0, 1], 80).into();
        assert_eq!(h.load().service_by_vip(dst).map(|n| &**n), Some("a"));
    }
}
