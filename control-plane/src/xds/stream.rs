//! One proxy's discovery stream: applies subscription changes and ACK/NACKs, and pushes the
//! difference between what the proxy holds and the snapshot, type by type in push order.

use std::collections::BTreeSet;
use std::sync::Arc;

use mesh_proto::WILDCARD;
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tonic::{Status, Streaming};

use crate::core::Core;
use crate::metrics::TypeLabels;
use crate::model::ProxyNode;
use crate::proxies::{ProxyHandle, Sent, TypeState};
use crate::registry::LeaseKey;
use crate::snapshot::{Content, Kind, personal_listener};

/// Most names one proxy may subscribe to per type: far above any real proxy (which subscribes
/// to the services it calls) and small enough that one stream cannot exhaust memory. Names
/// past it are answered as not existing (the proxy answers `no-route` for them); the stream
/// and everything already subscribed stay.
const MAX_SUBSCRIPTIONS: usize = 10_000;
/// Longest version string accepted in `initial_resource_versions`: versions are content
/// hashes of a few dozen bytes; anything longer was not sent by this control plane.
const MAX_VERSION_LEN: usize = 128;
/// Responses awaiting an ACK kept per type: a proxy ACKs each within milliseconds; one that
/// never does must not grow the record without bound (the oldest are forgotten, so their
/// latency is not observed).
const MAX_INFLIGHT: usize = 16;
/// Largest response sent: a quarter of what sidecars accept (64 MiB) and above any single
/// resource bounded node labels allow, so a push of many resources is split, never dropped.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

type Tx = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

pub(super) struct ProxyStream {
    core: Arc<Core>,
    handle: Arc<ProxyHandle>,
    tx: Tx,
    notify: Arc<Notify>,
    nonce: u64,
}

// === impl ProxyStream ===

impl ProxyStream {
    pub(super) fn new(id: u64, core: Arc<Core>, node: ProxyNode, tx: Tx) -> Self {
        let handle = Arc::new(ProxyHandle {
            id,
            node,
            connected_since_unix_ms: crate::core::now_unix_ms(),
            connected_at: Instant::now(),
            types: Default::default(),
            close: Notify::new(),
        });
        let notify = core.snapshot.register_stream(id);
        core.proxies.insert(id, handle.clone());
        core.metrics.connected_proxies.inc();
        Self {
            core,
            handle,
            tx,
            notify,
            nonce: 0,
        }
    }

