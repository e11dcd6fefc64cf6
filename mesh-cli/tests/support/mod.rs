//! Test harness: a real `mesh-control-plane` process on ephemeral ports, the real `mesh-cli`
//! binary, and a minimal proxy that speaks the real discovery protocol (ACK or NACK).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mesh_proto::discovery::v1::discovery_client::DiscoveryClient;
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, ErrorDetail, Node};
use mesh_proto::type_url;
use mesh_proto::types::v1::resource::Kind;
use tokio::sync::mpsc;

pub mod echo;
pub mod golden;
pub mod mesh;
pub mod routed;

/// Bounds every wait for a process to come up or a command to finish; only guards a hang.
pub const HANG: Duration = Duration::from_secs(60);

/// Waits for a condition: runs `check` every `every` until it yields `Some`, or gives up with
/// `None` once `limit` has passed (the caller decides whether that fails the test).
pub async fn poll_until<T, F, Fut>(limit: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// The workspace's `mesh-control-plane`, built on demand next to this test's binaries.
fn control_plane_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .parent()
        .unwrap()
        .to_path_buf();
    let bin = dir.join("mesh-control-plane");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "mesh-control-plane"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot build mesh-control-plane (run `cargo build -p mesh-control-plane`)"
        );
    }
    bin
}

/// A running control plane with its own data dir; killed on drop.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    child: Child,
    pub admin: String,
    pub discovery: String,
}

impl ControlPlane {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// An anonymous, plaintext development mesh, for tests whose raw discovery clients play
    /// proxies (they speak plaintext gRPC and hold no certificate).
    pub fn start_plaintext() -> Self {
        Self::start_with(&["--discovery-tls=false", "--allow-anonymous-proxies"])
    }

    /// Like `start`, with extra flags. Discovery serves TLS and authenticates proxies by their
    /// workload certificate (the defaults); `support::mesh::Sidecar` joins with a token.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(control_plane_bin())
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args([
                "--discovery-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mesh-control-plane");
        // Owned by the guard from here on: any panic below still kills the process.
        let mut cp = Self {
            dir,
            child,
            admin: String::new(),
            discovery: String::new(),
        };
        let start = Instant::now();
        loop {
            if let Ok(b) = std::fs::read(cp.dir.path().join("addrs.json"))
                && cp.dir.path().join("admin-token").exists()
            {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                cp.admin = v["admin"].as_str().unwrap().to_string();
                cp.discovery = v["discovery"].as_str().unwrap().to_string();
                return cp;
            }
            assert!(
                start.elapsed() < HANG,
                "control plane did not write addrs.json"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The trust bundle the control plane's CA wrote into its data dir.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("ca/trust-bundle.pem")
    }

    /// Runs `mesh-cli --data-dir <dir> ARGS…`: address, token and trust bundle all come from
    /// the data dir.
    pub fn cli(&self, args: &[&str]) -> Run {
        cli_in(self.dir.path(), args, None)
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Run {
        cli_in(self.dir.path(), args, Some(stdin))
    }

    /// Async wrapper for tests that also drive proxies on the runtime.
    pub async fn cli_async(&self, args: &[&str]) -> Run {
        let dir = self.dir.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::time::timeout(
            HANG,
            tokio::task::spawn_blocking(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                cli_in(&dir, &a, None)
            }),
        )
        .await
        .expect("mesh-cli hung")
        .unwrap()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Outcome of one `mesh-cli` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "mesh-cli failed: {}", self.stderr);
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn cli_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("MESH_ADMIN_TOKEN")
        .env_remove("MESH_CONTROL_PLANE_ADMIN")
        .env_remove("MESH_CA_BUNDLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// A minimal proxy: announces `node`, subscribes to the Route of `route_for`, and ACKs every
/// response, except a route containing a rule named `nack_rule`, which it NACKs with `error`
/// (or, when `error` is empty, never answers: a stuck proxy).
pub struct Proxy {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn node(id: &str, service: &str, version: &str, ip: &str) -> Node {
    Node {
        id: id.into(),
        service: service.into(),
        namespace: "default".into(),
        labels: [("version".to_string(), version.to_string())].into(),
        proxy_version: "test".into(),
        address: ip.into(),
        inbound_port: 15006,
        app_ports: vec![9080],
        ..Default::default()
    }
}

pub async fn proxy(
    discovery: &str,
    node: Node,
    route_for: &str,
    nack_rule: Option<(&str, &str)>,
) -> Proxy {
    let mut client = tokio::time::timeout(
        HANG,
        DiscoveryClient::connect(format!("http://{discovery}")),
    )
    .await
    .unwrap()
    .unwrap();
    // A handful of requests are in flight at most; 16 never blocks the loop below.
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node),
        type_url: type_url::ROUTE.into(),
        resource_names_subscribe: vec![route_for.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut responses = client.delta_stream(requests).await.unwrap().into_inner();
    let nack = nack_rule.map(|(r, e)| (r.to_string(), e.to_string()));
    let task = tokio::spawn(async move {
        while let Ok(Some(resp)) = responses.message().await {
            let bad = resp.resources.iter().any(|r| match (&r.kind, &nack) {
                (Some(Kind::Route(route)), Some((name, _))) => {
                    route.rules.iter().any(|x| &x.name == name)
                }
                _ => false,
            });
            let message = nack.as_ref().map(|n| n.1.clone()).unwrap_or_default();
            if bad && message.is_empty() {
                continue;
            }
            let error_detail = bad.then_some(ErrorDetail { code: 3, message });
            let ack = DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail,
                ..Default::default()
            };
            if tx.send(ack).await.is_err() {
                return;
            }
        }
    });
    Proxy { task }
}
