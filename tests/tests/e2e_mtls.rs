//! End to end mTLS with the real binaries: join tokens from the admin API, certificates from
//! the control plane's CA, client sidecar → server sidecar over mutual TLS, a plaintext client
//! refused by a strict inbound, a relay between sidecars seeing only ciphertext, and the admin
//! API refusing unauthenticated callers.

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::admin::v1::admin_client::AdminClient;
use mesh_proto::admin::v1::{
    CreateServiceRequest, CreateTokenRequest, ListRequest, RegisterEndpointRequest,
};
use mesh_proto::types::v1::Endpoint;
use mesh_tests::admin::admin;
use mesh_tests::http::{EchoApp, get_via};
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Bounds each wait for the mesh to converge; only a hang guard, never a timing assertion.
const CONVERGE: Duration = Duration::from_secs(30);
/// Discovery and identity over TLS, as every meshed deployment should run it.
const TLS: &[&str] = &["--discovery-tls=true"];
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
            control_plane: Some(cp.tls_discovery_url()),
            extra: cp.sidecar_tls_args(),
            env: vec![("MESH_JOIN_TOKEN".into(), token)],
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_between_sidecars_over_mtls_and_plaintext_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
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
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
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

/// Forwards every connection to `to`, keeping a copy of the client → server bytes.
async fn relay(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let copy = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let seen = copy.clone();
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut up_r, mut up_w) = up.into_split();
                let (mut down_r, mut down_w) = down.split();
                let upstream = async {
                    // 16 KiB: any TLS record fits; the copy is only inspected afterwards.
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = down_r.read(&mut buf).await {
                        if n == 0 || up_w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        seen.lock().await.extend_from_slice(&buf[..n]);
                    }
                    let _ = up_w.shutdown().await;
                };
                let downstream = tokio::io::copy(&mut up_r, &mut down_w);
                let _ = tokio::join!(upstream, downstream);
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_between_sidecars_sees_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let app = EchoApp::start("echo-relayed").await;
    let server = meshed(&cp, dir.path(), "echo", Some(app.addr.port())).await;
    let client = meshed(&cp, dir.path(), "client", None).await;
    let (relay_addr, seen) = relay(server.inbound).await;

    // A second service whose only endpoint is the relay, presenting the server's identity.
    let mut a = admin(&cp).await;
    tokio::time::timeout(
        IO_LIMIT,
        a.create_service(CreateServiceRequest {
            service: "echo-relay".into(),
            namespace: "default".into(),
            ports: vec![80],
        }),
    )
    .await
    .expect("create in time")
    .expect("create service");
    tokio::time::timeout(
        IO_LIMIT,
        a.register_endpoint(RegisterEndpointRequest {
            service: "echo-relay".into(),
            endpoint: Some(Endpoint {
                address: relay_addr.to_string(),
                weight: 1,
                identity: "spiffe://cluster.local/ns/default/sa/echo".into(),
                app_port: u32::from(app.addr.port()),
                ..Default::default()
            }),
        }),
    )
    .await
    .expect("register in time")
    .expect("register endpoint");

    let (status, who, _, _) = eventually("echo reachable through the relay", CONVERGE, || async {
        get_via(client.outbound, "echo-relay", "/secret-path", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(who.as_deref(), Some("echo-relayed"));
    let bytes = seen.lock().await.clone();
    assert!(!bytes.is_empty(), "the request went through the relay");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("secret-path") && !text.contains("HTTP/") && !text.contains("PRI *"),
        "plaintext seen on the wire between sidecars"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_allows_listed_identity_and_denies_others_with_403() {
    use mesh_proto::admin::v1::SetAuthorizationPolicyRequest;
    use mesh_proto::types::v1::{AuthorizationPolicy, AuthzAction, AuthzRule};

    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let app = EchoApp::start("echo-authz").await;
    let _server = meshed(&cp, dir.path(), "echo", Some(app.addr.port())).await;
    let web = meshed(&cp, dir.path(), "web", None).await;
    let other = meshed(&cp, dir.path(), "other", None).await;
    for c in [&web, &other] {
        eventually("echo reachable before the policy", CONVERGE, || async {
            get_via(c.outbound, "echo", "/", &[])
                .await
                .ok()
                .filter(|r| r.0 == 200)
        })
        .await;
    }

    let mut a = admin(&cp).await;
    a.set_authorization_policy(SetAuthorizationPolicyRequest {
        policy: Some(AuthorizationPolicy {
            service: "echo".into(),
            default_action: AuthzAction::Deny as i32,
            allow: vec![AuthzRule {
                sources: vec!["spiffe://cluster.local/ns/default/sa/web".into()],
                ..Default::default()
            }],
        }),
        dry_run: false,
    })
    .await
    .expect("set authorization policy");

    let (status, _, _, headers) = eventually("other is denied once applied", CONVERGE, || async {
        get_via(other.outbound, "echo", "/", &[])
            .await
            .ok()
            .filter(|r| r.0 == 403)
    })
    .await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-mesh-error"], "authz-denied");
    for _ in 0..10 {
        let (status, who, _, _) = get_via(web.outbound, "echo", "/", &[]).await.unwrap();
        assert_eq!(status, 200, "the allowed identity must pass");
        assert_eq!(who.as_deref(), Some("echo-authz"));
    }
}
