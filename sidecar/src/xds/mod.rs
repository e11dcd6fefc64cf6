//! The discovery stream client: subscribe on demand, apply, ACK/NACK, snapshot file.
//!
//! [`Client`] owns the stream and runs on the control runtime. [`Discovery`] is the cheap,
//! cloneable handle the data path and the admin server hold: on-demand subscriptions with a
//! bounded wait, the applied resources in wire form, the last NACK and the stream state.

pub mod apply;
pub mod backoff;
mod client;
mod local;
mod pending;
pub mod persist;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use mesh_proto::types::v1::Resource;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use client::{Client, ClientConfig, SNAPSHOT_FALLBACK_AFTER};
pub use local::LocalListener;
pub use store::ResourceStore;

use crate::health::Health;
use crate::state::{ResourceKind, StateHandle};

/// Where the config in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigSource {
    None,
    ControlPlane,
    SnapshotFile,
    Static,
}

/// The last rejected response.
#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    pub type_url: String,
    pub nonce: String,
    pub error: String,
    /// Unix time in milliseconds.
    pub at_unix_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnsureError {
    #[error("no answer from the control plane for {service:?} within {timeout:?}")]
    Timeout { service: String, timeout: Duration },
    #[error("no discovery client runs (static config): {service:?} is unknown")]
    NoClient { service: String },
}

/// Handle on the discovery state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: ArcSwap<ResourceStore>,
    last_nack: ArcSwapOption<Nack>,
    connected: AtomicBool,
    source: parking_lot::Mutex<ConfigSource>,
    subs: parking_lot::Mutex<Subscriptions>,
    /// Bumped after every applied change, so on-demand waiters re-check.
    applied: watch::Sender<u64>,
    /// Services to subscribe to; `None` when no client runs.
    requests: Option<mpsc::UnboundedSender<String>>,
    /// Listener settings from flags, merged into every applied Listener.
    local: LocalListener,
}

/// On-demand service subscriptions and which (kind, name) pairs have had an answer.
#[derive(Debug, Default)]
struct Subscriptions {
    services: BTreeSet<String>,
    answered: HashSet<(ResourceKind, String)>,
}

/// The kinds subscribed per outbound service.
const SERVICE_KINDS: [ResourceKind; 3] = [
    ResourceKind::Cluster,
    ResourceKind::Endpoints,
    ResourceKind::Route,
];

// === impl Discovery ===

impl Discovery {
    fn new(requests: Option<mpsc::UnboundedSender<String>>, local: LocalListener) -> Self {
        Self {
            shared: Arc::new(Shared {
                store: ArcSwap::default(),
                last_nack: ArcSwapOption::empty(),
                connected: AtomicBool::new(false),
                source: parking_lot::Mutex::new(ConfigSource::None),
                subs: parking_lot::Mutex::default(),
                applied: watch::channel(0).0,
                requests,
                local,
            }),
        }
    }

