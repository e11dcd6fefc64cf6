//! Spawning the real `mesh-control-plane` and `mesh-sidecar` processes on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to bind and write its addresses file. Generous because a
/// cold debug binary on a loaded 2-core CI machine can take seconds to start.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Path of a workspace binary, next to the test executable's target profile dir.
///
/// Test executables live in `target/<profile>/deps/`; binaries in `target/<profile>/`.
/// Panics with a hint if the binary was not built (the test command builds all bins first).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is inside target/<profile>/deps");
    let p = profile_dir.join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace --bins` first (deploy/scripts/test.sh does)",
        p.display()
    );
    p
}

/// Waits for a JSON addresses file written by a mesh process after it bound its ports.
fn wait_addrs(child: &mut Child, file: &Path) -> HashMap<String, SocketAddr> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(map) = serde_json::from_str::<HashMap<String, String>>(&text)
        {
            return map
                .into_iter()
                .filter_map(|(k, v)| v.parse().ok().map(|a| (k, a)))
                .collect();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "process exited early with {status} before writing {}",
                file.display()
            );
        }
        assert!(
            start.elapsed() < START_LIMIT,
            "no addresses file {} after {START_LIMIT:?}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running control plane; killed with SIGKILL on drop.
pub struct ControlPlane {
    pub child: Child,
    pub data_dir: PathBuf,
    pub discovery: SocketAddr,
    pub admin: SocketAddr,
    pub http: SocketAddr,
    /// The admin API's URL as the control plane wrote it: `https://` unless started with
    /// `--admin-tls=false`.
    pub admin_url: String,
    /// Discovery + identity serve TLS (the default; `--discovery-tls=false` in `extra` turns
    /// it off for tests that speak raw plaintext gRPC).
    pub tls: bool,
}

