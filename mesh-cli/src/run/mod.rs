//! `mesh-cli run`: one local workload with its own sidecar, started in order and stopped in order.
//!
//! Start: find the control plane, get a join token, start `mesh-sidecar`, wait for its `/ready`,
//! only then start the app. As root (unless `--explicit`) the workload gets its own network
//! namespace with interception (`netns`); otherwise the app gets `HTTP_PROXY` pointing at the
//! sidecar (explicit mode).
//! Stop (SIGINT/SIGTERM): drain the sidecar's inbound, pass the signal to the app and give it a
//! grace period, then stop the sidecar. When the app ends by itself the sidecar is stopped at once
//! and `run` exits with the app's code (Job semantics).

mod app;
mod control_plane;
mod http;
mod netns;
mod orphan;
mod sidecar;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use app::App;
use sidecar::{Sidecar, SidecarSpec};

/// Exit code when the sidecar cannot be started, does not become ready or dies under the app:
/// distinct from clap's usage error 2 and from the shell's 126/127.
pub const EXIT_SIDECAR_FAILED: i32 = 3;

/// Options of `mesh-cli run`.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "\
Interception mode (root, unless --explicit): the workload gets its own network namespace (veth to the host bridge mesh-run0, 10.201.0.0/24), `mesh-sidecar init` rules inside, the sidecar as uid 1337 and the app inside, reaching services by plain name (the sidecar answers DNS) with no proxy settings. Namespace, veth and rules are removed on exit.

Explicit mode: `run` does not intercept traffic (no network namespace, no iptables, no root \
needed). The app reaches other services through its sidecar because HTTP_PROXY/http_proxy \
point at the sidecar's outbound listener; peers reach the app through the sidecar's inbound \
listener, which forwards to --port.

The app gets: HTTP_PROXY, http_proxy, NO_PROXY=localhost,127.0.0.1, MESH_SERVICE and \
MESH_SIDECAR_ADMIN (the sidecar's admin URL). Every MESH_* variable of this environment reaches \
the sidecar.

Exit code: the app's (128+N if a signal N killed it); 127/126 if the command cannot be \
started; 3 if the sidecar could not start or become ready, or died under the app.

Example:
  mesh-cli run --service reviews --version v1 --port 9080 -- python3 -m http.server 9080")]
pub struct RunArgs {
    /// The workload's service name.
    #[arg(long)]
    pub service: String,
    /// The workload's version (sent as the label version=V; routes pick subsets by it).
    #[arg(long)]
    pub version: Option<String>,
    /// The port the app listens on (127.0.0.1); the sidecar's inbound forwards there.
    #[arg(long)]
    pub port: Option<u16>,
    /// Workload namespace: the service is named within it (`NAME.NAMESPACE` from others).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Service account the identity is issued for [default: the service].
    #[arg(long)]
    pub service_account: Option<String>,
    /// Discovery address of the control plane (host:port or URL) [default: the local control
    /// plane's, from <data-dir>/addrs.json, else 127.0.0.1:15010].
    #[arg(long)]
    pub control_plane: Option<String>,
    /// The local control plane's data dir (addrs.json, admin-token).
    #[arg(long, env = "MESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds the app has to exit after the stop signal before it is killed.
    #[arg(long, default_value_t = DEFAULT_GRACE_SECS)]
    pub grace_period: u64,
    /// Seconds to wait for the sidecar's /ready before giving up.
    #[arg(long, default_value_t = DEFAULT_READY_SECS)]
    pub ready_timeout: u64,
    /// Write the sidecar's log here [default: a temporary file, shown if the sidecar fails].
    #[arg(long)]
    pub sidecar_log: Option<PathBuf>,
    /// Explicit mode even as root: no namespace, no interception (HTTP_PROXY for the app).
    #[arg(long)]
    pub explicit: bool,
    /// The app command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// The app's stop grace: like the sidecar's own drain grace, it covers common request deadlines
/// (5–10 s) so in-flight requests finish, and stays well inside Kubernetes' 30 s
/// `terminationGracePeriodSeconds` so the same app behaves alike here and in a pod.
const DEFAULT_GRACE_SECS: u64 = 10;
/// The sidecar is ready once it binds and receives its first config from the control plane:
/// milliseconds normally; 30 s tolerates a cold binary on a busy 2-core machine and a control
/// plane that is still starting, while still failing a wrong address in bounded time.
const DEFAULT_READY_SECS: u64 = 30;

/// Runs the workload; returns the exit code for the process.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    // One thread is plenty: this process only waits on children, signals and two HTTP calls.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<i32> {
    // Signals are caught before any child exists, so a stop during start-up still cleans up.
    let mut stop = StopSignals::new()?;
    let mut spec = SidecarSpec::resolve(&args).await;
    // Declared before the sidecar and the app: dropped (namespace removed) after both ended.
    let isolation = if !args.explicit && nix::unistd::geteuid().is_root() {
        match isolate(&mut spec).await {
            Ok(iso) => Some(iso),
            Err(e) => {
                eprintln!("mesh-cli run: interception mode: {e} (use --explicit to run without)");
                return Ok(EXIT_SIDECAR_FAILED);
            }
        }
    } else {
        None
    };
    let mut sidecar = match Sidecar::start(spec, args.sidecar_log.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mesh-cli run: {e}");
            return Ok(EXIT_SIDECAR_FAILED);
        }
    };
    let ready_limit = Duration::from_secs(args.ready_timeout);
    let addrs = tokio::select! {
        r = sidecar.wait_ready(ready_limit) => match r {
            Ok(a) => a,
            Err(e) => {
                eprintln!("mesh-cli run: {e}");
                sidecar.kill().await;
                return Ok(EXIT_SIDECAR_FAILED);
            }
        },
        signo = stop.next() => {
            sidecar.stop().await;
            return Ok(128 + signo);
        }
    };
    eprintln!(
        "mesh-cli run: sidecar ready (inbound {}, outbound {}, admin {}); starting the app",
        addrs.inbound, addrs.outbound, addrs.admin
    );

    let mut app = match App::spawn(&args, addrs, isolation.as_ref().map(|i| i.name.as_str())) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mesh-cli run: {e}");
            sidecar.stop().await;
            return Ok(e.exit_code());
        }
    };

    let code = tokio::select! {
        status = app.wait() => app::exit_code(status),
        signo = stop.next() => {
            // Inbound first: peers stop sending new requests while the app finishes the
            // ones it has and its outbound calls still work through the proxy.
            if let Err(e) = sidecar.drain().await {
                eprintln!("mesh-cli run: warning: could not drain the sidecar: {e}");
            }
            app.signal(signo);
            let grace = Duration::from_secs(args.grace_period);
            app::exit_code(app.wait_or_kill(grace, &mut stop).await)
        }
        status = sidecar.exited() => {
            // An app without its proxy is cut off from the mesh: stop it rather than let it
            // run half-connected (a supervisor can restart the whole workload).
            eprintln!("mesh-cli run: the sidecar exited unexpectedly ({status}); stopping the app");
            app.signal(libc::SIGTERM);
            let grace = Duration::from_secs(args.grace_period);
            let _ = app.wait_or_kill(grace, &mut stop).await;
            EXIT_SIDECAR_FAILED
        }
    };
    sidecar.stop().await;
    Ok(code)
}