    /// Makes sure `service` is subscribed, then waits until the control plane has answered its
    /// cluster, endpoints and route (each with the resource or as absent), or `timeout`.
    /// Cheap when already answered: the data path may call it for every unknown authority.
    pub async fn ensure(&self, service: &str, timeout: Duration) -> Result<(), EnsureError> {
        let mut applied = self.shared.applied.subscribe();
        if self.is_answered(service) {
            return Ok(());
        }
        let sent = self
            .shared
            .requests
            .as_ref()
            .is_some_and(|tx| tx.send(service.to_string()).is_ok());
        if !sent {
            return Err(EnsureError::NoClient {
                service: service.to_string(),
            });
        }
        let wait = async {
            loop {
                if applied.changed().await.is_err() {
                    return false;
                }
                if self.is_answered(service) {
                    return true;
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(true) => Ok(()),
            _ => Err(EnsureError::Timeout {
                service: service.to_string(),
                timeout,
            }),
        }
    }

    /// True when cluster, endpoints and route of `service` have all been answered.
    pub fn is_answered(&self, service: &str) -> bool {
        let subs = self.shared.subs.lock();
        SERVICE_KINDS
            .iter()
            .all(|k| subs.answered.contains(&(*k, service.to_string())))
    }

    /// The applied resources in wire form.
    pub fn store(&self) -> Arc<ResourceStore> {
        self.shared.store.load_full()
    }

    pub fn last_nack(&self) -> Option<Arc<Nack>> {
        self.shared.last_nack.load_full()
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(SeqCst)
    }

    pub fn source(&self) -> ConfigSource {
        *self.shared.source.lock()
    }

    /// Services subscribed on demand (or eagerly), sorted.
    pub fn services(&self) -> Vec<String> {
        self.shared.subs.lock().services.iter().cloned().collect()
    }

    /// Applies `resources` as the whole config, without a control plane (`--static-config`).
    pub fn start_static(
        resources: &[Resource],
        local: LocalListener,
        state: &StateHandle,
        health: &Health,
    ) -> Result<Self, apply::Rejected> {
        let this = Self::new(None, local);
        this.install(resources, &[], state, ConfigSource::Static)?;
        health.set_config_applied();
        Ok(this)
    }

    /// Without a control plane nothing new can arrive: answers every service the data path asks
    /// for as absent at once, so it answers `no-route` instead of waiting for discovery.
    /// Runs until the state handle is gone.
    pub async fn answer_wants_as_absent(&self, state: StateHandle) {
        let mut wanted = state.wanted();
        loop {
            let names: Vec<String> = wanted
                .borrow_and_update()
                .iter()
                .map(|n| n.to_string())
                .collect();
            if !names.is_empty() {
                let change = apply::Change {
                    kind: ResourceKind::Cluster,
                    updated: &[],
                    removed: &names,
                };
                // Removals of unknown names always convert.
                let _ = apply::apply(&state, &self.shared.local, &[change]);
            }
            if wanted.changed().await.is_err() {
                return;
            }
        }
    }

    /// Applies a resource set atomically (snapshot file or static config) and records every
    /// service it names as answered. Resources already applied from the control plane are newer
    /// and are kept.
    fn install(
        &self,
        resources: &[Resource],
        services: &[String],
        state: &StateHandle,
        source: ConfigSource,
    ) -> Result<(), apply::Rejected> {
        let current = self.store();
        let mut by_kind: BTreeMap<ResourceKind, Vec<Resource>> = BTreeMap::new();
        for r in resources {
            let Some(kind) = store::kind_of(r) else {
                return Err(apply::Rejected {
                    type_url: "(none)",
                    name: r.name.clone(),
                    version: r.version.clone(),
                    detail: "kind: not set".into(),
                });
            };
            if current.get(kind, &r.name).is_none() {
                by_kind.entry(kind).or_default().push(r.clone());
            }
        }
        // Listed services without any resource were answered as absent: keep them so.
        let absent: Vec<String> = services
            .iter()
            .filter(|s| {
                SERVICE_KINDS.iter().all(|k| {
                    current.get(*k, s).is_none()
                        && !by_kind
                            .get(k)
                            .is_some_and(|l| l.iter().any(|r| &r.name == *s))
                })
            })
            .cloned()
            .collect();
        let mut changes = vec![apply::Change {
            kind: ResourceKind::Cluster,
            updated: &[],
            removed: &absent,
        }];
        changes.extend(by_kind.iter().map(|(kind, list)| apply::Change {
            kind: *kind,
            updated: list,
            removed: &[],
        }));
        apply::apply(state, &self.shared.local, &changes)?;

        let mut merged = (*current).clone();
        for (kind, list) in &by_kind {
            merged.apply(*kind, list, &[]);
        }
        {
            let mut subs = self.shared.subs.lock();
            let named = by_kind
                .iter()
                .filter(|(k, _)| SERVICE_KINDS.contains(k))
                .flat_map(|(_, list)| list.iter().map(|r| r.name.clone()));
            let loaded: BTreeSet<String> = services.iter().cloned().chain(named).collect();
            for s in loaded {
                for k in SERVICE_KINDS {
                    subs.answered.insert((k, s.clone()));
                }
                subs.services.insert(s);
            }
        }
        self.shared.store.store(Arc::new(merged));
        *self.shared.source.lock() = source;
        self.shared.applied.send_modify(|g| *g += 1);
        Ok(())
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_config_answers_unknown_services_as_absent() {
        let state = StateHandle::default();
        let health = Health::default();
        let d = Discovery::start_static(&[], LocalListener::default(), &state, &health).unwrap();
        assert!(health.is_ready());
        let task = tokio::spawn({
            let (d, state) = (d.clone(), state.clone());
            async move { d.answer_wants_as_absent(state).await }
        });
        let mut changed = state.changed();
        state.want("nosuch");
        tokio::time::timeout(Duration::from_secs(10), async {
            while !state.snapshot().absent.contains("nosuch") {
                changed.changed().await.unwrap();
            }
        })
        .await
        .expect("answered as absent");
        assert!(state.snapshot().knows("nosuch"));
        task.abort();
    }
}
