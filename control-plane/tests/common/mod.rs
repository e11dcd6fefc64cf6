//! Test helpers: an in-process control plane on 127.0.0.1:0, an authenticated admin client
//! over TLS (verified with the data dir's trust bundle), and a minimal discovery client that
//! speaks the delta protocol over a real socket.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mesh_control_plane::{Config, Handle};
use mesh_proto::admin::v1::admin_client::AdminClient;
use mesh_proto::discovery::v1::discovery_client::DiscoveryClient;
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, ErrorDetail, Node};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Request, Status, Streaming};

/// Bounds every await that could hang; generous because the machine is shared.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub struct Cp {
    pub handle: Handle,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Cp {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut Config)) -> Cp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::ephemeral(dir.path().to_path_buf());
    f(&mut config);
    let handle = within("start", mesh_control_plane::run(config))
        .await
        .expect("control plane starts");
    Cp { handle, dir }
}

#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let v = format!("Bearer {}", self.0)
            .parse()
            .map_err(|_| Status::internal("bad token"))?;
        req.metadata_mut().insert("authorization", v);
        Ok(req)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// The trust bundle (PEM) a control plane wrote into `data_dir`.
pub fn bundle(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("ca/trust-bundle.pem")).expect("trust bundle")
}

/// A TLS channel to the admin port at `addr`, trusting only `bundle_pem` and checking the
/// certificate's IP name (`127.0.0.1`), as `mesh-cli` does.
pub async fn admin_channel(
    addr: SocketAddr,
    bundle_pem: &str,
) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(bundle_pem))
        .domain_name(addr.ip().to_string());
    within(
        "admin connect",
        Channel::from_shared(format!("https://{addr}"))
            .expect("admin URL")
            .tls_config(tls)?
            .connect(),
    )
    .await
}

pub async fn admin_at(addr: SocketAddr, token: &str, bundle_pem: &str) -> Admin {
    let ch = admin_channel(addr, bundle_pem)
        .await
        .expect("admin connects over TLS");
    AdminClient::with_interceptor(ch, Bearer(token.to_string()))
}

pub async fn admin(cp: &Cp) -> Admin {
    admin_at(
        cp.handle.addrs.admin,
        &cp.handle.admin_token,
        &bundle(cp.dir.path()),
    )
    .await
}

pub fn node(id: &str, service: &str, ip: &str) -> Node {
    Node {
        id: id.to_string(),
        identity: format!("spiffe://cluster.local/ns/default/sa/{service}"),
        service: service.to_string(),
        namespace: "default".to_string(),
        service_account: service.to_string(),
        labels: HashMap::from([("version".to_string(), "v1".to_string())]),
        proxy_version: "test".to_string(),
        address: ip.to_string(),
        inbound_port: 15006,
        app_ports: vec![8080],
        zone: String::new(),
    }
}

/// One proxy's discovery stream.
pub struct Proxy {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Proxy {
    /// Opens a stream whose first request carries `node` (plus optional subscriptions).
    pub async fn connect_with(
        addr: std::net::SocketAddr,
        first: DeltaDiscoveryRequest,
    ) -> Result<Proxy, Status> {
        let ch = within(
            "discovery connect",
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect(),
        )
        .await
        .expect("discovery connects");
        // 64 queued requests: tests send a handful at a time.
        let (tx, rx) = mpsc::channel(64);
        tx.send(first).await.expect("queue first request");
        let mut client = DiscoveryClient::new(ch);
        let rx = within("stream open", client.delta_stream(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        Ok(Proxy { tx, rx })
    }

    pub async fn connect(addr: std::net::SocketAddr, n: Node) -> Proxy {
        Self::connect_with(
            addr,
            DeltaDiscoveryRequest {
                node: Some(n),
                ..Default::default()
            },
        )
        .await
        .expect("stream accepted")
    }

    pub async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.expect("send request");
    }

    pub async fn subscribe(&self, type_url: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    pub async fn unsubscribe(&self, type_url: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_unsubscribe: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        within("a discovery response", self.rx.message())
            .await
            .expect("stream healthy")
            .expect("stream open")
    }

    /// Receives and ACKs.
    pub async fn recv_ack(&mut self) -> DeltaDiscoveryResponse {
        let r = self.recv().await;
        self.ack(&r).await;
        r
    }

    pub async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    pub async fn nack(&self, r: &DeltaDiscoveryResponse, msg: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: Some(ErrorDetail {
                code: 3,
                message: msg.to_string(),
            }),
            ..Default::default()
        })
        .await;
    }

    /// The next status the stream ends with, if it ends with an error.
    pub async fn closed_with(&mut self) -> Option<Status> {
        within("stream end", self.rx.message()).await.err()
    }
}

/// Names of the resources a response carries, in order.
pub fn names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|x| x.name.clone()).collect()
}

pub fn version_of(r: &DeltaDiscoveryResponse, name: &str) -> String {
    r.resources
        .iter()
        .find(|x| x.name == name)
        .map(|x| x.version.clone())
        .unwrap_or_else(|| panic!("{name} not in response"))
}
