//! Real sidecars (`mesh-sidecar` from the workspace) with tiny HTTP apps behind them, and a
//! plain HTTP/1.1 client that sends requests through a sidecar's outbound listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::HANG;

fn sidecar_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .parent()
        .unwrap()
        .to_path_buf();
    let bin = dir.join("mesh-sidecar");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "mesh-sidecar"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot build mesh-sidecar (run `cargo build -p mesh-sidecar`)"
        );
    }
    bin
}

/// A running sidecar; killed on drop.
pub struct Sidecar {
    child: Child,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    pub async fn start(
        dir: &Path,
        discovery: &str,
        service: &str,
        version: &str,
        app_port: Option<u16>,
    ) -> Self {
        Self::start_with(dir, discovery, service, version, app_port, &[]).await
    }

    /// Like `start`, with extra sidecar flags (e.g. `--outbound-services api`).
    pub async fn start_with(
        dir: &Path,
        discovery: &str,
        service: &str,
        version: &str,
        app_port: Option<u16>,
        extra: &[&str],
    ) -> Self {
        let name = format!("{service}-{version}-{}", app_port.unwrap_or(0));
        let addrs = dir.join(format!("{name}.addrs.json"));
        let mut cmd_env = Vec::new();
        let mut cmd = Command::new(sidecar_bin());
        cmd.args([
            "--service",
            service,
            "--labels",
            &format!("version={version}"),
        ])
        .args([
            "--control-plane",
            &join(dir, discovery, service, extra, &mut cmd_env),
        ])
        .args([
            "--inbound-addr",
            "127.0.0.1:0",
            "--outbound-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--addrs-file")
        .arg(&addrs)
        .env("MESH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        if let Some(p) = app_port {
            cmd.args(["--app-ports", &p.to_string()]);
        }
        cmd.envs(cmd_env);
        cmd.args(extra);
        let child = cmd.spawn().expect("spawn mesh-sidecar");
        let mut s = Self {
            child,
            inbound: ([0, 0, 0, 0], 0).into(),
            outbound: ([0, 0, 0, 0], 0).into(),
            admin: ([0, 0, 0, 0], 0).into(),
        };
        let start = Instant::now();
        let a: HashMap<String, String> = loop {
            if let Ok(t) = std::fs::read_to_string(&addrs)
                && let Ok(m) = serde_json::from_str(&t)
            {
                break m;
            }
            assert!(
                start.elapsed() < HANG,
                "sidecar {name} did not write its addresses"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        s.inbound = a["inbound"].parse().unwrap();
        s.outbound = a["outbound"].parse().unwrap();
        s.admin = a["admin"].parse().unwrap();
        loop {
            if get(s.admin, "/ready")
                .await
                .is_some_and(|(st, _)| st == 200)
            {
                return s;
            }
            assert!(start.elapsed() < HANG, "sidecar {name} not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `--control-plane` URL for a sidecar of `service`, joining the mesh as users do when the
/// control plane in `dir` (its data dir) serves TLS and the test chose no TLS flags itself: a
/// join token from `mesh-cli token create` (in `env`) and the data dir's trust bundle, so the
/// sidecar gets its certificate and speaks strict mTLS.
fn join(
    dir: &Path,
    discovery: &str,
    service: &str,
    extra: &[&str],
    env: &mut Vec<(String, String)>,
) -> String {
    let written: Option<serde_json::Value> = std::fs::read(dir.join("addrs.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let tls_url = written
        .as_ref()
        .and_then(|v| v["discovery_url"].as_str())
        .filter(|u| u.starts_with("https://"))
        .map(str::to_string);
    let chose_tls = extra.iter().any(|a| a.starts_with("--ca-bundle"));
    let (Some(url), false, false) = (tls_url, chose_tls, discovery.contains("://")) else {
        return control_plane_url(discovery);
    };
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .arg("--data-dir")
        .arg(dir)
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
        .expect("mesh-cli token create");
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("token JSON");
    env.push((
        "MESH_JOIN_TOKEN".into(),
        v["token"].as_str().expect("token").to_string(),
    ));
    env.push((
        "MESH_CA_BUNDLE".into(),
        dir.join("ca/trust-bundle.pem").display().to_string(),
    ));
    url
}

/// `http://ADDR` unless the caller already gave a scheme (`https://` for a TLS control plane).
fn control_plane_url(discovery: &str) -> String {
    if discovery.contains("://") {
        discovery.to_string()
    } else {
        format!("http://{discovery}")
    }
}

/// An HTTP/1.1 app answering every request with 200 and its version as the body; aborted on drop.
pub struct App {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn app(version: &'static str) -> App {
    app_on(0, version).await
}

/// Like [`app`], on a given port (an app that starts after its sidecar announced it).
pub async fn app_on(port: u16, version: &'static str) -> App {
    let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                // Requests here are small GETs; 8 KiB holds any head this test sends.
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{version}",
                            version.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                    if have == buf.len() {
                        return;
                    }
                }
            });
        }
    });
    App { port, task }
}

/// GET `path` from `addr` (origin form); (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"),
    )
    .await
}

/// GET `http://{host}{path}` through a sidecar's outbound listener (explicit proxy form).
pub async fn via(
    outbound: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut req =
        format!("GET http://{host}{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    request(outbound, &req).await
}

async fn request(addr: SocketAddr, req: &str) -> Option<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    // A request through two local sidecars takes milliseconds; 10 s only bounds a hang.
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .ok()
        .flatten()
}
