//! The workload's `mesh-sidecar` child: its flags, start-up until `/ready`, drain and stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hyper::Method;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::RunArgs;
use super::control_plane as cp;
use super::http;
use crate::access::Sources;

/// Environment variable the sidecar reads its join token from.
const JOIN_TOKEN_ENV: &str = "MESH_JOIN_TOKEN";
/// How often start-up is polled (address file, `/ready`): fast enough that the app starts
/// moments after the proxy is ready, slow enough to cost nothing.
const POLL: Duration = Duration::from_millis(25);
/// Interval between stop signals: the sidecar drains on the first and exits on the next
/// (signals sent back to back could be merged into one, so they are spaced and repeated).
const TERM_INTERVAL: Duration = Duration::from_millis(250);
/// The sidecar exits within one `TERM_INTERVAL` of its second signal; past this it is stuck
/// and gets SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// Lines of the sidecar's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(
        "{0} not found next to mesh-cli: install mesh-sidecar beside it (cargo build --workspace --bins)"
    )]
    NotFound(PathBuf),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the sidecar exited with {status} during start-up{log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error(
        "the sidecar was not ready within {limit:?} ({why}); is the control plane at {control_plane} running? (the app was not started){log}"
    )]
    NotReady {
        limit: Duration,
        why: String,
        control_plane: String,
        log: String,
    },
}

/// The sidecar's identity, control plane and join token, turned into its flags and environment
/// (the rest of the environment is inherited, so every `MESH_*` variable of `run` reaches it).
#[derive(Debug, Clone)]
pub struct SidecarSpec {
    pub control_plane: String,
    pub service: String,
    pub version: Option<String>,
    pub app_port: Option<u16>,
    pub namespace: String,
    pub service_account: String,
    pub join_token: Option<String>,
    /// The mesh trust bundle the sidecar verifies peers with (needed with a join token).
    pub ca_bundle: Option<PathBuf>,
    /// Interception mode: the workload's namespace and address (see `netns`).
    pub netns: Option<InNamespace>,
}

/// Where an intercepted workload's sidecar runs.
#[derive(Debug, Clone)]
pub struct InNamespace {
    pub name: String,
    pub addr: std::net::Ipv4Addr,
}

/// The uid/gid the sidecar runs as in interception mode: `mesh-sidecar init`'s default
/// proxy uid, whose connections the rules never redirect.
const PROXY_UID: &str = "1337";
/// Fixed listeners inside the workload's namespace: the ports `init` redirects to (15001
/// outbound, 15006 inbound, 15053 DNS); admin on every address so `run` reaches it from the
/// host at the workload's address (inbound port 15000 is never redirected).
const NS_INBOUND: &str = "0.0.0.0:15006";
const NS_OUTBOUND: &str = "127.0.0.1:15001";
const NS_ADMIN: &str = "0.0.0.0:15000";
const NS_DNS: &str = "127.0.0.1:15053";

/// The sidecar's bound listeners, read back from its address file.
#[derive(Debug, Clone, Copy)]
pub struct SidecarAddrs {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

/// A running sidecar; killed if dropped while still running.
pub struct Sidecar {
    child: Child,
    spec: SidecarSpec,
    /// Temporary dir of the address file, the sidecar's snapshot dir and (by default) its log.
    dir: PathBuf,
    log: PathBuf,
    addrs: Option<SidecarAddrs>,
}

// === impl SidecarSpec ===

impl SidecarSpec {
    /// Finds the control plane and a join token; problems with the token are warnings, since a
    /// control plane without identity does not need one.
    pub async fn resolve(args: &RunArgs) -> Self {
        let dir = cp::data_dir(args.data_dir.clone());
        let local = cp::read_addrs(&dir).ok();
        let service_account = args
            .service_account
            .clone()
            .unwrap_or_else(|| args.service.clone());
        // The local control plane's CA writes its trust bundle into its data dir; with it,
        // a local control plane serving TLS is reached over `https://`.
        let bundle = dir.join("ca").join("trust-bundle.pem");
        let local_tls = match (&args.control_plane, &local) {
            // The control plane wrote its discovery URL, scheme included: no probe needed.
            (None, Some(a)) if a.discovery_url.is_some() => false,
            (None, Some(a)) => match std::fs::read_to_string(&bundle) {
                Ok(pem) => cp::serves_tls(a.discovery, &pem).await,
                Err(_) => false,
            },
            _ => false,
        };
        let mut spec = SidecarSpec {
            control_plane: cp::discovery_url(
                args.control_plane.as_deref(),
                local.as_ref(),
                local_tls,
            ),
            service: args.service.clone(),
            version: args.version.clone(),
            app_port: args.port,
            namespace: args.namespace.clone(),
            service_account,
            join_token: None,
            ca_bundle: None,
            netns: None,
        };
        let env_bundle = std::env::var_os("MESH_CA_BUNDLE").map(PathBuf::from);
        if bundle.exists() && env_bundle.is_none() {
            spec.ca_bundle = Some(bundle);
        }
        // A token already in the environment is the operator's choice: the sidecar inherits it.
        if std::env::var_os(JOIN_TOKEN_ENV).is_some() {
            return spec;
        }
        // The admin API as every mesh-cli command finds it: the data dir, or the environment
        // (`MESH_CONTROL_PLANE_ADMIN`, `MESH_ADMIN_TOKEN`, `MESH_CA_BUNDLE`).
        let sources = Sources {
            data_dir: Some(dir.clone()),
            admin: std::env::var("MESH_CONTROL_PLANE_ADMIN").ok(),
            ca_bundle: env_bundle.clone(),
            token: std::env::var("MESH_ADMIN_TOKEN").ok(),
        };
        let has_bundle = spec.ca_bundle.is_some() || env_bundle.is_some();
        match cp::create_join_token(
            &sources,
            &spec.namespace,
            &spec.service_account,
            &spec.service,
        )
        .await
        {
            Ok(t) if has_bundle => spec.join_token = Some(t),
            Ok(_) => eprintln!(
                "mesh-cli run: warning: no trust bundle in {} (set MESH_CA_BUNDLE); the sidecar starts without identity",
                dir.display()
            ),
            Err(e) => eprintln!(
                "mesh-cli run: warning: no join token ({e}); the sidecar starts without one"
            ),
        }
        spec
    }

