//! The discovery stream: connect, subscribe, apply + ACK/NACK, reconnect with backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, SystemTime};

use mesh_proto::discovery::v1::discovery_client::DiscoveryClient;
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, ErrorDetail, Node};
use mesh_proto::{WILDCARD, type_url};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::apply::{self, Change};
use super::backoff::Backoff;
use super::pending::Pending;
use super::store::{kind_of_url, url_of};
use super::{ConfigSource, Discovery, Nack, SERVICE_KINDS, persist, unix_ms};
use crate::admin::Health;
use crate::state::{ResourceKind, StateHandle};
use crate::telemetry::Metrics;

/// gRPC code sent in a NACK: INVALID_ARGUMENT, the config cannot be applied as it is.
const NACK_CODE: i32 = 3;
/// Requests queued towards the control plane: the initial burst (≤ 6 types) plus on-demand
/// subscriptions; a full queue only delays this loop, never drops a request.
const REQUEST_BUFFER: usize = 64;
/// Long enough for a TCP + TLS handshake to a loaded control plane in another zone; short
/// enough that a black-holed control plane falls back to the snapshot file within seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings detect a control plane that vanished without a FIN (host crash, partition) in
/// at most interval + timeout = 30 s, instead of the minutes TCP keepalive takes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A control plane that accepts the stream but sends no usable config within this long after
/// start-up counts as unreachable: the proxy serves its snapshot meanwhile (the control plane's
/// answers replace it as they arrive). Same reasoning as the connect timeout.
pub const SNAPSHOT_FALLBACK_AFTER: Duration = Duration::from_secs(5);

/// What the client needs to know about the proxy.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` of the discovery server.
    pub endpoint: String,
    /// Sent on the first request of every stream.
    pub node: Node,
    /// Services subscribed from the start (others on demand).
    pub eager_services: Vec<String>,
    /// Where the snapshot file lives; `None` = no snapshot.
    pub data_dir: Option<PathBuf>,
    pub backoff: Backoff,
    /// Listener settings from flags.
    pub local_listener: super::LocalListener,
    /// Serve the snapshot if no config is applied this long after start
    /// ([`SNAPSHOT_FALLBACK_AFTER`] in the binary).
    pub snapshot_fallback_after: Duration,
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("bad control-plane address: {}", chain(.0))]
    Address(tonic::transport::Error),
    #[error("cannot connect: {}", chain(.0))]
    Connect(tonic::transport::Error),
    #[error("stream failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("the request stream closed")]
    RequestsClosed,
    #[error("the control plane did not open the stream within {0:?}")]
    OpenTimeout(Duration),
}

/// Owns the discovery stream. Run it with [`Client::run`] on the control runtime.
pub struct Client {
    cfg: ClientConfig,
    discovery: Discovery,
    state: StateHandle,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    requests: mpsc::UnboundedReceiver<String>,
    /// First answers of services not yet complete.
    pending: Pending,
    tried_snapshot: bool,
    /// When to fall back to the snapshot if no config has been applied by then.
    fallback_at: tokio::time::Instant,
}

// === impl Client ===

impl Client {
    pub fn new(
        cfg: ClientConfig,
        state: StateHandle,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> (Self, Discovery) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fallback_at = tokio::time::Instant::now() + cfg.snapshot_fallback_after;
        let discovery = Discovery::new(Some(tx), cfg.local_listener.clone());
        {
            let mut subs = discovery.shared.subs.lock();
            subs.services.extend(cfg.eager_services.iter().cloned());
        }
        let client = Self {
            cfg,
            discovery: discovery.clone(),
            state,
            health,
            metrics,
            requests: rx,
            pending: Pending::default(),
            tried_snapshot: false,
            fallback_at,
        };
        (client, discovery)
    }

