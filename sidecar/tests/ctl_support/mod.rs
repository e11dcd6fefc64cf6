//! Test control plane: a real tonic Discovery server on 127.0.0.1:0 that hands each stream to
//! the test, which reads the proxy's requests and sends responses by hand.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_proto::discovery::v1::discovery_server::{Discovery, DiscoveryServer};
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use mesh_proto::types::v1 as pb;
use mesh_proto::types::v1::resource::Kind;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Bounds every wait in these tests: only a hang ever takes this long.
pub const WAIT: Duration = Duration::from_secs(20);

/// One proxy stream, driven by the test.
pub struct CpStream {
    requests: Streaming<DeltaDiscoveryRequest>,
    responses: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    nonce: u64,
}

/// The test control plane.
pub struct FakeCp {
    pub addr: SocketAddr,
    streams: mpsc::Receiver<CpStream>,
    _shutdown: oneshot::Sender<()>,
}

struct Svc {
    streams: mpsc::Sender<CpStream>,
}

#[tonic::async_trait]
impl Discovery for Svc {
    type DeltaStreamStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_stream(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaStreamStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let stream = CpStream {
            requests: request.into_inner(),
            responses: tx,
            nonce: 0,
        };
        self.streams
            .send(stream)
            .await
            .map_err(|_| Status::unavailable("test is gone"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl FakeCp {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Binds `addr` (a fixed port lets a test restart the control plane where proxies look).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DiscoveryServer::new(Svc { streams: tx }))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Self {
            addr,
            streams: rx,
            _shutdown: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next proxy stream.
    pub async fn accept(&mut self) -> CpStream {
        tokio::time::timeout(WAIT, self.streams.recv())
            .await
            .expect("a proxy connects")
            .expect("server alive")
    }
}

impl CpStream {
    pub async fn recv(&mut self) -> DeltaDiscoveryRequest {
        tokio::time::timeout(WAIT, self.requests.message())
            .await
            .expect("the proxy sends a request")
            .expect("stream healthy")
            .expect("stream open")
    }

    /// Reads the first requests of a stream until every type in `types` has been seen; returns
    /// them by type URL.
    pub async fn recv_initial(&mut self, types: &[&str]) -> HashMap<String, DeltaDiscoveryRequest> {
        let mut seen = HashMap::new();
        while !types.iter().all(|t| seen.contains_key(*t)) {
            let r = self.recv().await;
            seen.insert(r.type_url.clone(), r);
        }
        seen
    }

    /// Reads requests until one answers `nonce` (subscription changes in between are skipped).
    pub async fn recv_reply(&mut self, nonce: &str) -> DeltaDiscoveryRequest {
        loop {
            let r = self.recv().await;
            if r.response_nonce == nonce {
                return r;
            }
        }
    }

    /// Sends a response and returns its nonce.
    pub async fn send(
        &mut self,
        type_url: &str,
        resources: Vec<pb::Resource>,
        removed: &[&str],
    ) -> String {
        self.nonce += 1;
        let nonce = format!("n{}", self.nonce);
        let resp = DeltaDiscoveryResponse {
            system_version_info: String::new(),
            type_url: type_url.to_string(),
            resources,
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            nonce: nonce.clone(),
        };
        self.responses
            .send(Ok(resp))
            .await
            .expect("proxy listening");
        nonce
    }

    /// Answers `service`'s cluster and route as absent (each ACK awaited), as a control plane
    /// does for a service with endpoints only: its endpoints answer then completes the service.
    pub async fn answer_no_cluster_no_route(&mut self, service: &str) {
        use mesh_proto::type_url::{CLUSTER, ROUTE};
        for t in [CLUSTER, ROUTE] {
            let n = self.send(t, vec![], &[service]).await;
            let reply = self.recv_reply(&n).await;
            assert!(reply.error_detail.is_none(), "{reply:?}");
        }
    }

    /// Ends the stream with an error, as a control plane restart would.
    pub async fn fail(self) {
        let _ = self
            .responses
            .send(Err(Status::unavailable("control plane going away")))
            .await;
    }
}

// === resource builders ===

pub fn res(name: &str, version: &str, kind: Kind) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        version: version.into(),
        kind: Some(kind),
    }
}

pub fn listener(service: &str, version: &str) -> pb::Resource {
    res(
        service,
        version,
        Kind::Listener(pb::Listener {
            name: service.into(),
            app_ports: vec![8080],
            ..Default::default()
        }),
    )
}

pub fn endpoints(service: &str, version: &str, addrs: &[&str]) -> pb::Resource {
    res(
        service,
        version,
        Kind::Endpoints(pb::Endpoints {
            service: service.into(),
            endpoints: addrs
                .iter()
                .map(|a| pb::Endpoint {
                    address: a.to_string(),
                    weight: 1,
                    app_port: 8080,
                    ..Default::default()
                })
                .collect(),
        }),
    )
}

pub fn cluster(service: &str, version: &str) -> pb::Resource {
    res(
        service,
        version,
        Kind::Cluster(pb::Cluster {
            name: service.into(),
            ..Default::default()
        }),
    )
}

/// A route whose only rule has a regex that does not compile: the proxy must NACK it.
pub fn bad_route(service: &str, version: &str) -> pb::Resource {
    res(
        service,
        version,
        Kind::Route(pb::Route {
            service: service.into(),
            rules: vec![pb::RouteRule {
                matches: vec![pb::RouteMatch {
                    path: Some(pb::PathMatch {
                        kind: pb::PathMatchKind::Regex as i32,
                        value: "(unclosed".into(),
                    }),
                    ..Default::default()
                }],
                backends: vec![pb::WeightedBackend {
                    service: service.into(),
                    weight: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }),
    )
}

/// Polls `cond` until it holds or [`WAIT`] passes (then panics with `what`).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === the sidecar binary ===

/// A `mesh-sidecar` process with its bound addresses.
pub struct Sidecar {
    pub child: tokio::process::Child,
    pub addrs: mesh_sidecar::app::BoundAddrs,
}

impl Sidecar {
    /// Starts the binary with `args` plus loopback listeners on port 0 and an addresses file in
    /// `dir`, and waits until it has bound.
    pub async fn start(dir: &std::path::Path, args: &[&str]) -> Self {
        let addrs_file = dir.join(format!("addrs-{}.json", unique()));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
            .args([
                "--inbound-addr",
                "127.0.0.1:0",
                "--outbound-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--addrs-file",
            ])
            .arg(&addrs_file)
            .args(args)
            .env("MESH_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("the sidecar binary starts");
        let deadline = tokio::time::Instant::now() + WAIT;
        let addrs = loop {
            if let Ok(body) = std::fs::read(&addrs_file) {
                break serde_json::from_slice(&body).expect("addresses file is JSON");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sidecar never bound"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self { child, addrs }
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.admin)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http("GET", &self.admin(path)).await
    }

    pub async fn post(&self, path: &str) -> (u16, String) {
        http("POST", &self.admin(path)).await
    }

    /// Waits until `/ready` answers `status`.
    pub async fn wait_ready(&self, status: u16) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.get("/ready").await.0 == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready never {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().expect("running") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal delivered");
    }

    /// Waits for the process to exit (bounded) and returns its status.
    pub async fn wait_exit(&mut self, bound: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(bound, self.child.wait())
            .await
            .expect("the sidecar exits in time")
            .expect("wait works")
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// One HTTP/1.1 request with an empty body; returns status and body text.
pub async fn http(method: &str, url: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("admin answers in time")
        .expect("admin reachable");
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body readable")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

// === a test app behind the sidecars ===

/// An HTTP/1.1 app on 127.0.0.1:0. `GET /slow…` announces its arrival on `arrivals` and answers
/// only once the test calls [`App::release`]; any other path answers at once.
pub struct App {
    pub addr: SocketAddr,
    pub arrivals: mpsc::UnboundedReceiver<()>,
    release: Arc<tokio::sync::Semaphore>,
}

use std::sync::Arc;

impl App {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, arrivals) = mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let gate = release.clone();
        tokio::spawn(async move {
            loop {
                let Ok((io, _)) = listener.accept().await else {
                    return;
                };
                let (tx, gate) = (tx.clone(), gate.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (tx, gate) = (tx.clone(), gate.clone());
                            async move {
                                if req.uri().path().starts_with("/slow") {
                                    let _ = tx.send(());
                                    gate.acquire().await.expect("gate open").forget();
                                }
                                let body = format!("app {}", req.uri().path());
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            arrivals,
            release,
        }
    }

    /// Lets one held `/slow…` request answer.
    pub fn release(&self) {
        self.release.add_permits(1);
    }

    /// Waits until a `/slow…` request has reached the app.
    pub async fn arrived(&mut self) {
        tokio::time::timeout(WAIT, self.arrivals.recv())
            .await
            .expect("the request reaches the app")
            .expect("app running");
    }
}

/// A meshed endpoint: the server sidecar's inbound address in front of `app_port`.
pub fn meshed_endpoints(
    service: &str,
    version: &str,
    inbound: SocketAddr,
    app_port: u16,
) -> pb::Resource {
    res(
        service,
        version,
        Kind::Endpoints(pb::Endpoints {
            service: service.into(),
            endpoints: vec![pb::Endpoint {
                address: inbound.to_string(),
                weight: 1,
                app_port: u32::from(app_port),
                identity: format!("spiffe://cluster.local/ns/default/sa/{service}"),
                ..Default::default()
            }],
        }),
    )
}

/// `GET http://<host>/<path>` sent to the proxy at `proxy` (origin-form with a `Host` header).
pub async fn get_via(proxy: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt, Empty};
    let io = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(proxy))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, tx.send_request(req))
        .await
        .map_err(|_| "response timed out".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Writes `resources` as a static config file and returns its path as a string.
pub fn static_file(dir: &std::path::Path, name: &str, resources: &[pb::Resource]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(resources).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Like [`eventually`] for an async condition.
pub async fn eventually_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
