//! The published configuration: every resource by (kind, name) with a content-hash version,
//! plus who watches what, so a change wakes only the streams subscribed to it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use mesh_proto::type_url;
use mesh_proto::types::v1 as pb;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::encode;

/// The key under which the runtime singleton is stored and published.
pub const RUNTIME: &str = "runtime";
use crate::model::{ListenerConfig, TlsMode};

/// Resource kinds, declared in make-before-break push order: what a route refers to
/// (clusters, endpoints) reaches the proxy before the route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Runtime,
    Cluster,
    Endpoints,
    Listener,
    Authz,
    Route,
}

pub type Key = (Kind, Arc<str>);

/// One published resource.
#[derive(Debug)]
pub struct Versioned {
    pub version: Arc<str>,
    pub content: Content,
    /// When the change that produced this version was made (before coalescing), for the
    /// change→ACK latency histogram.
    pub changed_at: Instant,
}

#[derive(Debug)]
pub enum Content {
    Resource(Box<pb::Resource>),
    /// Listeners are per proxy (app ports come from the node): the shared part only.
    Listener(ListenerTemplate),
}

/// The service-wide part of a proxy's inbound listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerTemplate {
    pub service: String,
    pub tls_mode: TlsMode,
    /// Cluster protocol TCP: every app port is opaque (never sniffed).
    pub opaque: bool,
}

/// One map per kind, keyed by `Arc<str>` so lookups by `&str` allocate nothing.
#[derive(Default)]
pub struct Snapshot {
    resources: [DashMap<Arc<str>, Arc<Versioned>>; 6],
    watchers: [DashMap<Arc<str>, HashSet<u64>>; 6],
    streams: DashMap<u64, Arc<Notify>>,
    generation: AtomicU64,
}

// === impl Kind ===

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Runtime,
        Kind::Cluster,
        Kind::Endpoints,
        Kind::Listener,
        Kind::Authz,
        Kind::Route,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Runtime => type_url::RUNTIME,
            Kind::Cluster => type_url::CLUSTER,
            Kind::Endpoints => type_url::ENDPOINTS,
            Kind::Listener => type_url::LISTENER,
            Kind::Authz => type_url::AUTHORIZATION_POLICY,
            Kind::Route => type_url::ROUTE,
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        // Accept the Envoy-style "type.googleapis.com/" prefix too; it costs nothing.
        let url = url.strip_prefix("type.googleapis.com/").unwrap_or(url);
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Kinds a proxy may subscribe to with the wildcard.
    pub fn wildcard_allowed(self) -> bool {
        matches!(self, Kind::Listener | Kind::Runtime)
    }
}

/// The version of a resource: a hash of its canonical (domain, JSON) form, so identical
/// content has an identical version across restarts. 16 hex digits (64 bits) make an
/// accidental collision between two versions of one resource negligible.
pub fn version_of<T: Serialize + ?Sized>(kind: Kind, value: &T) -> Arc<str> {
    let mut h = Sha256::new();
    h.update([kind as u8]);
    // Domain types serialize deterministically (BTreeMaps, ordered Vecs).
    h.update(serde_json::to_vec(value).unwrap_or_default());
    let digest = h.finalize();
    hex::encode(&digest[..8]).into()
}

/// Builds the listener a given proxy gets from the service-wide template.
pub fn personal_listener(t: &ListenerTemplate, app_ports: &[u16]) -> (Arc<str>, pb::Resource) {
    let config = ListenerConfig {
        name: t.service.clone(),
        app_ports: app_ports.to_vec(),
        opaque_ports: if t.opaque {
            app_ports.to_vec()
        } else {
            Vec::new()
        },
        server_first_ports: Vec::new(),
        // 0 = the proxy's own detection timeout default.
        detect_timeout_ms: 0,
        tls_mode: t.tls_mode,
        max_connections: 0,
    };
    let version = version_of(Kind::Listener, &config);
    let resource = pb::Resource {
        name: t.service.clone(),
        version: version.to_string(),
        kind: Some(pb::resource::Kind::Listener(encode::listener(&config))),
    };
    (version, resource)
}

// === impl Snapshot ===

impl Snapshot {
    pub fn get(&self, kind: Kind, name: &str) -> Option<Arc<Versioned>> {
        self.resources[kind.index()].get(name).map(|e| e.clone())
    }

    /// A counter bumped on every publish that changed something (`system_version_info`).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Publishes a batch in push order and wakes each watching stream once. Entries whose
    /// version did not change are skipped, so a rebuild that changes nothing pushes nothing.
    pub fn publish(&self, mut batch: Vec<(Key, Option<Versioned>)>) -> usize {
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        let mut woken: HashSet<u64> = HashSet::new();
        let mut changed = 0;
        for (key, value) in batch {
            let (kind, name) = key;
            let resources = &self.resources[kind.index()];
            let differs = match (&value, resources.get(&name)) {
                (Some(v), Some(cur)) => v.version != cur.version,
                (None, None) => false,
                _ => true,
            };
            if !differs {
                continue;
            }
            changed += 1;
            match value {
                Some(v) => {
                    resources.insert(name.clone(), Arc::new(v));
                }
                None => {
                    resources.remove(&name);
                }
            }
            if let Some(w) = self.watchers[kind.index()].get(&name) {
                woken.extend(w.iter().copied());
            }
        }
        if changed > 0 {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        for id in woken {
            if let Some(n) = self.streams.get(&id) {
                n.notify_one();
            }
        }
        changed
    }

    pub fn register_stream(&self, id: u64) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.streams.insert(id, n.clone());
        n
    }

    pub fn remove_stream(&self, id: u64, keys: impl IntoIterator<Item = Key>) {
        for k in keys {
            self.unwatch(id, &k);
        }
        self.streams.remove(&id);
    }

    pub fn watch(&self, id: u64, key: Key) {
        self.watchers[key.0.index()]
            .entry(key.1)
            .or_default()
            .insert(id);
    }

    pub fn unwatch(&self, id: u64, key: &Key) {
        if let dashmap::Entry::Occupied(mut e) = self.watchers[key.0.index()].entry(key.1.clone()) {
            e.get_mut().remove(&id);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.resources.iter().map(DashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.iter().all(DashMap::is_empty)
    }
}
