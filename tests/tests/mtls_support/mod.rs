//! Shared pieces of the mTLS scenarios: meshed sidecars with join tokens, a wire-recording relay, a server-first line-echo app, CONNECT tunnels and metric scrapes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::admin::v1::{CreateTokenRequest, RegisterEndpointRequest};
use mesh_proto::types::v1::Endpoint;
use mesh_tests::admin::admin;
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// Bounds each wait for the mesh to converge; only a hang guard, never a timing assertion.
pub const CONVERGE: Duration = Duration::from_secs(30);
/// Discovery and identity over TLS, as every meshed deployment should run it.
pub const TLS: &[&str] = &["--discovery-tls=true"];
/// Bounds one raw socket exchange; only a hang guard.
pub const IO_LIMIT: Duration = Duration::from_secs(10);

/// A join token for `default/<service_account>` from the control plane's admin API.
pub async fn token(cp: &ControlPlane, service_account: &str) -> String {
    token_for(cp, "default", service_account, 0).await
}

/// A join token for `<namespace>/<service_account>` living `ttl_secs` (0 = the default).
pub async fn token_for(
    cp: &ControlPlane,
    namespace: &str,
    service_account: &str,
    ttl_secs: u64,
) -> String {
    let mut a = admin(cp).await;
    tokio::time::timeout(
        IO_LIMIT,
        a.create_token(CreateTokenRequest {
            namespace: namespace.into(),
            service_account: service_account.into(),
            ttl_secs,
            services: Vec::new(),
            max_uses: 0,
        }),
    )
    .await
    .expect("create token in time")
    .expect("create token")
    .into_inner()
    .token
}

/// A sidecar of `service` with a join token for its service account, discovery over TLS.
pub async fn meshed(
    cp: &ControlPlane,
    dir: &std::path::Path,
    service: &str,
    app: Option<u16>,
) -> Sidecar {
    let token = token(cp, service).await;
    Sidecar::start(
        dir,
        &SidecarOpts {
            service: service.into(),
            app_ports: app.into_iter().collect(),
            control_plane: Some(cp.tls_discovery_url()),
            extra: cp.sidecar_tls_args(),
            env: vec![("MESH_JOIN_TOKEN".into(), token)],
            ..Default::default()
        },
    )
}

/// Declares `service` bound to `identity` (secure naming: callers verify its endpoints
/// present it) and registers a static endpoint of it at `address`.
pub async fn register_static(
    cp: &ControlPlane,
    service: &str,
    address: SocketAddr,
    identity: &str,
    app_port: u16,
) {
    use mesh_proto::admin::v1::CreateServiceRequest;
    let mut a = admin(cp).await;
    tokio::time::timeout(
        IO_LIMIT,
        a.create_service(CreateServiceRequest {
            service: service.into(),
            namespace: "default".into(),
            ports: vec![80],
            identities: vec![identity.into()],
        }),
    )
    .await
    .expect("create in time")
    .expect("create service");
    tokio::time::timeout(
        IO_LIMIT,
        a.register_endpoint(RegisterEndpointRequest {
            service: service.into(),
            endpoint: Some(Endpoint {
                address: address.to_string(),
                weight: 1,
                identity: identity.into(),
                app_port: u32::from(app_port),
                ..Default::default()
            }),
        }),
    )
    .await
    .expect("register in time")
    .expect("register endpoint");
}

/// Forwards every connection to `to`, keeping a copy of the bytes of both directions.
pub async fn relay(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let copy = seen.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let seen = copy.clone();
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(to).await else {
                    return;
                };
                let (up_r, up_w) = up.into_split();
                let (down_r, down_w) = down.into_split();
                let _ = tokio::join!(pump(down_r, up_w, seen.clone()), pump(up_r, down_w, seen));
            });
        }
    });
    (addr, seen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    // 16 KiB: any TLS record fits; the copy is only inspected afterwards.
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        seen.lock().await.extend_from_slice(&buf[..n]);
    }
    let _ = to.shutdown().await;
}

/// A server-first TCP app: greets with `HELLO <name>\n`, then echoes every line back.
pub struct LineEcho {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LineEcho {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let greeting = format!("HELLO {name}\n");
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    if w.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for LineEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw TCP tunnel through a sidecar's outbound listener (`CONNECT <authority>`), read
/// line by line.
pub struct Tunnel {
    pub io: BufReader<TcpStream>,
}

impl Tunnel {
    /// Opens the tunnel; `Err` with the proxy's status line when it refuses.
    pub async fn open(outbound: SocketAddr, authority: &str) -> Result<Self, String> {
        let exchange = async {
            let mut s = TcpStream::connect(outbound)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(
                format!("CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n").as_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let mut io = BufReader::new(s);
            let mut status = String::new();
            io.read_line(&mut status).await.map_err(|e| e.to_string())?;
            loop {
                let mut header = String::new();
                let n = io.read_line(&mut header).await.map_err(|e| e.to_string())?;
                if n == 0 || header == "\r\n" {
                    break;
                }
            }
            if status.split_whitespace().nth(1) != Some("200") {
                return Err(status);
            }
            Ok(Self { io })
        };
        tokio::time::timeout(IO_LIMIT, exchange)
            .await
            .unwrap_or_else(|_| Err("CONNECT timed out".into()))
    }

    /// The next line (without the newline); `None` when the far end closed.
    pub async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout(IO_LIMIT, self.io.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => Some(line.trim_end().to_owned()),
            _ => None,
        }
    }

    pub async fn send(&mut self, line: &str) {
        tokio::time::timeout(
            IO_LIMIT,
            self.io.get_mut().write_all(format!("{line}\n").as_bytes()),
        )
        .await
        .expect("write in time")
        .expect("write");
    }
}

/// The Prometheus text of a sidecar's (or control plane's) `/metrics`.
pub async fn metrics_text(admin: SocketAddr) -> String {
    admin_get(admin, "/metrics").await
}

/// The body of `GET path` on an admin/HTTP port.
pub async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let fetch = async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
    };
    tokio::time::timeout(IO_LIMIT, fetch)
        .await
        .ok()
        .flatten()
        .expect("metrics scraped")
}

/// The value of one sample line (`name{labels}`) in Prometheus text; 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
