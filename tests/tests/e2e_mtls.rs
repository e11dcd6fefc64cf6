//! End to end mTLS with the real binaries: join tokens from the admin API, certificates from
//! the control plane's CA, client sidecar → server sidecar over mutual TLS, a plaintext client
//! refused by a strict inbound, a relay between sidecars seeing only ciphertext, and the admin
//! API serving TLS only, refusing unauthenticated callers.

mod mtls_support;

use mesh_proto::admin::v1::ListRequest;
use mesh_proto::admin::v1::admin_client::AdminClient;
use mesh_tests::admin::admin;
use mesh_tests::http::{EchoApp, get_via};
use mesh_tests::{ControlPlane, eventually};
use mtls_support::{CONVERGE, IO_LIMIT, TLS, meshed, register_static, relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
async fn admin_api_over_tls_refuses_plaintext_and_missing_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    assert!(cp.admin_url.starts_with("https://"), "{}", cp.admin_url);
    // Over TLS (verified with the trust bundle) but without a token.
    let channel = tokio::time::timeout(IO_LIMIT, mesh_tests::admin::channel(&cp))
        .await
        .expect("connect in time")
        .expect("TLS handshake with the data dir's bundle");
    let mut bare = AdminClient::new(channel);
    let err = tokio::time::timeout(IO_LIMIT, bare.list_tokens(ListRequest::default()))
        .await
        .expect("answer in time")
        .expect_err("no credentials must be refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Plaintext HTTP/2 to the TLS port, even with the token, gets no answer at all.
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", cp.admin_token()).parse().unwrap();
    let plaintext = async {
        let ch = tonic::transport::Channel::from_shared(format!("http://{}", cp.admin))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(ListRequest::default());
        req.metadata_mut().insert("authorization", token);
        AdminClient::new(ch)
            .list_tokens(req)
            .await
            .map_err(|s| s.to_string())
    };
    let result = tokio::time::timeout(IO_LIMIT, plaintext)
        .await
        .expect("fails in time");
    assert!(result.is_err(), "plaintext admin call answered: {result:?}");

    // With the token over TLS: OK.
    let mut a = admin(&cp).await;
    tokio::time::timeout(IO_LIMIT, a.list_tokens(ListRequest::default()))
        .await
        .expect("answer in time")
        .expect("authenticated call over TLS");
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
    register_static(
        &cp,
        "echo-relay",
        relay_addr,
        "spiffe://cluster.local/ns/default/sa/echo",
        app.addr.port(),
    )
    .await;

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

/// A path rule admits only what is really under its prefix, however the path is spelled: the
/// peer sidecar judges `..`, `%2e%2e`, `//` and `/publicity` as the app would resolve them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_path_rules_judge_the_normalised_path() {
    use mesh_proto::admin::v1::SetAuthorizationPolicyRequest;
    use mesh_proto::types::v1::{AuthorizationPolicy, AuthzAction, AuthzRule};

    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let app = EchoApp::start("echo-paths").await;
    let _server = meshed(&cp, dir.path(), "echo", Some(app.addr.port())).await;
    let web = meshed(&cp, dir.path(), "web", None).await;
    let mut a = admin(&cp).await;
    a.set_authorization_policy(SetAuthorizationPolicyRequest {
        policy: Some(AuthorizationPolicy {
            service: "echo".into(),
            default_action: AuthzAction::Deny as i32,
            allow: vec![AuthzRule {
                sources: vec!["*".into()],
                path_prefix: "/public".into(),
                ..Default::default()
            }],
        }),
        dry_run: false,
    })
    .await
    .expect("set authorization policy");
    eventually("the policy is in force", CONVERGE, || async {
        get_via(web.outbound, "echo", "/admin", &[])
            .await
            .ok()
            .filter(|r| r.0 == 403)
    })
    .await;
    for allowed in ["/public", "/public/a", "/x/../public/a"] {
        let (status, _, _, _) = get_via(web.outbound, "echo", allowed, &[]).await.unwrap();
        assert_eq!(status, 200, "{allowed}");
    }
    for denied in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "//admin",
        "/publicity",
    ] {
        let (status, _, _, headers) = get_via(web.outbound, "echo", denied, &[]).await.unwrap();
        assert_eq!(status, 403, "{denied}");
        assert_eq!(headers["x-mesh-error"], "authz-denied", "{denied}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_checks_reach_a_strict_peer_over_mtls() {
    use mesh_proto::admin::v1::SetClusterPolicyRequest;
    use mesh_proto::types::v1::{Cluster, HealthCheck};

    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let app = EchoApp::start("echo-probed").await;
    let _server = meshed(&cp, dir.path(), "echo", Some(app.addr.port())).await;
    let client = meshed(&cp, dir.path(), "client", None).await;
    eventually("echo reachable", CONVERGE, || async {
        get_via(client.outbound, "echo", "/", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;

    // One failed probe would mark the endpoint down: a plaintext probe never gets through.
    tokio::time::timeout(
        IO_LIMIT,
        admin(&cp)
            .await
            .set_cluster_policy(SetClusterPolicyRequest {
                cluster: Some(Cluster {
                    name: "echo".into(),
                    health_check: Some(HealthCheck {
                        http_path: "/healthz".into(),
                        expected_status: 200,
                        // 200 ms: several probes while the test waits, still few requests.
                        interval_ms: 200,
                        timeout_ms: 200,
                        healthy_threshold: 1,
                        unhealthy_threshold: 1,
                    }),
                    ..Default::default()
                }),
                dry_run: false,
            }),
    )
    .await
    .expect("cluster policy in time")
    .expect("set cluster policy");

    // No client traffic from here on: every new app hit is a probe that passed the strict
    // inbound over mTLS.
    let hits = app.hits();
    eventually("probes reach the app", CONVERGE, || async {
        (app.hits() >= hits + 3).then_some(())
    })
    .await;
    let clusters = mtls_support::admin_get(client.admin, "/clusters").await;
    assert!(
        clusters.contains("echo") && !clusters.contains(r#""health_down":true"#),
        "endpoint marked down: {clusters}"
    );
    let (status, _, _, _) = get_via(client.outbound, "echo", "/after", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
}

/// An app that answers any request head with `101 Switching Protocols` and then echoes bytes,
/// as a WebSocket server does once upgraded (framing is the app's business, not the mesh's).
async fn upgrade_echo() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    head.push(b[0]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                    .await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// WebSocket between two workloads with identities: the upgrade and every byte after it go
/// over mTLS between the sidecars (a relay between them sees no plaintext), 100 messages echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_between_meshed_workloads_is_mtls_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let app = upgrade_echo().await;
    let server = meshed(&cp, dir.path(), "ws", Some(app.port())).await;
    let client = meshed(&cp, dir.path(), "web", None).await;
    let (relay_addr, seen) = relay(server.inbound).await;
    register_static(
        &cp,
        "ws-relayed",
        relay_addr,
        "spiffe://cluster.local/ns/default/sa/ws",
        app.port(),
    )
    .await;
    let mut s = eventually("the upgrade is switched", CONVERGE, || async {
        let mut s = tokio::net::TcpStream::connect(client.outbound).await.ok()?;
        s.write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws-relayed\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .ok()?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tokio::time::timeout(IO_LIMIT, s.read_exact(&mut b)).await.ok()?.ok()?;
            head.push(b[0]);
        }
        head.starts_with(b"HTTP/1.1 101").then_some(s)
    })
    .await;
    for i in 0..100 {
        let msg = format!("secret-message-{i:03}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(IO_LIMIT, s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(back, msg.as_bytes());
    }
    let bytes = seen.lock().await.clone();
    assert!(!bytes.is_empty(), "the tunnel went through the relay");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("secret-message") && !text.contains("Upgrade") && !text.contains("/chat"),
        "plaintext seen between the sidecars"
    );
}
