//! Connected proxies (the registry the core keeps and the discovery stream updates):
//! per-proxy, per-type discovery state: subscriptions, what the proxy holds, in-flight
//! responses, and the ACK/NACK record the admin API shows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::model::ProxyNode;
use crate::snapshot::Kind;

/// What one response carried for one name: the version sent (`None` = removed) and when the
/// change behind it happened.
pub type Sent = (String, Option<Arc<str>>, Instant);

#[derive(Debug, Default)]
pub struct TypeState {
    pub subscribed: BTreeSet<String>,
    pub wildcard: bool,
    /// What the proxy holds, as far as we know: `Some(version)`, or `None` after it was told
    /// the name does not exist. Names absent here were never answered.
    pub known: HashMap<String, Option<Arc<str>>>,
    pub last_nonce: Option<String>,
    /// Responses sent since the last ACK/NACK of the latest nonce, oldest first.
    pub inflight: Vec<(String, Vec<Sent>)>,
    pub acked: BTreeMap<String, String>,
    pub sent: BTreeMap<String, String>,
    pub last_nack_error: String,
    pub last_nack_unix_ms: i64,
    pub nack_count: u64,
    pub last_ack: Option<Instant>,
    /// Names asked for that cannot exist (malformed, or past the subscription limit): answered
    /// once as removed, never subscribed, never a reason to close the stream.
    pub refused: Vec<String>,
}

/// A connected proxy, shared between its stream task and the admin API.
#[derive(Debug)]
pub struct ProxyHandle {
    pub id: u64,
    pub node: ProxyNode,
    pub connected_since_unix_ms: i64,
    pub connected_at: Instant,
    pub types: Mutex<[TypeState; 6]>,
    /// Notified to end the stream (its identity was revoked).
    pub close: Notify,
}

// === impl TypeState ===

impl TypeState {
    /// Every name this proxy currently wants of the type, the wildcard resolved.
    pub fn effective(&self, wildcard_name: &str) -> BTreeSet<String> {
        let mut names = self.subscribed.clone();
        if self.wildcard {
            names.insert(wildcard_name.to_string());
        }
        names
    }
}

// === impl ProxyHandle ===

impl ProxyHandle {
    /// The name the wildcard stands for: the proxy's own listener, the runtime singleton.
    pub fn wildcard_name(&self, kind: Kind) -> &str {
        match kind {
            Kind::Listener => &self.node.service,
            _ => crate::snapshot::RUNTIME,
        }
    }
}
