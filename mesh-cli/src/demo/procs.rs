//! The demo's processes: control plane and sidecars as child processes, apps as tasks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use mesh_proto::admin::v1::CreateTokenRequest;
use tokio::process::{Child, Command};

use super::apps;
use crate::access::{Admin, Sources};

/// A process may take this long to bind and report its ports: generous for a cold binary on a
/// busy 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(30);
/// SIGTERM grace before SIGKILL when stopping: longer than the sidecar's drain grace.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The demo apps' port inside their namespaces (interception mode): each namespace has its
/// own ports, so every app uses the same conventional one.
const DEMO_PORT: &str = "9080";

pub struct Mesh {
    dir: PathBuf,
    /// Interception mode: api and web run under `mesh-cli run` in their own namespaces.
    intercept: bool,
    /// Their `mesh-cli run` processes.
    runs: Vec<(String, Child)>,
    cp: Option<Child>,
    sidecars: Vec<(String, Child)>,
    apps: Vec<tokio::task::JoinHandle<()>>,
    admin_addr: SocketAddr,
    discovery_addr: SocketAddr,
    admin: Option<Admin>,
    /// The load generator's sidecar outbound listener.
    pub client_outbound: SocketAddr,
}

impl Mesh {
    pub async fn start(intercept: bool) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("mesh-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        println!("demo data dir: {}", dir.display());
        let mut mesh = Mesh {
            dir: dir.clone(),
            intercept,
            runs: Vec::new(),
            cp: None,
            sidecars: Vec::new(),
            apps: Vec::new(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            discovery_addr: ([127, 0, 0, 1], 0).into(),
            admin: None,
            client_outbound: ([127, 0, 0, 1], 0).into(),
        };
        if let Err(e) = mesh.boot().await {
            // The error names a log to look at: keep the logs.
            mesh.stop(true).await;
            return Err(e);
        }
        Ok(mesh)
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        let cp_dir = self.dir.join("control-plane");
        let addrs_file = self.dir.join("cp-addrs.json");
        let mut cmd = Command::new(bin("mesh-control-plane")?);
        cmd.arg("--data-dir")
            .arg(&cp_dir)
            .args(["--discovery-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0"])
            // Discovery and identity over TLS: sidecars verify the control plane with the
            // trust bundle it writes into its data dir.
            .arg("--discovery-tls=true")
            .arg("--addrs-file")
            .arg(&addrs_file);
        self.cp = Some(spawn_quiet(cmd, &self.dir.join("control-plane.log"))?);
        let a = wait_addrs(self.cp.as_mut().expect("cp"), &addrs_file).await?;
        self.discovery_addr = a["discovery"];
        self.admin_addr = a["admin"];
        println!(
            "control plane: discovery {} admin {}",
            self.discovery_addr, self.admin_addr
        );

        if self.intercept {
            for (service, version, call) in [
                ("api", "v1", None),
                ("api", "v2", None),
                ("web", "v1", Some("api")),
            ] {
                self.run_workload(service, version, call)?;
            }
            // The load generator stays on the host (explicit mode); it reaches web's sidecar
            // across the bridge.
            let client = self.sidecar("demo-client", "v1", None).await?;
            self.client_outbound = client.outbound;
            return self.wait_web().await;
        }
        for version in ["v1", "v2"] {
            let (listener, addr) = apps::bind().await?;
            self.apps
                .push(tokio::spawn(apps::serve(listener, "api", version, None)));
            self.sidecar("api", version, Some(addr.port())).await?;
        }
        let (listener, web_addr) = apps::bind().await?;
        let web = self.sidecar("web", "v1", Some(web_addr.port())).await?;
        self.apps.push(tokio::spawn(apps::serve(
            listener,
            "web",
            "v1",
            Some(web.outbound),
        )));
        let client = self.sidecar("demo-client", "v1", None).await?;
        self.client_outbound = client.outbound;
        Ok(())
    }

    async fn sidecar(
        &mut self,
        service: &str,
        version: &str,
        app_port: Option<u16>,
    ) -> anyhow::Result<SidecarAddrs> {
        let name = format!("{service}-{version}");
        let addrs_file = self.dir.join(format!("{name}-addrs.json"));
        // Each workload proves its identity (default/<service>) with a join token from the
        // admin API: the sidecar gets a certificate and speaks mTLS to its peers.
        let token_file = self.dir.join(format!("{name}.token"));
        let token = self
            .admin()
            .await?
            .create_token(CreateTokenRequest {
                namespace: "default".into(),
                service_account: service.into(),
                // 0 = the control plane's default lifetime.
                ttl_secs: 0,
                services: vec![service.to_string()],
                max_uses: 0,
            })
            .await
            .with_context(|| format!("join token for {name}"))?
            .into_inner()
            .token;
        std::fs::write(&token_file, token).context("write the join token")?;
        let bundle = self
            .dir
            .join("control-plane")
            .join("ca")
            .join("trust-bundle.pem");
        let mut cmd = Command::new(bin("mesh-sidecar")?);
        cmd.args(["--service", service])
            .args(["--labels", &format!("version={version}")])
            .args([
                "--control-plane",
                &format!("https://{}", self.discovery_addr),
            ])
            .arg("--ca-bundle")
            .arg(&bundle)
            .arg("--join-token-file")
            .arg(&token_file)
            .args(["--inbound-addr", "127.0.0.1:0"])
            .args(["--outbound-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            // The demo's requests last milliseconds: a 2 s drain keeps Ctrl-C snappy.
            .args(["--drain-grace-ms", "2000"])
            .arg("--data-dir")
            .arg(self.dir.join(&name))
            .arg("--addrs-file")
            .arg(&addrs_file);
        if let Some(p) = app_port {
            cmd.args(["--app-ports", &p.to_string()]);
        }
        let mut child = spawn_quiet(cmd, &self.dir.join(format!("{name}.log")))?;
        let a = match wait_addrs(&mut child, &addrs_file).await {
            Ok(a) => a,
            Err(e) => {
                let _ = child.kill().await;
                return Err(e.context(format!("sidecar {name}")));
            }
        };
        self.sidecars.push((name.clone(), child));
        let addrs = SidecarAddrs {
            outbound: a["outbound"],
        };
        wait_ready(a["admin"]).await.context(name.clone())?;
        println!(
            "sidecar {name}: ready (outbound {}, inbound {}, admin {})",
            a["outbound"], a["inbound"], a["admin"]
        );
        Ok(addrs)
    }

    /// `mesh-cli run` of one demo app in its own namespace, against this demo's control plane.
    fn run_workload(
        &mut self,
        service: &str,
        version: &str,
        call: Option<&str>,
    ) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locate mesh-cli")?;
        let name = format!("{service}-{version}");
        let mut cmd = Command::new(&exe);
        cmd.arg("run")
            .args(["--service", service, "--version", version])
            .args(["--port", DEMO_PORT])
            .arg("--data-dir")
            .arg(self.dir.join("control-plane"))
            .arg("--sidecar-log")
            .arg(self.dir.join(format!("{name}-sidecar.log")))
            .arg("--")
            .arg(&exe)
            .args(["demo-app", "--service", service, "--version", version])
            .args(["--port", DEMO_PORT])
            // The demo's own control plane issues the tokens, not one from the environment.
            .env_remove("MESH_ADMIN_TOKEN")
            .env_remove("MESH_JOIN_TOKEN");
        if let Some(c) = call {
            cmd.args(["--call", c]);
        }
        let child = spawn_quiet(cmd, &self.dir.join(format!("{name}.log")))?;
        // The namespace is named after run's pid (`mesh-run-<pid>`).
        let pid = child.id().unwrap_or_default();
        println!("workload {name}: started with `mesh-cli run` (namespace mesh-run-{pid})");
        self.runs.push((name, child));
        Ok(())
    }

    /// Waits until requests to `web` through the load generator's sidecar have reached both
    /// api versions: every app is up and listening (a sidecar announces its endpoint before its
    /// app starts, so "announced" alone is not enough) and the mesh knows all of them.
    async fn wait_web(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        let mut seen = [false; 2];
        loop {
            if let Some((200, body)) = apps::http_get(self.client_outbound, "web", "/").await {
                for (i, v) in ["api v1", "api v2"].into_iter().enumerate() {
                    seen[i] |= body.ends_with(v);
                }
                if seen == [true; 2] {
                    println!("workloads ready: web and both api versions answer through the mesh");
                    return Ok(());
                }
            }
            for (name, child) in &mut self.runs {
                if let Some(status) = child.try_wait()? {
                    bail!("workload {name} exited with {status} (see its log in the demo dir)");
                }
            }
            if tokio::time::Instant::now() > deadline {
                let yes_no = |b: bool| if b { "yes" } else { "no" };
                bail!(
                    "web did not answer through the mesh within {START_LIMIT:?} (answers seen from api v1: {}, api v2: {})",
                    yes_no(seen[0]),
                    yes_no(seen[1])
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin client, connected on first use: URL (TLS), token and trust bundle from the
    /// demo control plane's data dir, as `mesh-cli` finds them.
    pub async fn admin(&mut self) -> anyhow::Result<&mut Admin> {
        if self.admin.is_none() {
            let sources = Sources {
                data_dir: Some(self.dir.join("control-plane")),
                ..Sources::default()
            };
            let (client, _) = sources
                .connect()
                .await
                .context("connect to the control plane admin API")?;
            self.admin = Some(client);
        }
        Ok(self.admin.as_mut().expect("admin client"))
    }

    /// Stops sidecars (SIGTERM, then SIGKILL after the grace), apps and the control plane, and
    /// removes the temporary data dir — all of it, or all but the `*.log` files when
    /// `keep_logs` (after a failure, so the logs an error points at are still there).
    pub async fn stop(&mut self, keep_logs: bool) {
        // Each `run` drains its sidecar, stops its app and removes its namespace.
        for (_, child) in &self.runs {
            sigterm(child);
        }
        for (name, child) in &mut self.runs {
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                eprintln!("workload {name} did not stop within {STOP_GRACE:?}: killing it");
                let _ = child.kill().await;
            }
        }
        self.runs.clear();
        for (_, child) in &self.sidecars {
            sigterm(child);
        }
        for (name, child) in &mut self.sidecars {
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                eprintln!("sidecar {name} did not stop within {STOP_GRACE:?}: killing it");
                let _ = child.kill().await;
            }
        }
        self.sidecars.clear();
        for a in self.apps.drain(..) {
            a.abort();
        }
        if let Some(mut cp) = self.cp.take() {
            sigterm(&cp);
            if tokio::time::timeout(STOP_GRACE, cp.wait()).await.is_err() {
                let _ = cp.kill().await;
            }
        }
        if keep_logs {
            remove_all_but_logs(&self.dir);
            println!("demo logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes everything in `dir` except its top-level `*.log` files: keys, tokens and the
/// control plane's store go; what the processes said stays.
fn remove_all_but_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        } else if path.extension().is_none_or(|e| e != "log") {
            let _ = std::fs::remove_file(&path);
        }
    }
}

struct SidecarAddrs {
    outbound: SocketAddr,
}

fn sigterm(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Mesh binaries are installed side by side: look next to this executable.
fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable directory")?;
    let p = dir.join(name);
    if !p.exists() {
        bail!(
            "{} not found next to mesh-cli: build every binary (cargo build --release --workspace --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// Children log to files in the demo dir so the terminal shows only the table.
fn spawn_quiet(mut cmd: Command, log: &Path) -> anyhow::Result<Child> {
    let f = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .kill_on_drop(true);
    cmd.spawn().context("spawn")
}

async fn wait_addrs(child: &mut Child, file: &Path) -> anyhow::Result<HashMap<String, SocketAddr>> {
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(map) = serde_json::from_str::<HashMap<String, String>>(&text)
        {
            return Ok(map
                .into_iter()
                .filter_map(|(k, v)| v.parse().ok().map(|a| (k, a)))
                .collect());
        }
        if let Some(status) = child.try_wait()? {
            bail!("exited with {status} during start-up (see its log in the demo dir)");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("did not report its addresses within {START_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_ready(admin: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    loop {
        if apps::http_get_status(admin, "/ready").await == Some(200) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not ready within {START_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