    pub(super) async fn run(
        mut self,
        first: DeltaDiscoveryRequest,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
        lease: LeaseKey,
    ) {
        let mut result = self.on_request(first).await;
        while result.is_ok() {
            result = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => self.on_request(req).await,
                    Ok(None) => Err(None),
                    Err(status) => {
                        tracing::debug!(stream = self.handle.id, %status, "stream error");
                        Err(None)
                    }
                },
                () = self.notify.notified() => self.push_all().await,
                () = self.handle.close.notified() => Err(Some(Status::permission_denied(format!(
                    "identity {} was revoked",
                    self.handle.node.identity.as_deref().unwrap_or("(none)")
                )))),
                () = self.tx.closed() => Err(None),
            };
        }
        if let Err(Some(status)) = result {
            tracing::warn!(stream = self.handle.id, proxy = %self.handle.node.id, %status, "closing stream");
            let _ = self.tx.send(Err(status)).await;
        }
        self.close(lease);
    }

    fn close(self, lease: LeaseKey) {
        let id = self.handle.id;
        let keys: Vec<_> = {
            let types = self.handle.types.lock();
            Kind::ALL
                .iter()
                .flat_map(|k| {
                    types[k.index()]
                        .effective(self.handle.wildcard_name(*k))
                        .into_iter()
                        .map(|n| (*k, Arc::<str>::from(n)))
                })
                .collect()
        };
        self.core.snapshot.remove_stream(id, keys);
        self.core.proxies.remove(&id);
        self.core.metrics.connected_proxies.dec();
        self.core.release(lease);
        tracing::info!(stream = id, proxy = %self.handle.node.id, "proxy disconnected");
    }

    /// `Err(Some(status))` ends the stream with that status; `Err(None)` ends it quietly.
    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Option<Status>> {
        if req.type_url.is_empty() {
            if req.resource_names_subscribe.is_empty() && req.response_nonce.is_empty() {
                return Ok(()); // node-only request
            }
            return Err(Some(Status::invalid_argument("type_url is required")));
        }
        let kind = Kind::from_type_url(&req.type_url).ok_or_else(|| {
            Some(Status::invalid_argument(format!(
                "unknown type_url {:?}",
                req.type_url
            )))
        })?;
        let changed = self.apply(kind, req).map_err(Some)?;
        if changed {
            self.push(kind).await?;
        }
        Ok(())
    }

    /// Applies ACK/NACK and subscription changes. Returns whether the subscription changed.
    fn apply(&self, kind: Kind, req: DeltaDiscoveryRequest) -> Result<bool, Status> {
        let wildcard_name = self.handle.wildcard_name(kind).to_string();
        let mut types = self.handle.types.lock();
        let ts = &mut types[kind.index()];
        if !req.response_nonce.is_empty() {
            if ts.last_nonce.as_deref() == Some(req.response_nonce.as_str()) {
                self.ack_or_nack(kind, ts, req.error_detail.as_ref());
            } else {
                // Stale: a newer response is in flight; its ACK/NACK will tell.
                tracing::debug!(stream = self.handle.id, nonce = %req.response_nonce, "stale nonce ignored");
            }
        }
        let before = ts.effective(&wildcard_name);
        let had_initial = !req.initial_resource_versions.is_empty();
        let mut refused_over_limit = 0usize;
        for name in &req.resource_names_subscribe {
            if name == WILDCARD {
                if !kind.wildcard_allowed() {
                    return Err(Status::invalid_argument(format!(
                        "wildcard subscription is not allowed for {}",
                        kind.type_url()
                    )));
                }
                ts.wildcard = true;
            } else if !valid_name(name) {
                // One bad name (an app's `Host: .`) costs that name, not the stream.
                refuse(ts, name);
            } else if ts.subscribed.len() >= MAX_SUBSCRIPTIONS && !ts.subscribed.contains(name) {
                refused_over_limit += 1;
                refuse(ts, name);
            } else {
                ts.subscribed.insert(name.clone());
            }
        }
        if refused_over_limit > 0 {
            tracing::warn!(
                stream = self.handle.id, proxy = %self.handle.node.id, type_url = kind.type_url(),
                refused = refused_over_limit, limit = MAX_SUBSCRIPTIONS,
                "subscription limit reached; further names answered as absent"
            );
        }
        if req.initial_resource_versions.len() > MAX_SUBSCRIPTIONS {
            return Err(Status::invalid_argument(format!(
                "{} initial_resource_versions for {}; at most {MAX_SUBSCRIPTIONS}",
                req.initial_resource_versions.len(),
                kind.type_url()
            )));
        }
        for (name, version) in req.initial_resource_versions {
            if name == WILDCARD {
                continue;
            }
            if !valid_name(&name) || version.len() > MAX_VERSION_LEN {
                return Err(Status::invalid_argument(format!(
                    "bad initial_resource_versions entry for {}: name of {} bytes, version of {} bytes",
                    kind.type_url(),
                    name.len(),
                    version.len()
                )));
            }
            if !(ts.wildcard && name == wildcard_name) {
                if ts.subscribed.len() >= MAX_SUBSCRIPTIONS && !ts.subscribed.contains(&name) {
                    continue;
                }
                ts.subscribed.insert(name.clone());
            }
            ts.known.insert(name, Some(version.into()));
        }
        for name in &req.resource_names_unsubscribe {
            if name == WILDCARD {
                ts.wildcard = false;
            } else {
                ts.subscribed.remove(name);
            }
        }
        let after = ts.effective(&wildcard_name);
        for gone in before.difference(&after) {
            ts.known.remove(gone);
            ts.sent.remove(gone);
            ts.acked.remove(gone);
            self.core
                .snapshot
                .unwatch(self.handle.id, &(kind, gone.as_str().into()));
        }
        for new in after.difference(&before) {
            self.core
                .snapshot
                .watch(self.handle.id, (kind, new.as_str().into()));
        }
        Ok(before != after || had_initial || !ts.refused.is_empty())
    }

    fn ack_or_nack(
        &self,
        kind: Kind,
        ts: &mut TypeState,
        error: Option<&mesh_proto::discovery::v1::ErrorDetail>,
    ) {
        let inflight = std::mem::take(&mut ts.inflight);
        match error {
            None => {
                let now = Instant::now();
                for (_, items) in inflight {
                    for (name, version, changed_at) in items {
                        match version {
                            Some(v) => {
                                ts.acked.insert(name, v.to_string());
                            }
                            None => {
                                ts.acked.remove(&name);
                            }
                        }
                        self.core
                            .metrics
                            .push_latency
                            .observe(now.duration_since(changed_at).as_secs_f64());
                    }
                }
                ts.last_ack = Some(now);
            }
            Some(e) => {
                // The proxy keeps its last good config; we keep `known` as sent so the
                // rejected version is not pushed again until the content changes.
                ts.nack_count += 1;
                ts.last_nack_error = e.message.clone();
                ts.last_nack_unix_ms = crate::core::now_unix_ms();
                self.core
                    .metrics
                    .nacks
                    .get_or_create(&TypeLabels {
                        type_url: kind.type_url(),
                    })
                    .inc();
                tracing::warn!(
                    stream = self.handle.id, proxy = %self.handle.node.id,
                    type_url = kind.type_url(), error = %e.message, "proxy rejected config"
                );
            }
        }
    }

    async fn push_all(&mut self) -> Result<(), Option<Status>> {
        for kind in Kind::ALL {
            self.push(kind).await?;
        }
        Ok(())
    }

    /// Sends what differs for one type, if anything.
    async fn push(&mut self, kind: Kind) -> Result<(), Option<Status>> {
        self.nonce += 1;
        let nonce = format!("{}-{}", self.handle.id, self.nonce);
        let start = std::time::SystemTime::now();
        let Some(resp) = self.diff(kind, nonce) else {
            return Ok(());
        };
        let version = resp.system_version_info.clone();
        let labels = TypeLabels {
            type_url: kind.type_url(),
        };
        let count = (resp.resources.len() + resp.removed_resources.len()) as u64;
        for part in split(resp, MAX_RESPONSE_BYTES) {
            self.tx.send(Ok(part)).await.map_err(|_| None)?;
        }
        self.core.metrics.pushes.get_or_create(&labels).inc();
        self.core
            .metrics
            .resources_pushed
            .get_or_create(&labels)
            .inc_by(count);
        crate::otel::global().push(
            kind.type_url(),
            count,
            &version,
            &self.handle.node.id,
            start,
        );
        Ok(())
    }

    fn diff(&self, kind: Kind, nonce: String) -> Option<DeltaDiscoveryResponse> {
        let wildcard_name = self.handle.wildcard_name(kind).to_string();
        let mut types = self.handle.types.lock();
        let ts = &mut types[kind.index()];
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        let mut items: Vec<Sent> = Vec::new();
        let names: BTreeSet<String> = ts.effective(&wildcard_name);
        for name in names {
            let current = self.core.snapshot.get(kind, &name).map(|v| {
                let (version, resource) = match &v.content {
                    Content::Resource(r) => (v.version.clone(), (**r).clone()),
                    Content::Listener(t) => personal_listener(t, &self.handle.node.app_ports),
                };
                (version, resource, v.changed_at)
            });
            match (ts.known.get(&name), current) {
                (Some(Some(have)), Some((v, _, _))) if *have == v => {}
                (_, Some((v, resource, changed_at))) => {
                    resources.push(resource);
                    ts.known.insert(name.clone(), Some(v.clone()));
                    ts.sent.insert(name.clone(), v.to_string());
                    items.push((name, Some(v), changed_at));
                }
                (Some(None), None) => {}
                (_, None) => {
                    ts.known.insert(name.clone(), None);
                    ts.sent.remove(&name);
                    removed.push(name.clone());
                    items.push((name, None, Instant::now()));
                }
            }
        }
        for name in std::mem::take(&mut ts.refused) {
            removed.push(name.clone());
            items.push((name, None, Instant::now()));
        }
        if items.is_empty() {
            return None;
        }
        ts.last_nonce = Some(nonce.clone());
        if ts.inflight.len() >= MAX_INFLIGHT {
            ts.inflight.remove(0);
        }
        ts.inflight.push((nonce.clone(), items));
        Some(DeltaDiscoveryResponse {
            system_version_info: self.core.snapshot.generation().to_string(),
            type_url: kind.type_url().to_string(),
            resources,
            removed_resources: removed,
            nonce,
        })
    }
}

