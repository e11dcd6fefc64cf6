//! The control plane's core: configuration and registry state, loaded from and persisted to
//! the store, and turned into published snapshot resources (immediately for admin writes,
//! coalesced for registry churn).

mod admission;
mod config_ops;
mod resources;
mod service_ops;
mod tokens;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use admission::Denied;
pub use config_ops::RouteEdit;
pub use tokens::TokenRecord;

use crate::metrics::Metrics;
use crate::model::{AuthzPolicy, ClusterPolicy, Endpoint, Route, Runtime, ServiceDecl};
use crate::proxies::ProxyHandle;
use crate::registry::{Exhausted, Registry, VipRange};
use crate::snapshot::{Key, Kind, Snapshot};
use crate::store::{Op, Store, StoreError, Table, list_typed};
use crate::validate::ValidationError;

/// Settings the core needs from the process configuration.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub trust_domain: String,
    pub vip_range: VipRange,
    pub lease_grace: Duration,
    pub coalesce: Duration,
    /// Proxies without a mesh certificate may register (development only).
    pub allow_anonymous_proxies: bool,
    /// How long an unused service keeps its VIP.
    pub vip_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A conditional write found something else stored than the writer read.
    #[error("{0}")]
    Conflict(String),
}

pub struct Core {
    pub config: CoreConfig,
    store: Arc<dyn Store>,
    state: Mutex<State>,
    pub snapshot: Snapshot,
    /// Keys changed by registry churn, with the time of their first change, waiting for the
    /// coalescing window to close.
    dirty: Mutex<HashMap<Key, Instant>>,
    dirty_notify: Notify,
    /// Connected proxies by stream id (for ListProxies and the connected gauge).
    pub proxies: DashMap<u64, Arc<ProxyHandle>>,
    pub metrics: Metrics,
}

/// Everything the resources are built from. Guarded by one mutex: writers are admin calls and
/// stream connects/disconnects, all rare next to reads of the published snapshot.
pub(crate) struct State {
    pub registry: Registry,
    pub routes: BTreeMap<String, Route>,
    pub clusters: BTreeMap<String, ClusterPolicy>,
    pub authz: BTreeMap<String, AuthzPolicy>,
    pub runtime: Runtime,
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Revoked workload identities (SPIFFE IDs).
    pub revoked: BTreeSet<String>,
}

impl State {
    /// Who may serve `service` (secure naming): the registry's binding (declared, else the
    /// service account named like the service) plus the identities of unrevoked join tokens
    /// that name the service. Sorted, without duplicates.
    pub(crate) fn bound_identities(&self, service: &str) -> Vec<String> {
        let mut ids = self.registry.bound_identities(service);
        ids.extend(
            self.tokens
                .values()
                .filter(|t| !t.revoked && t.services.iter().any(|s| s == service))
                .map(|t| t.identity.clone()),
        );
        ids.sort();
        ids.dedup();
        ids
    }
}

pub use crate::snapshot::RUNTIME;

/// Static endpoints are keyed `service|address` (`|` never appears in either).
fn static_key(service: &str, e: &Endpoint) -> String {
    format!("{service}|{}", e.address)
}

// === impl Core ===

impl Core {
    /// Loads every durable table and publishes the initial snapshot.
    pub fn load(
        config: CoreConfig,
        store: Arc<dyn Store>,
        metrics: Metrics,
    ) -> Result<Arc<Self>, CoreError> {
        let mut registry = Registry::new(config.vip_range, &config.trust_domain);
        for (service, ip) in list_typed::<Ipv4Addr>(&*store, Table::Vips)? {
            if !registry.vips.restore(&service, ip) {
                tracing::warn!(%service, %ip, "stored VIP outside --vip-range; reallocating");
            }
        }
        for (_, decl) in list_typed::<ServiceDecl>(&*store, Table::Services)? {
            registry.declare(decl);
        }
        for (key, e) in list_typed::<Endpoint>(&*store, Table::StaticEndpoints)? {
            let service = key.split('|').next().unwrap_or_default();
            registry.upsert_static(service, e);
        }
        let state = State {
            registry,
            routes: list_typed(&*store, Table::Routes)?.into_iter().collect(),
            clusters: list_typed(&*store, Table::ClusterPolicies)?
                .into_iter()
                .collect(),
            authz: list_typed(&*store, Table::AuthzPolicies)?
                .into_iter()
                .collect(),
            runtime: list_typed::<Runtime>(&*store, Table::Runtime)?
                .into_iter()
                .find(|(k, _)| k == RUNTIME)
                .map(|(_, r)| r)
                .unwrap_or_default(),
            tokens: list_typed(&*store, Table::Tokens)?.into_iter().collect(),
            revoked: list_typed::<i64>(&*store, Table::Revoked)?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
        };
        let core = Arc::new(Self {
            config,
            store,
            state: Mutex::new(state),
            snapshot: Snapshot::default(),
            dirty: Mutex::new(HashMap::new()),
            dirty_notify: Notify::new(),
            proxies: DashMap::new(),
            metrics,
        });
        let mut keys: Vec<Key> = vec![(Kind::Runtime, RUNTIME.into())];
        {
            let mut st = core.state.lock();
            let services: Vec<String> = st
                .registry
                .known_services()
                .into_iter()
                .map(|v| v.service)
                .collect();
            for s in &services {
                core.ensure_vip(&mut st, s)?;
                keys.extend(service_keys(s));
            }
            keys.extend(st.routes.keys().map(|s| (Kind::Route, s.as_str().into())));
            keys.extend(st.authz.keys().map(|s| (Kind::Authz, s.as_str().into())));
        }
        core.rebuild(keys.into_iter().map(|k| (k, Instant::now())));
        Ok(core)
    }

