//! One response: validate, hold or apply all-or-nothing, record, and build the ACK or NACK.

use std::sync::Arc;
use std::time::SystemTime;

use mesh_proto::WILDCARD;
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, ErrorDetail};
use tracing::{debug, info, warn};

use super::Client;
use crate::state::ResourceKind;
use crate::xds::apply::{self, Change};
use crate::xds::store::{kind_of_url, url_of};
use crate::xds::{ConfigSource, Nack, SERVICE_KINDS, unix_ms};

/// gRPC code sent in a NACK: INVALID_ARGUMENT, the config cannot be applied as it is.
const NACK_CODE: i32 = 3;

// === impl Client ===

impl Client {
    /// Applies one response all-or-nothing and builds its ACK or NACK. Returns whether the
    /// applied config changed (to persist it).
    pub(super) fn handle(&mut self, resp: DeltaDiscoveryResponse) -> (DeltaDiscoveryRequest, bool) {
        let nonce = resp.nonce.clone();
        let Some(kind) = kind_of_url(&resp.type_url) else {
            let error = format!("unknown type URL {:?}", resp.type_url);
            return (self.nack(&resp.type_url, "unknown", nonce, error), false);
        };
        let url = url_of(kind);
        let change = Change {
            kind,
            updated: &resp.resources,
            removed: &resp.removed_resources,
        };
        // Validated whole before anything is held or applied; the released batch is converted
        // again when applied. Config changes are rare next to requests, and holding answers in
        // wire form keeps the held set simple.
        if let Err(rejected) = apply::validate(&change) {
            return (self.nack(url, url, nonce, rejected.to_string()), false);
        }

        // A subscribed service's first answers are held until all its kinds have answered.
        let shared = &self.discovery.shared;
        let batch = {
            let subs = shared.subs.lock();
            let answered = |k: ResourceKind, n: &str| subs.answered.contains(&(k, n.to_string()));
            let holding = |n: &str| {
                SERVICE_KINDS.contains(&kind)
                    && subs.services.contains(n)
                    && !SERVICE_KINDS.iter().all(|k| answered(*k, n))
            };
            let completes = |n: &str| SERVICE_KINDS.iter().all(|k| *k == kind || answered(*k, n));
            self.pending.split(
                kind,
                &resp.resources,
                &resp.removed_resources,
                holding,
                completes,
            )
        };
        let changes = batch.changes();
        if let Err(rejected) = apply::apply(&self.state, &shared.local, &changes) {
            return (self.nack(url, url, nonce, rejected.to_string()), false);
        }

        let before = self.discovery.store();
        let mut store = (*before).clone();
        for c in &changes {
            store.apply(c.kind, c.updated, c.removed);
        }
        let mut changed = store != *before;
        shared.store.store(Arc::new(store));
        {
            // Recorded only now that the state holds the answer: waiters may act on it at once.
            let mut subs = shared.subs.lock();
            let names = resp.resources.iter().map(|r| &r.name);
            for name in names.chain(&resp.removed_resources) {
                // A first answer (even "absent") changes what the snapshot file must list.
                changed |= subs.answered.insert((kind, name.clone()));
            }
            if kind == ResourceKind::Listener {
                subs.answered.insert((kind, WILDCARD.to_string()));
            }
        }
        *shared.source.lock() = ConfigSource::ControlPlane;
        shared.applied.send_modify(|g| *g += 1);
        self.metrics.ack(url);
        debug!(
            type_url = url,
            nonce,
            updated = resp.resources.len(),
            removed = resp.removed_resources.len(),
            held = self.pending.len(),
            "applied"
        );
        self.check_ready();
        let ack = DeltaDiscoveryRequest {
            type_url: url.to_string(),
            response_nonce: nonce,
            ..Default::default()
        };
        (ack, changed)
    }

    fn nack(
        &self,
        type_url: &str,
        label: &'static str,
        nonce: String,
        error: String,
    ) -> DeltaDiscoveryRequest {
        warn!(type_url, nonce, %error, "rejected config; the previous config stays in force");
        self.metrics.nack(label);
        self.discovery.shared.last_nack.store(Some(Arc::new(Nack {
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
            error: error.clone(),
            at_unix_ms: unix_ms(SystemTime::now()),
        })));
        DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            response_nonce: nonce,
            error_detail: Some(ErrorDetail {
                code: NACK_CODE,
                message: error,
            }),
            ..Default::default()
        }
    }

    /// Ready once the proxy's own listener and authorization policy have been answered: what
    /// the inbound side needs before it may serve peers.
    fn check_ready(&self) {
        let own = own_service(&self.cfg.node);
        let ready = {
            let subs = self.discovery.shared.subs.lock();
            subs.answered
                .contains(&(ResourceKind::Listener, WILDCARD.to_string()))
                && subs
                    .answered
                    .contains(&(ResourceKind::AuthorizationPolicy, own))
        };
        if ready && self.health.set_config_applied() {
            info!("first config from the control plane applied; ready");
        }
    }
}

/// The proxy's own service as resources name it: `service` in the default namespace,
/// `service.namespace` elsewhere.
pub(super) fn own_service(node: &mesh_proto::discovery::v1::Node) -> String {
    mesh_proto::names::qualified(&node.service, &node.namespace)
}
