//! The discovery stream: connect, subscribe, reconnect with backoff, snapshot fallback.

mod respond;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use mesh_proto::discovery::v1::discovery_client::DiscoveryClient;
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, Node};
use mesh_proto::{WILDCARD, type_url};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::pending::Pending;
use super::store::{kind_of_url, url_of};
use super::{ConfigSource, Discovery, SERVICE_KINDS, persist};
use crate::health::Health;
use crate::state::{ResourceKind, StateHandle};
use crate::telemetry::Metrics;

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

/// Largest discovery response accepted: a service of 10,000 endpoints carrying the most
/// labels the control plane admits (~4 KiB each) still fits, where gRPC's default of 4 MiB
/// would drop it (and the proxy would never get that service's config).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Services the data path asked for through the state handle.
type Wanted = tokio::sync::watch::Receiver<std::collections::BTreeSet<crate::state::Name>>;

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
    /// TLS for an `https://` control plane (verified against the mesh bundle).
    pub tls: Option<crate::identity::ControlTls>,
    /// The workload identity: a stream opens only once its certificate is there (the
    /// control plane authenticates the proxy with it). `None` = an anonymous proxy.
    pub workload: Option<Arc<crate::identity::CertStore>>,
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
    #[error("no workload certificate yet (the control plane authenticates the proxy with it)")]
    NoCertificate,
    #[error("control plane TLS: {0}")]
    Tls(#[from] crate::identity::ControlTlsError),
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

    async fn stream_once(&mut self, wanted: &mut Wanted) -> Result<(), StreamError> {
        if let Some(store) = &self.cfg.workload {
            tokio::time::timeout(CONNECT_TIMEOUT, store.ready())
                .await
                .map_err(|_| StreamError::NoCertificate)?;
        }
        let endpoint = match &self.cfg.tls {
            Some(tls) => tls.endpoint(&self.cfg.endpoint)?,
            None => tonic::transport::Endpoint::from_shared(self.cfg.endpoint.clone())
                .map_err(StreamError::Address)?,
        }
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
        let channel = match &self.cfg.tls {
            Some(tls) => tls.connect(endpoint).await,
            None => endpoint.connect().await,
        }
        .map_err(StreamError::Connect)?;
        let mut client =
            DiscoveryClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
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
            ResourceKind::AuthorizationPolicy => vec![respond::own_service(&self.cfg.node)],
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

    /// True until a config is in force or the snapshot was tried once.
    fn should_fall_back(&self) -> bool {
        !self.tried_snapshot && !self.health.config_applied()
    }

    /// Records a subscription; true when it is new.
    fn add_service(&self, service: String) -> bool {
        self.discovery.shared.subs.lock().services.insert(service)
    }

    /// Records services the data path asked for through the state handle; returns new ones.
    fn add_wanted(&self, wanted: &mut Wanted) -> Vec<String> {
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