    /// Runs the stream forever: reconnects with backoff, and keeps the last config in force
    /// while disconnected. Cancel the task to stop it.
    pub async fn run(mut self) {
        let mut wanted = self.state.wanted();
        let mut attempt = 0u64;
        loop {
            if attempt > 0 {
                self.metrics.discovery_reconnect();
            }
            attempt += 1;
            match self.stream_once(&mut wanted).await {
                Ok(()) => info!("control plane closed the discovery stream"),
                Err(e) => warn!(error = %e, endpoint = %self.cfg.endpoint, "discovery stream down"),
            }
            self.set_connected(false);
            if self.should_fall_back() {
                self.tried_snapshot = true;
                self.load_snapshot().await;
            }
            let delay = self.cfg.backoff.next_delay();
            debug!(?delay, "reconnecting after backoff");
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            // Keep collecting subscriptions while waiting: they go out on the next stream.
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    Some(service) = self.requests.recv() => { self.add_service(service); }
                    Ok(()) = wanted.changed() => { self.add_wanted(&mut wanted); }
                }
            }
        }
    }

    async fn stream_once(
        &mut self,
        wanted: &mut tokio::sync::watch::Receiver<std::collections::BTreeSet<crate::state::Name>>,
    ) -> Result<(), StreamError> {
        let channel = tonic::transport::Endpoint::from_shared(self.cfg.endpoint.clone())
            .map_err(StreamError::Address)?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(StreamError::Connect)?;
        let mut client = DiscoveryClient::new(channel);
        self.add_wanted(wanted);

        let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
        let mut node = Some(self.cfg.node.clone());
        for url in type_url::ALL {
            if let Some(mut req) = self.initial_request(url) {
                req.node = node.take();
                tx.send(req)
                    .await
                    .map_err(|_| StreamError::RequestsClosed)?;
            }
        }
        let open = client.delta_stream(ReceiverStream::new(rx));
        let mut responses = tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| StreamError::OpenTimeout(CONNECT_TIMEOUT))??
            .into_inner();
        self.set_connected(true);
        // A new stream answers every subscription again from the start.
        self.pending.clear();
        info!(endpoint = %self.cfg.endpoint, "discovery stream up");

        loop {
            tokio::select! {
                msg = responses.message() => {
                    let Some(resp) = msg? else { return Ok(()) };
                    let (reply, changed) = self.handle(resp);
                    tx.send(reply).await.map_err(|_| StreamError::RequestsClosed)?;
                    // A response arrived and was answered: the stream works.
                    self.cfg.backoff.reset();
                    if changed {
                        self.persist().await;
                    }
                }
                Some(service) = self.requests.recv() => {
                    if self.add_service(service.clone()) {
                        for kind in SERVICE_KINDS {
                            tx.send(subscribe(kind, vec![service.clone()]))
                                .await
                                .map_err(|_| StreamError::RequestsClosed)?;
                        }
                    }
                }
                () = tokio::time::sleep_until(self.fallback_at), if self.should_fall_back() => {
                    self.tried_snapshot = true;
                    self.load_snapshot().await;
                }
                Ok(()) = wanted.changed() => {
                    let new = self.add_wanted(wanted);
                    if !new.is_empty() {
                        for kind in SERVICE_KINDS {
                            tx.send(subscribe(kind, new.clone()))
                                .await
                                .map_err(|_| StreamError::RequestsClosed)?;
                        }
                    }
                }
            }
        }
    }

    /// The first request of `url` on a new stream: its subscriptions and what is already held.
    fn initial_request(&self, url: &'static str) -> Option<DeltaDiscoveryRequest> {
        let kind = kind_of_url(url)?;
        let names: Vec<String> = match kind {
            ResourceKind::Listener | ResourceKind::Runtime => vec![WILDCARD.to_string()],
            ResourceKind::AuthorizationPolicy => vec![self.cfg.node.service.clone()],
            ResourceKind::Route | ResourceKind::Cluster | ResourceKind::Endpoints => {
                self.discovery.services()
            }
        };
        if names.is_empty() {
            return None;
        }
        let mut req = subscribe(kind, names);
        req.initial_resource_versions = self.discovery.store().versions(kind);
        Some(req)
    }

    /// Applies one response all-or-nothing and builds its ACK or NACK. Returns whether the
    /// applied config changed (to persist it).
    fn handle(&mut self, resp: DeltaDiscoveryResponse) -> (DeltaDiscoveryRequest, bool) {
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
        let changed = store != *before;
        shared.store.store(Arc::new(store));
        {
            // Recorded only now that the state holds the answer: waiters may act on it at once.
            let mut subs = shared.subs.lock();
            let names = resp.resources.iter().map(|r| &r.name);
            for name in names.chain(&resp.removed_resources) {
                subs.answered.insert((kind, name.clone()));
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
        let own = self.cfg.node.service.clone();
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

    /// True until a config is in force or the snapshot was tried once.
    fn should_fall_back(&self) -> bool {
        !self.tried_snapshot && !self.health.config_applied()
    }

    /// Records a subscription; true when it is new.
    fn add_service(&self, service: String) -> bool {
        self.discovery.shared.subs.lock().services.insert(service)
    }

    /// Records services the data path asked for through the state handle; returns new ones.
    fn add_wanted(
        &self,
        wanted: &mut tokio::sync::watch::Receiver<std::collections::BTreeSet<crate::state::Name>>,
    ) -> Vec<String> {
        let names: Vec<String> = wanted
            .borrow_and_update()
            .iter()
            .map(|n| n.to_string())
            .collect();
        names
            .into_iter()
            .filter(|n| self.add_service(n.clone()))
            .collect()
    }

    fn set_connected(&self, up: bool) {
        self.discovery.shared.connected.store(up, SeqCst);
        self.metrics.set_discovery_connected(up);
    }

    async fn persist(&self) {
        let Some(dir) = &self.cfg.data_dir else {
            return;
        };
        let file = self.discovery.store().to_file(self.discovery.services());
        if let Err(e) = persist::write(dir, &file).await {
            warn!(error = %e, "config snapshot not written; a restart during an outage would start empty");
        }
    }

    /// Serves from the snapshot file when the control plane is unreachable at start-up.
    async fn load_snapshot(&mut self) {
        let Some(dir) = &self.cfg.data_dir else {
            return;
        };
        let file = match persist::read(dir).await {
            Ok(Some(file)) => file,
            Ok(None) => {
                info!(dir = %dir.display(), "no config snapshot to fall back to");
                return;
            }
            Err(e) => {
                warn!(error = %e, "config snapshot unusable");
                return;
            }
        };
        match self.discovery.install(
            &file.resources,
            &file.services,
            &self.state,
            ConfigSource::SnapshotFile,
        ) {
            Ok(()) => {
                self.health.set_config_applied();
                info!(
                    resources = file.resources.len(),
                    "control plane unreachable: serving the config snapshot; ready"
                );
            }
            Err(e) => warn!(error = %e, "config snapshot rejected"),
        }
    }
}

/// An error with its sources: tonic's transport errors say only "transport error" on their own.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn subscribe(kind: ResourceKind, names: Vec<String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: url_of(kind).to_string(),
        resource_names_subscribe: names,
        ..Default::default()
    }
}
