//! Shared fixtures for the TLS tests: a real CA + Identity gRPC service on loopback, and workloads certified through it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_control_plane::ca::{CaConfig, CertificateAuthority, JoinTokens, MemoryCaStorage};
use mesh_control_plane::identity_server::IdentityService;
use mesh_control_plane::serving::ServingTls;
use mesh_proto::identity::v1::identity_client::IdentityClient;
use mesh_sidecar::identity::{CertStore, ControlTls, JoinToken, SpiffeId, certify};
use mesh_sidecar::tls::{InboundMode, MeshAcceptor, PeerIdentity, TrustBundle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tonic::transport::{Channel, Server};

/// Bounds a hang only; every step takes milliseconds.
pub const STEP: Duration = Duration::from_secs(20);

/// A control plane: CA, tokens and the Identity service over TLS on 127.0.0.1:0.
pub struct Cp {
    pub ca: Arc<CertificateAuthority>,
    pub storage: Arc<MemoryCaStorage>,
    pub tokens: JoinTokens,
    pub addr: SocketAddr,
}

impl Cp {
    pub async fn start() -> Self {
        let storage = Arc::new(MemoryCaStorage::default());
        let ca = Arc::new(
            CertificateAuthority::load_or_create(CaConfig::default(), storage.clone()).unwrap(),
        );
        let tokens = JoinTokens::in_memory();
        // The control plane's own listener TLS, as the binary serves it.
        let tls = ServingTls::new(ca.clone(), Vec::new(), Duration::from_secs(3600)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::builder()
            .add_service(IdentityService::new(ca.clone(), tokens.clone()).into_server());
        tokio::spawn(server.serve_with_incoming(tls.incoming(listener)));
        Self {
            ca,
            storage,
            tokens,
            addr,
        }
    }

    pub fn bundle(&self) -> Vec<String> {
        self.ca.trust_bundle()
    }

    /// A gRPC client that verifies the control plane against the mesh bundle.
    pub async fn client(&self) -> IdentityClient<Channel> {
        self.client_as(None).await
    }

    /// Like [`Self::client`], presenting `workload`'s current certificate (a renewal).
    pub async fn client_as(&self, workload: Option<Arc<CertStore>>) -> IdentityClient<Channel> {
        let tls = ControlTls::new(&self.bundle(), "localhost", workload).unwrap();
        let endpoint = tls.endpoint(&format!("https://{}", self.addr)).unwrap();
        IdentityClient::new(timeout(STEP, tls.connect(endpoint)).await.unwrap().unwrap())
    }

    pub fn token(&self, sa: &str) -> JoinToken {
        let cp_id = self.ca.trust_domain().workload("default", sa).unwrap();
        let (token, _) = self.tokens.create(cp_id, None).unwrap();
        JoinToken::new(token.into_string()).unwrap()
    }

    /// A workload for `sa` holding a certificate obtained through the Identity service.
    pub async fn workload(&self, sa: &str) -> Arc<CertStore> {
        self.workload_with_ttl(sa, None).await
    }

    pub async fn workload_with_ttl(&self, sa: &str, ttl: Option<Duration>) -> Arc<CertStore> {
        let store = CertStore::new(id(sa), TrustBundle::from_pem(&self.bundle()).unwrap());
        let (creds, bundle) = certify(
            &mut self.client().await,
            Some(&self.token(sa)),
            &id(sa),
            ttl,
        )
        .await
        .unwrap();
        store.set_trust_bundle(bundle);
        store.set_credentials(creds);
        store
    }
}

pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}")).unwrap()
}

/// An inbound listener: each accepted connection gets one line back naming the peer
/// (`mtls <id> <alpn>` or `plain`), then its bytes echoed. Accept errors are sent on `errors`.
pub async fn serve(
    store: Arc<CertStore>,
    mode: InboundMode,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = MeshAcceptor::new(store);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp, mode).await {
                    Ok((mut stream, peer)) => {
                        let line = match peer {
                            PeerIdentity::Mtls { id, alpn } => format!("mtls {id} {alpn:?}\n"),
                            PeerIdentity::Plaintext => "plain\n".to_owned(),
                        };
                        if stream.write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(e.to_string());
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Reads the server's first line.
pub async fn read_line<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = timeout(STEP, s.read(&mut b)).await.unwrap().unwrap();
        if n == 0 || b[0] == b'\n' {
            return String::from_utf8(out).unwrap();
        }
        out.push(b[0]);
    }
}
