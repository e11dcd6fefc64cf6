//! Real gRPC through two sidecars (client sidecar → server sidecar → app): unary calls with
//! OK and error statuses (grpc-status travels in trailers) and a bidirectional stream.
//! The app reuses two of the mesh's own generated services as a stand-in gRPC workload.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use mesh_proto::discovery::v1::discovery_client::DiscoveryClient;
use mesh_proto::discovery::v1::discovery_server::{Discovery, DiscoveryServer};
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use mesh_proto::identity::v1::identity_client::IdentityClient;
use mesh_proto::identity::v1::identity_server::{Identity, IdentityServer};
use mesh_proto::identity::v1::{CertifyRequest, CertifyResponse};
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// The echo app: unary answers with the request's identity, or fails with the status the
/// token names; the stream answers every message with its type URL as the nonce.
struct EchoGrpc;

#[tonic::async_trait]
impl Identity for EchoGrpc {
    async fn certify(
        &self,
        r: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let r = r.into_inner();
        if r.token == "deny" {
            return Err(Status::permission_denied("denied by the app"));
        }
        Ok(Response::new(CertifyResponse {
            leaf_pem: format!("echo:{}", r.identity),
            ..Default::default()
        }))
    }
}

type Out = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Discovery for EchoGrpc {
    type DeltaStreamStream = Out;
    async fn delta_stream(
        &self,
        r: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Out>, Status> {
        let out = r.into_inner().map(|m| {
            m.map(|m| DeltaDiscoveryResponse {
                nonce: m.type_url,
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
}

async fn start_app() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(EchoGrpc))
            .add_service(DiscoveryServer::new(EchoGrpc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_bidi_streaming_through_two_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let app_port = start_app().await;
    let cp_url = cp.discovery_url();
    let _server = Sidecar::start(
        dir.path(),
        &SidecarOpts {
            service: "grpc-echo".into(),
            app_ports: vec![app_port],
            control_plane: Some(cp_url.clone()),
            extra: cp.sidecar_tls_args(),
            env: cp.join_env("grpc-echo"),
            ..Default::default()
        },
    );
    let client = Sidecar::start(
        dir.path(),
        &SidecarOpts {
            service: "grpc-client".into(),
            control_plane: Some(cp_url),
            extra: cp.sidecar_tls_args(),
            env: cp.join_env("grpc-client"),
            ..Default::default()
        },
    );
    // The app dials its sidecar; the :authority names the service.
    let channel: Channel = Endpoint::from_shared(format!("http://{}", client.outbound))
        .unwrap()
        .origin("http://grpc-echo".parse().unwrap())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();

    let mut unary = IdentityClient::new(channel.clone());
    let ok = eventually(
        "grpc-echo reachable through the mesh",
        Duration::from_secs(30),
        || {
            let mut unary = unary.clone();
            async move {
                unary
                    .certify(CertifyRequest {
                        identity: "hello".into(),
                        ..Default::default()
                    })
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert_eq!(ok.into_inner().leaf_pem, "echo:hello");

    // An error status arrives intact: code and message travel in the trailers.
    let err = unary
        .certify(CertifyRequest {
            token: "deny".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(err.message(), "denied by the app");

    // Bidirectional streaming: each message is answered while the stream stays open.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut stream = DiscoveryClient::new(channel)
        .delta_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..20 {
        tx.send(DeltaDiscoveryRequest {
            type_url: format!("msg-{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("stream answer in time")
            .expect("stream open")
            .expect("ok message");
        assert_eq!(resp.nonce, format!("msg-{i}"));
    }
    drop(tx);
    // Closing our side ends the stream with an OK status (trailers).
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("stream end in time");
    assert!(end.is_none(), "stream should end cleanly, got {end:?}");
}