/// Splits a response whose resources together exceed `limit` bytes into several, in order.
/// The last part keeps the response's nonce (the one the stream waits to see ACKed, which
/// acknowledges them all) and carries the removals; earlier parts get derived nonces whose
/// ACKs are stale by design. A single resource over the limit travels alone.
fn split(mut resp: DeltaDiscoveryResponse, limit: usize) -> Vec<DeltaDiscoveryResponse> {
    use prost::Message;
    let total: usize = resp.resources.iter().map(Message::encoded_len).sum();
    if total <= limit {
        return vec![resp];
    }
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for r in std::mem::take(&mut resp.resources) {
        let len = r.encoded_len();
        if size + len > limit && !current.is_empty() {
            parts.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(r);
    }
    let last = current;
    let mut out: Vec<DeltaDiscoveryResponse> = parts
        .into_iter()
        .enumerate()
        .map(|(i, resources)| DeltaDiscoveryResponse {
            system_version_info: resp.system_version_info.clone(),
            type_url: resp.type_url.clone(),
            resources,
            removed_resources: Vec::new(),
            nonce: format!("{}.{}", resp.nonce, i + 1),
        })
        .collect();
    resp.resources = last;
    out.push(resp);
    out
}

/// Resource names are service names (DNS labels, ≤ 253 bytes) or "runtime".
fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Queues `name` to be answered once as absent (echoed as asked, so the proxy matches it),
/// at most one subscription limit's worth per response; the request that carried the names
/// was itself bounded by the gRPC message limit.
fn refuse(ts: &mut TypeState, name: &str) {
    if ts.refused.len() < MAX_SUBSCRIPTIONS {
        ts.refused.push(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::types::v1 as pb;

    fn resource(name: &str, bytes: usize) -> pb::Resource {
        pb::Resource {
            name: name.into(),
            version: "x".repeat(bytes),
            ..Default::default()
        }
    }

    #[test]
    fn a_large_push_is_split_in_order_and_the_last_part_keeps_the_nonce() {
        let resp = DeltaDiscoveryResponse {
            system_version_info: "7".into(),
            type_url: "t".into(),
            resources: (0..10).map(|i| resource(&format!("r{i}"), 100)).collect(),
            removed_resources: vec!["gone".into()],
            nonce: "1-5".into(),
        };
        let parts = split(resp, 350);
        assert!(parts.len() > 1);
        let names: Vec<String> = parts
            .iter()
            .flat_map(|p| p.resources.iter().map(|r| r.name.clone()))
            .collect();
        assert_eq!(names, (0..10).map(|i| format!("r{i}")).collect::<Vec<_>>());
        let last = parts.last().unwrap();
        assert_eq!(last.nonce, "1-5");
        assert_eq!(last.removed_resources, vec!["gone".to_string()]);
        for p in &parts[..parts.len() - 1] {
            assert!(p.nonce.starts_with("1-5."), "{}", p.nonce);
            assert!(p.removed_resources.is_empty());
            let size: usize = p.resources.iter().map(prost::Message::encoded_len).sum();
            assert!(size <= 350);
        }
        // Small responses are untouched.
        let small = DeltaDiscoveryResponse {
            resources: vec![resource("a", 10)],
            nonce: "n".into(),
            ..Default::default()
        };
        assert_eq!(split(small.clone(), 350), vec![small]);
    }
}
