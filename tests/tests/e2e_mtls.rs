//! End to end mTLS with the real binaries: join tokens from the admin API, certificates from
//! the control plane's CA, client sidecar → server sidecar over mutual TLS, a plaintext client
//! refused by a strict inbound, and the admin API refusing unauthenticated callers.

use std::time::Duration;

use mesh_proto::admin::v1::admin_client::AdminClient;
use mesh_proto::admin::v1::{CreateTokenRequest, ListRequest};
use mesh_tests::admin::admin;
use mesh_tests::http::{EchoApp, get_via};
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bounds each wait for the mesh to converge; only a hang guard, never a timing assertion.
const CONVERGE: Duration = Duration::from_secs(30);
/// Bounds one raw socket exchange; only a hang guard.
const IO_LIMIT: Duration = Duration::from_secs(10);

/// A sidecar of `service` with a join token for its service account.
async fn meshed(
    cp: &ControlPlane,
    dir: &std::path::Path,
    service: &str,
    app: Option<u16>,
) -> Sidecar {
    let mut a = admin(cp).await;
    let token = tokio::time::timeout(
        IO_LIMIT,
        a.create_token(CreateTokenRequest {
            namespace: "default".into(),
            service_account: service.into(),
            ttl_secs: 0,
        }),
    )
    .await
    .expect("create token in time")
    .expect("create token")
    .into_inner()
    .token;
    Sidecar::start(
        dir,
        &SidecarOpts {
            service: service.into(),
            app_ports: app.into_iter().collect(),
            control_plane: Some(cp.discovery_url()),
            extra: cp.sidecar_tls_args(),
            env: vec![("MESH_JOIN_TOKEN".into(), token)],
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_between_sidecars_over_mtls_and_plaintext_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let app = EchoApp::start("echo-tls").await;
    let server = meshed(&cp, dir.path(), "echo", Some(app.addr.port())).await;
    let client = meshed(&cp, dir.path(), "client", None).await;

    let (status, who, body, _) = eventually("echo reachable over mTLS", CONVERGE, || async {
        get_via(client.outbound, "echo", "/secure", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(who.as_deref(), Some("echo-tls"));
    assert_eq!(body, "echo-tls /secure");

    // A plaintext HTTP client on the strict inbound port gets no answer from the app: the
    // connection is closed without a response, and the app sees no request.
    let hits_before = app.hits();
    let mut raw = tokio::time::timeout(IO_LIMIT, tokio::net::TcpStream::connect(server.inbound))
        .await
        .expect("connect in time")
        .expect("connect");
    raw.write_all(b"GET /plain HTTP/1.1\r\nhost: echo\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(IO_LIMIT, raw.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        read.is_err() || buf.is_empty(),
        "strict inbound answered plaintext: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(app.hits(), hits_before, "the app saw a plaintext request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_without_credentials_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", cp.admin))
        .unwrap()
        .connect()
        .await
        .expect("connect admin API");
    let mut bare = AdminClient::new(channel);
    let err = tokio::time::timeout(IO_LIMIT, bare.list_tokens(ListRequest::default()))
        .await
        .expect("answer in time")
        .expect_err("no credentials must be refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}