impl ControlPlane {
    /// Starts `mesh-control-plane` on ephemeral loopback ports with `data_dir`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self::start_on(data_dir, [any, any, any], extra)
    }

    /// Starts on given `[discovery, admin, http]` addresses (a restart on the same ports).
    /// Discovery is TLS unless `extra` says `--discovery-tls=false`: sidecars reach it with
    /// [`Self::discovery_url`] and [`Self::sidecar_tls_args`].
    pub fn start_on(data_dir: &Path, addrs: [SocketAddr; 3], extra: &[&str]) -> Self {
        let tls_flag = extra.iter().find(|a| a.starts_with("--discovery-tls"));
        let tls = tls_flag.is_none_or(|a| *a != "--discovery-tls=false");
        let addrs_file = data_dir.join("test-addrs.json");
        let _ = std::fs::remove_file(&addrs_file);
        let mut child = Command::new(bin_path("mesh-control-plane"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--discovery-addr", &addrs[0].to_string()])
            .args(["--admin-addr", &addrs[1].to_string()])
            .args(["--http-addr", &addrs[2].to_string()])
            .arg("--addrs-file")
            .arg(&addrs_file)
            .args(tls_flag.is_none().then_some("--discovery-tls=true"))
            // Plaintext discovery cannot authenticate: such a test runs an anonymous mesh.
            .args((!tls).then_some("--allow-anonymous-proxies"))
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn mesh-control-plane");
        let a = wait_addrs(&mut child, &addrs_file);
        let admin_url = std::fs::read_to_string(&addrs_file)
            .ok()
            .and_then(|t| serde_json::from_str::<HashMap<String, String>>(&t).ok())
            .and_then(|m| m.get("admin_url").cloned())
            .expect("addrs file has admin_url");
        ControlPlane {
            discovery: a["discovery"],
            admin: a["admin"],
            http: a["http"],
            admin_url,
            child,
            data_dir: data_dir.to_path_buf(),
            tls,
        }
    }

    /// The discovery URL sidecars use: `https://` (verified with [`Self::ca_bundle`]) unless
    /// the control plane was started with `--discovery-tls=false`.
    pub fn discovery_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.discovery)
    }

    /// The discovery URL of a control plane started with `--discovery-tls=true` (its
    /// certificate names 127.0.0.1), verified with [`Self::ca_bundle`].
    pub fn tls_discovery_url(&self) -> String {
        format!("https://{}", self.discovery)
    }

    /// The mesh trust bundle the control plane wrote in its data dir.
    pub fn ca_bundle(&self) -> PathBuf {
        self.data_dir.join("ca").join("trust-bundle.pem")
    }

    /// `--ca-bundle` for a sidecar of this control plane.
    pub fn sidecar_tls_args(&self) -> Vec<String> {
        vec!["--ca-bundle".into(), self.ca_bundle().display().to_string()]
    }

    /// The environment a sidecar of `service` needs to join this mesh as users run it: a join
    /// token for the service account named like the service (from `mesh-cli token create`,
    /// the operator's command), so the sidecar gets a certificate and speaks strict mTLS.
    /// Empty for a plaintext control plane (an anonymous, development mesh).
    pub fn join_env(&self, service: &str) -> Vec<(String, String)> {
        if !self.tls {
            return Vec::new();
        }
        let out = Command::new(bin_path("mesh-cli"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "token",
                "create",
                "--service-account",
                service,
                "-o",
                "json",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run mesh-cli token create");
        assert!(
            out.status.success(),
            "mesh-cli token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("token JSON");
        let token = v["token"].as_str().expect("token field").to_string();
        vec![("MESH_JOIN_TOKEN".to_string(), token)]
    }

    /// The admin token the control plane created in its data dir.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .expect("admin-token in data dir")
            .trim()
            .to_string()
    }

    /// SIGKILL: no chance to flush anything (the durability tests rely on this).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Options for one sidecar under test.
#[derive(Clone, Debug, Default)]
pub struct SidecarOpts {
    pub service: String,
    pub namespace: Option<String>,
    pub labels: Vec<(String, String)>,
    pub app_ports: Vec<u16>,
    /// `http://ip:port` (or [`ControlPlane::tls_discovery_url`]) of the discovery endpoint.
    pub control_plane: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A running sidecar; SIGKILLed on drop unless already stopped.
pub struct Sidecar {
    pub child: Child,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

impl Sidecar {
    pub fn start(dir: &Path, o: &SidecarOpts) -> Self {
        // A per-process counter keeps files of several sidecars of one service apart.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let addrs_file = dir.join(format!("sidecar-{}-{n}-addrs.json", o.service));
        let _ = std::fs::remove_file(&addrs_file);
        let mut cmd = Command::new(bin_path("mesh-sidecar"));
        cmd.args(["--service", &o.service])
            .args(["--inbound-addr", "127.0.0.1:0"])
            .args(["--outbound-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            .arg("--addrs-file")
            .arg(&addrs_file)
            .stdin(Stdio::null());
        if let Some(ns) = &o.namespace {
            cmd.args(["--namespace", ns]);
        }
        if !o.labels.is_empty() {
            let l: Vec<String> = o.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            cmd.args(["--labels", &l.join(",")]);
        }
        if !o.app_ports.is_empty() {
            let p: Vec<String> = o.app_ports.iter().map(u16::to_string).collect();
            cmd.args(["--app-ports", &p.join(",")]);
        }
        if let Some(cp) = &o.control_plane {
            cmd.args(["--control-plane", cp]);
        }
        let data_dir = o
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.join(format!("sidecar-{}-{n}", o.service)));
        cmd.arg("--data-dir").arg(data_dir);
        cmd.args(&o.extra);
        cmd.envs(o.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("spawn mesh-sidecar");
        let a = wait_addrs(&mut child, &addrs_file);
        Sidecar {
            inbound: a["inbound"],
            outbound: a["outbound"],
            admin: a["admin"],
            child,
        }
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