    fn command(&self, bin: &Path, dir: &Path, addrs_file: &Path) -> Command {
        // Port 0 everywhere in explicit mode: several workloads run side by side on one host;
        // the bound ports are read back from the address file.
        let (inbound, outbound, admin) = match &self.netns {
            None => ("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"),
            Some(_) => (NS_INBOUND, NS_OUTBOUND, NS_ADMIN),
        };
        let mut cmd = match &self.netns {
            None => Command::new(bin),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name, "setpriv"])
                    .args(["--reuid", PROXY_UID, "--regid", PROXY_UID, "--clear-groups"])
                    // The uid change clears the parent-death signal: set it again.
                    .args(["--pdeathsig", "KILL", "--"])
                    .arg(bin);
                c.args(["--advertise-address", &ns.addr.to_string()])
                    .args(["--dns-addr", NS_DNS]);
                c
            }
        };
        cmd.args(["--service", &self.service])
            .args(["--namespace", &self.namespace])
            .args(["--service-account", &self.service_account])
            .args(["--control-plane", &self.control_plane])
            .args(["--inbound-addr", inbound])
            .args(["--outbound-addr", outbound])
            .args(["--admin-addr", admin])
            .arg("--addrs-file")
            .arg(addrs_file)
            .arg("--data-dir")
            .arg(dir.join("sidecar"));
        if let Some(v) = &self.version {
            cmd.args(["--labels", &format!("version={v}")]);
        }
        if let Some(p) = self.app_port {
            cmd.args(["--app-ports", &p.to_string()]);
        }
        if let Some(t) = &self.join_token {
            cmd.env(JOIN_TOKEN_ENV, t);
        }
        if let Some(b) = &self.ca_bundle {
            cmd.arg("--ca-bundle").arg(b);
        }
        cmd
    }
}

// === impl Sidecar ===

