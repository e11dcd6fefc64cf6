//! Opaque TCP between real sidecars over mTLS (ALPN `mesh-tcp`): a server-first line echo works through two sidecars, a relay between them sees only ciphertext, authorization closes a denied identity's connection, and a plaintext preamble on a strict port is refused and counted.

mod mtls_support;

use mesh_proto::admin::v1::SetAuthorizationPolicyRequest;
use mesh_proto::types::v1::{AuthorizationPolicy, AuthzAction, AuthzRule};
use mesh_tests::admin::admin;
use mesh_tests::{ControlPlane, eventually};
use mtls_support::{
    CONVERGE, IO_LIMIT, LineEcho, TLS, Tunnel, meshed, metrics_text, register_static, relay, sample,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tunnel to `authority` through `outbound` once the app's greeting arrives through it.
async fn greeted(outbound: std::net::SocketAddr, authority: &str, greeting: &str) -> Tunnel {
    eventually(&format!("{authority} greets"), CONVERGE, || async {
        let mut t = Tunnel::open(outbound, authority).await.ok()?;
        (t.line().await?.as_str() == greeting).then_some(t)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_echo_through_two_sidecars_and_relay_sees_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let app = LineEcho::start("echo-tcp").await;
    let port = app.addr.port();
    let server = meshed(&cp, dir.path(), "echo", Some(port)).await;
    let client = meshed(&cp, dir.path(), "client", None).await;

    let mut direct = greeted(client.outbound, &format!("echo:{port}"), "HELLO echo-tcp").await;
    direct.send("ping").await;
    assert_eq!(direct.line().await.as_deref(), Some("ping"));

    // Same server sidecar, reached through a relay that records both directions.
    let (relay_addr, seen) = relay(server.inbound).await;
    let sa = "spiffe://cluster.local/ns/default/sa/echo";
    register_static(&cp, "echo-relay", relay_addr, sa, port).await;
    let authority = format!("echo-relay:{port}");
    let mut relayed = greeted(client.outbound, &authority, "HELLO echo-tcp").await;
    for i in 0..5 {
        let line = format!("secret-line-{i}");
        relayed.send(&line).await;
        assert_eq!(relayed.line().await, Some(line));
    }
    drop(relayed);

    let bytes = seen.lock().await.clone();
    assert!(!bytes.is_empty(), "the tunnel went through the relay");
    let text = String::from_utf8_lossy(&bytes);
    for plain in ["MESH-TCP", "secret-line", "HELLO"] {
        assert!(
            !text.contains(plain),
            "{plain:?} seen on the wire between sidecars"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_from_identity_not_allowed_is_closed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let app = LineEcho::start("echo-authz").await;
    let port = app.addr.port();
    let server = meshed(&cp, dir.path(), "echo", Some(port)).await;
    let web = meshed(&cp, dir.path(), "web", None).await;
    let other = meshed(&cp, dir.path(), "other", None).await;
    let authority = format!("echo:{port}");
    for c in [&web, &other] {
        greeted(c.outbound, &authority, "HELLO echo-authz").await;
    }

    let mut a = admin(&cp).await;
    tokio::time::timeout(
        IO_LIMIT,
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
        }),
    )
    .await
    .expect("policy in time")
    .expect("set authorization policy");

    let denied = r#"mesh_errors_total{cause="authz-denied"}"#;
    let before = sample(&metrics_text(server.admin).await, denied);
    // Once the policy is applied, `other`'s tunnel is closed before the app is reached.
    eventually(
        "other's connection closed by the policy",
        CONVERGE,
        || async {
            let mut t = Tunnel::open(other.outbound, &authority).await.ok()?;
            t.line().await.is_none().then_some(())
        },
    )
    .await;
    let after = sample(&metrics_text(server.admin).await, denied);
    assert!(
        after > before,
        "authz-denied not counted: {before} -> {after}"
    );

    for i in 0..5 {
        let mut t = greeted(web.outbound, &authority, "HELLO echo-authz").await;
        let line = format!("allowed-{i}");
        t.send(&line).await;
        assert_eq!(t.line().await, Some(line), "the allowed identity must pass");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_preamble_to_strict_port_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let app = LineEcho::start("echo-strict").await;
    let port = app.addr.port();
    let server = meshed(&cp, dir.path(), "echo", Some(port)).await;
    // Ready = certificate loaded: the inbound is in strict mTLS mode from here on.
    let client = meshed(&cp, dir.path(), "client", None).await;
    greeted(
        client.outbound,
        &format!("echo:{port}"),
        "HELLO echo-strict",
    )
    .await;

    let series = r#"mesh_tls_handshake_failures_total{direction="inbound",reason="plaintext"}"#;
    let before = sample(&metrics_text(server.admin).await, series);
    let mut raw = tokio::time::timeout(IO_LIMIT, tokio::net::TcpStream::connect(server.inbound))
        .await
        .expect("connect in time")
        .expect("connect");
    raw.write_all(format!("MESH-TCP {port}\nhello\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(IO_LIMIT, raw.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        read.is_err() || buf.is_empty(),
        "strict inbound answered a plaintext preamble: {:?}",
        String::from_utf8_lossy(&buf)
    );

    // The refusal closes the socket a moment before the counter is bumped: poll the scrape.
    let text = eventually(
        &format!("{series} counts the refusal"),
        CONVERGE,
        || async {
            let text = metrics_text(server.admin).await;
            (sample(&text, series) > before).then_some(text)
        },
    )
    .await;
    promtool_check(&text);
}

/// `promtool check metrics`; skipped with a printed reason when promtool is not installed.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED promtool check: promtool not runnable ({e})");
            return;
        }
    };
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("write to promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