/// Interception mode: the workload's namespace with `mesh-sidecar init`'s rules, the control
/// plane relayed into it when it listens on the host's loopback, and `spec` pointed at both.
async fn isolate(spec: &mut SidecarSpec) -> anyhow::Result<netns::Isolation> {
    let iso = netns::Isolation::create()?;
    let bin = sidecar::sidecar_binary()?;
    iso.exec(&[&bin.to_string_lossy(), "init"])?;
    let (scheme, authority) = spec
        .control_plane
        .split_once("://")
        .unwrap_or(("http", spec.control_plane.as_str()));
    if let Ok(addr) = authority
        .trim_end_matches('/')
        .parse::<std::net::SocketAddr>()
        && addr.ip().is_loopback()
    {
        let port = iso.relay(addr).await?;
        spec.control_plane = format!("{scheme}://127.0.0.1:{port}");
    }
    // The collector the user named on the host's loopback is reached from inside too: the
    // sidecar (and the app) inherit MESH_OTLP_ENDPOINT, whose loopback is the namespace's own.
    if let Some(addr) = loopback_target(std::env::var("MESH_OTLP_ENDPOINT").ok().as_deref()) {
        iso.relay_on(addr.port(), addr).await?;
    }
    spec.netns = Some(sidecar::InNamespace {
        name: iso.name.clone(),
        addr: iso.addr,
    });
    Ok(iso)
}

/// The host socket address of a `http(s)://127.x.y.z:port` (or `[::1]`) URL.
fn loopback_target(url: Option<&str>) -> Option<std::net::SocketAddr> {
    let authority = url?.split_once("://")?.1.split('/').next()?;
    let addr: std::net::SocketAddr = authority.parse().ok()?;
    addr.ip().is_loopback().then_some(addr)
}

/// SIGINT and SIGTERM as one stream yielding the signal number.
struct StopSignals {
    int: Signal,
    term: Signal,
}

// === impl StopSignals ===

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
        }
    }
}
