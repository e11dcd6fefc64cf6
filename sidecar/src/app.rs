//! Runtimes, listeners, drain and wiring of every module.
//!
//! The data path runs on a multi-thread runtime with `--workers` threads; discovery, admin and
//! signal handling run on a current-thread runtime in a thread of their own, so a busy data
//! path never delays an ACK or a readiness probe, and control work never steals a data worker.
//!
//! Shutdown (SIGTERM/SIGINT): readiness turns false and the inbound listener stops accepting at
//! once; in-flight inbound requests finish; the outbound side keeps serving the app until the
//! grace period ends (the app is shutting down too and may still call out); then the process
//! exits 0. A second signal ends the grace period early.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::discovery::v1::Node;
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{info, warn};

mod wiring;

use crate::admin::Admin;
use crate::config::{Config, TcpForward};
use crate::health::Health;
use crate::proxy::drain;
use crate::state::StateHandle;
use crate::telemetry::{LogControl, Metrics};
use crate::xds::backoff::Backoff;
use crate::xds::{
    Client, ClientConfig, Discovery, LocalListener, SNAPSHOT_FALLBACK_AFTER, persist,
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the addresses file {path}: {source}")]
    AddrsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the {what} runtime: {source}")]
    Runtime {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("static config: {0}")]
    StaticFile(#[from] persist::PersistError),
    #[error("static config rejected: {0}")]
    StaticRejected(#[from] crate::xds::apply::Rejected),
    #[error("observability: {0}")]
    Observe(#[from] crate::observe::StartError),
    #[error("the control thread failed")]
    ControlThread,
    #[error(transparent)]
    Identity(#[from] crate::identity_wiring::IdentityWiringError),
}

/// The addresses actually bound (port 0 resolved), as written to `--addrs-file`.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BoundAddrs {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

/// Listeners bound before any runtime starts, so their ports are known to the node
/// announcement and the addresses file.
struct Listeners {
    inbound: std::net::TcpListener,
    outbound: std::net::TcpListener,
    admin: std::net::TcpListener,
    forwards: Vec<(TcpForward, std::net::TcpListener)>,
}

/// Runs the sidecar until shutdown completes.
pub fn run(cfg: Config, log: LogControl) -> Result<(), AppError> {
    // Built here and moved into its thread: signal handlers are installed before any address is
    // announced, so a SIGTERM right after start-up still drains instead of killing.
    let control_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime_err("control"))?;
    let signals = control_rt.block_on(async { Signals::new() })?;

    let listeners = bind(&cfg)?;
    let addrs = BoundAddrs {
        inbound: local(&listeners.inbound),
        outbound: local(&listeners.outbound),
        admin: local(&listeners.admin),
    };
    if let Some(path) = &cfg.addrs_file {
        write_addrs_file(path, &addrs)?;
    }
    info!(?addrs, service = %cfg.service, id = %cfg.id, "listening");

    let local = local_listener(&cfg);
    let state = StateHandle::default();
    // Flag listener settings are in force before (and beneath) the control plane's Listener.
    state.update(|s| s.listener = local.baseline());
    let health = Arc::new(Health::default());
    crate::observe::start(&cfg, &state, control_rt.handle())?;
    let metrics = Metrics::global().clone();
    // The identity channel is created inside the control runtime, where it will run.
    let workload = {
        let _rt = control_rt.enter();
        crate::identity_wiring::prepare(&cfg, &health)?
    };
    let identity = workload.as_ref().map(|w| w.store.clone());
    // Discovery presents the workload certificate: the control plane takes the proxy's
    // identity from it.
    let cp_tls = crate::identity_wiring::control_plane_tls(&cfg, identity.clone())?;
    // With an identity the proxy never downgrades to plaintext towards strict services.
    let mtls = identity.is_some();
    state.update(|s| s.mtls_peers = mtls);
    if let Some(store) = &identity {
        crate::observe::watch_certificates(store.clone());
    }
    // Freed config-decoding memory back to the OS after each settled update (control runtime).
    control_rt.spawn(crate::memory::trim_after_updates(state.clone()));
    let (discovery, client) = match &cfg.static_config {
        Some(path) => {
            let resources = persist::read_static(path)?;
            // Applied inside the control runtime: background work a snapshot update starts
            // (active health checks) belongs there, as with updates from the control plane.
            let d = control_rt
                .block_on(async { Discovery::start_static(&resources, local, &state, &health) })?;
            info!(
                resources = resources.len(),
                "serving a static config; no control plane"
            );
            (d, None)
        }
        None => {
            let mut client_cfg = client_config(&cfg, addrs.inbound.port(), local);
            client_cfg.tls = cp_tls;
            client_cfg.workload = identity.clone();
            // Announce an identity only with a certificate to prove it: peers use mTLS to
            // endpoints that have one.
            if identity.is_none() {
                client_cfg.node.identity.clear();
            }
            let (client, d) =
                Client::new(client_cfg, state.clone(), health.clone(), metrics.clone());
            (d, Some(client))
        }
    };
    let admin = Arc::new(Admin {
        health: health.clone(),
        metrics: metrics.clone(),
        discovery,
        state: state.clone(),
        log,
        identity: identity.clone(),
    });

    // The control thread ends the data path by completing `exit`.
    let (exit_tx, exit_rx) = oneshot::channel();
    let grace = cfg.drain_grace;
    let admin_listener = listeners.admin;
    let control_health = health.clone();
    if let Some(w) = workload {
        // Runs on the control runtime once its thread starts, off the data path.
        control_rt.spawn(crate::identity_wiring::run(
            w.rotation,
            w.store,
            health.clone(),
            state.clone(),
        ));
    }
    let control = std::thread::Builder::new()
        .name("mesh-control".into())
        .spawn(move || {
            control_rt.block_on(control_main(
                admin,
                admin_listener,
                client,
                signals,
                control_health,
                grace,
                exit_tx,
            ))
        })
        .map_err(runtime_err("control"))?;

    let data_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.workers)
        .thread_name("mesh-data")
        .enable_all()
        .build()
        .map_err(runtime_err("data"))?;
    // The sidecar's own ports: a peer may never have the inbound side forward to them.
    let mut own_ports = vec![
        addrs.inbound.port(),
        addrs.outbound.port(),
        addrs.admin.port(),
    ];
    own_ports.extend(cfg.dns_addr.map(|a| a.port()));
    own_ports.extend(
        listeners
            .forwards
            .iter()
            .filter_map(|(_, l)| l.local_addr().ok().map(|a| a.port())),
    );
    let data_cfg = DataPath {
        own_ports,
        cfg,
        state,
        health,
        inbound: listeners.inbound,
        outbound: listeners.outbound,
        forwards: listeners.forwards,
        identity,
    };
    data_rt.block_on(data_main(data_cfg, exit_rx))?;
    // Connections still open at the end of the grace period are cut here.
    data_rt.shutdown_timeout(Duration::from_millis(100));
    control.join().map_err(|_| AppError::ControlThread)??;
    info!("shutdown complete");
    Ok(())
}

fn runtime_err(what: &'static str) -> impl Fn(std::io::Error) -> AppError {
    move |source| AppError::Runtime { what, source }
}

fn bind(cfg: &Config) -> Result<Listeners, AppError> {
    let one = |what: &'static str, addr: SocketAddr| {
        let l = std::net::TcpListener::bind(addr).map_err(|source| AppError::Bind {
            what,
            addr,
            source,
        })?;
        l.set_nonblocking(true)
            .map_err(|source| AppError::Bind { what, addr, source })?;
        Ok::<_, AppError>(l)
    };
    let mut forwards = Vec::with_capacity(cfg.tcp_forwards.len());
    for f in &cfg.tcp_forwards {
        forwards.push((f.clone(), one("tcp-forward", f.listen)?));
    }
    Ok(Listeners {
        inbound: one("inbound", cfg.inbound_addr)?,
        outbound: one("outbound", cfg.outbound_addr)?,
        admin: one("admin", cfg.admin_addr)?,
        forwards,
    })
}

fn local(l: &std::net::TcpListener) -> SocketAddr {
    // A bound listener always has a local address; fall back to the unspecified one if the
    // platform ever disagrees rather than abort.
    l.local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Writes the bound addresses atomically (temp file + rename): readers never see half a file.
pub fn write_addrs_file(path: &Path, addrs: &BoundAddrs) -> Result<(), AppError> {
    let err = |source| AppError::AddrsFile {
        path: path.to_path_buf(),
        source,
    };
    let body = serde_json::to_vec(addrs).map_err(|e| err(std::io::Error::other(e)))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, body).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn local_listener(cfg: &Config) -> LocalListener {
    LocalListener {
        name: cfg.service_key(),
        app_ports: cfg.app_ports.clone(),
        opaque_ports: cfg.opaque_ports.clone(),
        server_first_ports: cfg.server_first_ports.clone(),
    }
}

fn client_config(cfg: &Config, inbound_port: u16, local: LocalListener) -> ClientConfig {
    let node = Node {
        id: cfg.id.clone(),
        identity: cfg.identity(),
        service: cfg.service.clone(),
        namespace: cfg.namespace.clone(),
        service_account: cfg.service_account.clone(),
        labels: cfg.labels.clone().into_iter().collect(),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
        address: cfg.advertise_address.to_string(),
        inbound_port: u32::from(inbound_port),
        app_ports: cfg.app_ports.iter().map(|&p| u32::from(p)).collect(),
        zone: cfg.zone.clone().unwrap_or_default(),
    };
    // Fixed-port forwards will certainly be used: subscribe to their services from the start.
    let mut eager = cfg.outbound_services.clone();
    for f in &cfg.tcp_forwards {
        if !eager.contains(&f.service) {
            eager.push(f.service.clone());
        }
    }
    ClientConfig {
        endpoint: cfg.control_plane.clone(),
        node,
        eager_services: eager,
        data_dir: cfg.data_dir.clone(),
        backoff: Backoff::default(),
        local_listener: local,
        snapshot_fallback_after: SNAPSHOT_FALLBACK_AFTER,
        tls: None,
        workload: None,
    }
}

/// Control runtime: admin, discovery, signals and the grace timer.
async fn control_main(
    admin: Arc<Admin>,
    admin_listener: std::net::TcpListener,
    client: Option<Client>,
    mut signals: Signals,
    health: Arc<Health>,
    grace: Duration,
    exit: oneshot::Sender<()>,
) -> Result<(), AppError> {
    let admin_listener =
        tokio::net::TcpListener::from_std(admin_listener).map_err(runtime_err("control"))?;
    let discovery = admin.discovery.clone();
    let state = admin.state.clone();
    let admin_task = tokio::spawn(admin.serve(admin_listener));
    let client_task = match client {
        Some(c) => tokio::spawn(c.run()),
        None => tokio::spawn(async move { discovery.answer_wants_as_absent(state).await }),
    };

    signals.next().await;
    info!(?grace, "shutdown signal: draining");
    health.drain();
    tokio::select! {
        () = tokio::time::sleep(grace) => info!("grace period over"),
        () = signals.next() => warn!("second signal: exiting before the grace period ends"),
    }
    let _ = exit.send(());
    admin_task.abort();
    client_task.abort();
    Ok(())
}

/// SIGTERM and SIGINT as one stream of events.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, AppError> {
        use tokio::signal::unix::{SignalKind, signal};
        let err = runtime_err("signal");
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(&err)?,
            int: signal(SignalKind::interrupt()).map_err(&err)?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// What the data runtime serves.
struct DataPath {
    /// Ports of the sidecar's own listeners (never an inbound target).
    own_ports: Vec<u16>,
    cfg: Config,
    state: StateHandle,
    health: Arc<Health>,
    inbound: std::net::TcpListener,
    outbound: std::net::TcpListener,
    forwards: Vec<(TcpForward, std::net::TcpListener)>,
    identity: Option<Arc<crate::identity::CertStore>>,
}

/// Data runtime: inbound, outbound and fixed-port listeners until `exit`.
async fn data_main(d: DataPath, exit: oneshot::Receiver<()>) -> Result<(), AppError> {
    let tokio_listener = |l: std::net::TcpListener| {
        tokio::net::TcpListener::from_std(l).map_err(runtime_err("data"))
    };
    wiring::start_dns(&d.cfg, &d.state).await?;
    let inbound = tokio_listener(d.inbound)?;
    let outbound = tokio_listener(d.outbound)?;
    let mut forwards = Vec::with_capacity(d.forwards.len());
    for (f, l) in d.forwards {
        forwards.push((f, tokio_listener(l)?));
    }

    let (inbound_trigger, inbound_drain) = drain::channel();
    let (outbound_trigger, outbound_drain) = drain::channel();
    wiring::spawn_data_path(
        &d.cfg,
        &d.state,
        inbound,
        inbound_drain,
        outbound,
        forwards,
        outbound_drain,
        d.identity,
        d.own_ports,
    );

    // Draining starts on a signal or `POST /drain`: inbound stops accepting, and its live
    // connections finish their in-flight requests.
    let health = d.health.clone();
    tokio::spawn(async move {
        health.drained().await;
        info!("inbound stops accepting; in-flight requests finish");
        inbound_trigger.drain().await;
        info!("inbound drained");
    });

    // The sender is dropped only if the control thread dies: shut down then too.
    let _ = exit.await;
    outbound_trigger.signal();
    Ok(())
}