impl Sidecar {
    /// Starts `mesh-sidecar` from the directory of this executable.
    pub fn start(spec: SidecarSpec, log: Option<PathBuf>) -> Result<Self, SidecarError> {
        let bin = sidecar_binary()?;
        let dir = std::env::temp_dir().join(format!("mesh-run-{}", std::process::id()));
        let io = |what: String| move |source: std::io::Error| SidecarError::Io { what, source };
        // A dir of this name is left over from an earlier process with the same pid that was
        // killed: start clean, or its files (owned by another uid) shadow this sidecar's.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let mut spec = spec;
        if spec.netns.is_some() {
            // The sidecar runs as the proxy uid: its dir is its own, and it gets a copy of the
            // bundle (the control plane's data dir is private to its owner).
            let uid: u32 = PROXY_UID.parse().unwrap_or_default();
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid))
                .map_err(io(format!("chown {}", dir.display())))?;
            if let Some(b) = &spec.ca_bundle {
                let copy = dir.join("trust-bundle.pem");
                std::fs::copy(b, &copy).map_err(io(format!("copy {}", b.display())))?;
                spec.ca_bundle = Some(copy);
            }
        }
        let log = log.unwrap_or_else(|| dir.join("sidecar.log"));
        let file = std::fs::File::create(&log).map_err(io(format!("create {}", log.display())))?;
        let file2 = file
            .try_clone()
            .map_err(io(format!("open {}", log.display())))?;
        let mut cmd = spec.command(&bin, &dir, &dir.join("addrs.json"));
        cmd.stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            // Its own process group: a terminal's Ctrl-C reaches `run`, which stops the sidecar
            // after the app, instead of reaching the sidecar directly.
            .process_group(0)
            .kill_on_drop(true);
        super::orphan::die_with_parent(&mut cmd);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(io(format!("start {}", bin.display()))(e));
            }
        };
        Ok(Self {
            child,
            spec,
            dir,
            log,
            addrs: None,
        })
    }

    /// Waits until the sidecar reports its addresses and answers `/ready` with 200.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<SidecarAddrs, SidecarError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut why = "no address file yet".to_string();
        loop {
            if let Some(status) = self.child.try_wait().map_err(|source| SidecarError::Io {
                what: "check the sidecar".into(),
                source,
            })? {
                return Err(SidecarError::Exited {
                    status,
                    log: self.log_tail(),
                });
            }
            if self.addrs.is_none() {
                self.addrs = read_addrs(&self.dir.join("addrs.json"));
                // Inside a namespace the admin listener is reached at the workload's address.
                if let (Some(a), Some(ns)) = (&mut self.addrs, &self.spec.netns) {
                    a.admin = SocketAddr::new(ns.addr.into(), a.admin.port());
                }
            }
            if let Some(a) = self.addrs {
                match self.admin_call(a.admin, Method::GET, "/ready").await {
                    Ok(200) => return Ok(a),
                    Ok(code) => why = format!("/ready answered {code}"),
                    Err(e) => why = format!("/ready: {e}"),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SidecarError::NotReady {
                    limit,
                    why,
                    control_plane: self.spec.control_plane.clone(),
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Resolves when the sidecar process ends (it should not while the app runs).
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => format!("lost track of it: {e}"),
        }
    }

    /// `POST /drain`: inbound stops accepting; outbound keeps serving the app.
    pub async fn drain(&self) -> Result<(), http::CallError> {
        if let Some(a) = self.addrs {
            self.admin_call(a.admin, Method::POST, "/drain").await?;
        }
        Ok(())
    }

    /// One call to the sidecar's admin listener: inside its namespace over the namespace's
    /// loopback (no dependence on the host's route to the workload), else at `admin`.
    async fn admin_call(
        &self,
        admin: SocketAddr,
        method: Method,
        path: &str,
    ) -> Result<u16, http::CallError> {
        match &self.spec.netns {
            Some(ns) => {
                let (name, port) = (ns.name.clone(), admin.port());
                let connect = async move {
                    let std = tokio::task::spawn_blocking(move || {
                        super::netns::connect_inside(&name, port)
                    })
                    .await
                    .map_err(std::io::Error::other)??;
                    TcpStream::from_std(std)
                };
                http::call_with(connect, admin, method, path).await
            }
            None => http::call(admin, method, path).await,
        }
    }

    /// Stops the sidecar: SIGTERM (drain), SIGTERM again (exit now), SIGKILL if it hangs.
    pub async fn stop(mut self) {
        let deadline = tokio::time::Instant::now() + STOP_LIMIT;
        while let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if tokio::time::timeout(TERM_INTERVAL, self.child.wait())
                .await
                .is_ok()
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "mesh-cli run: the sidecar did not stop within {STOP_LIMIT:?}: killing it"
                );
                break;
            }
        }
        self.kill().await;
    }

    /// Kills the sidecar (if still running) and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return String::new();
        }
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "\nlast lines of the sidecar's log:\n  {}",
            tail.join("\n  ")
        )
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // kill_on_drop already ends the process; the temporary dir goes with it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `mesh-sidecar` next to this executable: the binaries are installed side by side.
pub fn sidecar_binary() -> Result<PathBuf, SidecarError> {
    let exe = std::env::current_exe().map_err(|source| SidecarError::Io {
        what: "locate the mesh-cli executable".into(),
        source,
    })?;
    let bin = exe
        .parent()
        .map(|d| d.join("mesh-sidecar"))
        .unwrap_or_else(|| PathBuf::from("mesh-sidecar"));
    if !bin.is_file() {
        return Err(SidecarError::NotFound(bin));
    }
    Ok(bin)
}

/// The sidecar's address file, once it is complete (it is written to a temp file and renamed).
fn read_addrs(path: &Path) -> Option<SidecarAddrs> {
    let text = std::fs::read_to_string(path).ok()?;
    let map: std::collections::HashMap<String, serde_json::Value> =
        serde_json::from_str(&text).ok()?;
    let get = |k: &str| map.get(k)?.as_str()?.parse().ok();
    Some(SidecarAddrs {
        inbound: get("inbound")?,
        outbound: get("outbound")?,
        admin: get("admin")?,
    })
}