    /// Applies ops in one store transaction, counting it.
    fn persist(&self, op: &'static str, ops: Vec<Op>) -> Result<(), CoreError> {
        let res = self.store.apply(ops);
        self.metrics.store_op(op, res.is_ok());
        Ok(res?)
    }

    /// Allocates (and persists) a VIP for a service that has none yet.
    fn ensure_vip(&self, st: &mut State, service: &str) -> Result<Ipv4Addr, CoreError> {
        let (ip, new) = st.registry.vips.ensure(service)?;
        if new {
            self.persist("put_vip", vec![Op::put(Table::Vips, service, &ip)])?;
        }
        Ok(ip)
    }

    /// Rebuilds the given resources from the current state and publishes them, in
    /// make-before-break order. Returns the new versions.
    pub(crate) fn rebuild(
        &self,
        keys: impl IntoIterator<Item = (Key, Instant)>,
    ) -> HashMap<Key, Option<Arc<str>>> {
        let st = self.state.lock();
        let mut versions = HashMap::new();
        let batch: Vec<_> = keys
            .into_iter()
            .map(|(key, changed_at)| {
                let v = resources::build(&st, &key, changed_at);
                versions.insert(key.clone(), v.as_ref().map(|v| v.version.clone()));
                (key, v)
            })
            .collect();
        // Published while still holding the state lock, so two rebuilds can never publish
        // out of order (an older state overwriting a newer one).
        self.snapshot.publish(batch);
        versions
    }

    /// Queues keys for the next coalesced rebuild.
    fn mark_dirty(&self, keys: impl IntoIterator<Item = Key>) {
        let now = Instant::now();
        let mut d = self.dirty.lock();
        for k in keys {
            d.entry(k).or_insert(now);
        }
        drop(d);
        self.dirty_notify.notify_one();
    }

    /// Rebuilds dirty resources at most once per coalescing window: a burst of endpoint
    /// changes becomes one publish (and one push per subscriber) per window, not one per
    /// change. An isolated change (nothing published within the last window) goes out at
    /// once, so coalescing costs latency only while a burst is actually happening.
    pub async fn run_builder(self: Arc<Self>) {
        let mut last: Option<Instant> = None;
        loop {
            self.dirty_notify.notified().await;
            if let Some(last) = last {
                tokio::time::sleep_until(last + self.config.coalesce).await;
            }
            last = Some(Instant::now());
            let batch: Vec<(Key, Instant)> = self.dirty.lock().drain().collect();
            if batch.is_empty() {
                continue;
            }
            let core = self.clone();
            // Building a large Endpoints resource is CPU work under the state lock; keep it
            // off the async workers.
            let _ = tokio::task::spawn_blocking(move || core.rebuild(batch)).await;
        }
    }

    /// Releases the VIPs of services that have had no endpoint and no configuration for the
    /// VIP grace period, checking a few times per period. Runs forever.
    pub async fn run_vip_sweeper(self: Arc<Self>) {
        // Four checks per grace period: a VIP is released at most a quarter late; at least
        // every 10 ms so a test's short grace does not spin.
        let every = (self.config.vip_grace / 4).max(Duration::from_millis(10));
        let mut idle_since: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::time::sleep(every).await;
            let now = Instant::now();
            let mut st = self.state.lock();
            let unused: Vec<String> = st
                .registry
                .vips
                .services()
                .filter(|s| {
                    !st.registry.is_known(s)
                        && !st.routes.contains_key(*s)
                        && !st.clusters.contains_key(*s)
                        && !st.authz.contains_key(*s)
                })
                .cloned()
                .collect();
            idle_since.retain(|s, _| unused.contains(s));
            for service in unused {
                let since = *idle_since.entry(service.clone()).or_insert(now);
                if now.duration_since(since) < self.config.vip_grace {
                    continue;
                }
                if self
                    .persist("delete_vip", vec![Op::delete(Table::Vips, &service)])
                    .is_ok()
                {
                    let ip = st.registry.vips.release(&service);
                    idle_since.remove(&service);
                    tracing::info!(%service, ?ip, "VIP released: no endpoint and no configuration");
                }
            }
        }
    }

    /// The service's VIP, if it holds one.
    pub fn vip_of(&self, service: &str) -> Option<Ipv4Addr> {
        self.state.lock().registry.vips.get(service)
    }

    /// The durable store, for the identity service's CA material (`Table::Ca`).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Whether a service is declared or has endpoints.
    pub fn is_known(&self, service: &str) -> bool {
        self.state.lock().registry.is_known(service)
    }
}

/// The per-service resources that depend on the registry.
fn service_keys(service: &str) -> [Key; 3] {
    let name: Arc<str> = service.into();
    [
        (Kind::Cluster, name.clone()),
        (Kind::Endpoints, name.clone()),
        (Kind::Listener, name),
    ]
}

pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
