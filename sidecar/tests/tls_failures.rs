//! Failed mTLS handshakes are counted by direction and reason in `mesh_tls_handshake_failures_total`, and the metrics text stays valid.

mod tls_common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use mesh_sidecar::telemetry::Metrics;
use mesh_sidecar::tls::{
    Alpn, FailureReason, HandshakeSide, InboundMode, MeshConnector, TrustBundle,
};
use tls_common::{Cp, STEP, id, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The counters are process-wide and tests run in parallel: compare against a count taken
/// before, and wait (bounded) for the server task to record its side.
async fn grows(side: HandshakeSide, reason: FailureReason, before: u64) {
    let polls = async {
        while mesh_sidecar::tls::handshake_failures(side, reason) <= before {
            // 20 ms between polls of an atomic: cheap, and far below the hang bound.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    timeout(STEP, polls)
        .await
        .unwrap_or_else(|_| panic!("{side:?} {} never counted", reason.as_str()));
}

fn count(side: HandshakeSide, reason: FailureReason) -> u64 {
    mesh_sidecar::tls::handshake_failures(side, reason)
}

#[tokio::test]
async fn foreign_ca_counts_unknown_ca_on_both_sides() {
    let cp = Cp::start().await;
    let foreign = Cp::start().await;
    let server = cp.workload("server").await;
    let client = foreign.workload("client").await;
    let (addr, _errors) = serve(server, InboundMode::Strict).await;

    // The foreign client trusts our root, so the server's check is what refuses it.
    let (in_before, out_before) = (
        count(HandshakeSide::Inbound, FailureReason::UnknownCa),
        count(HandshakeSide::Outbound, FailureReason::UnknownCa),
    );
    client.set_trust_bundle(TrustBundle::from_pem(&cp.bundle()).unwrap());
    let connector = MeshConnector::new(client.clone());
    if let Ok(Ok(mut tls)) = timeout(STEP, connector.connect(addr, &id("server"), Alpn::H2)).await {
        // TLS 1.3: the client can finish before the server's alert; the read sees it.
        let mut b = [0u8; 1];
        let _ = timeout(STEP, tls.read(&mut b)).await;
    }
    grows(HandshakeSide::Inbound, FailureReason::UnknownCa, in_before).await;

    // Now the client trusts only its own CA: it refuses our server's chain itself.
    client.set_trust_bundle(TrustBundle::from_pem(&foreign.bundle()).unwrap());
    let err = timeout(STEP, connector.connect(addr, &id("server"), Alpn::H2))
        .await
        .expect("connect hung")
        .expect_err("foreign server accepted");
    assert_eq!(err.reason(), Some(FailureReason::UnknownCa), "{err}");
    grows(
        HandshakeSide::Outbound,
        FailureReason::UnknownCa,
        out_before,
    )
    .await;
}

#[tokio::test]
async fn wrong_identity_counts_bad_identity() {
    let cp = Cp::start().await;
    let server = cp.workload("server").await;
    let client = cp.workload("client").await;
    let (addr, _errors) = serve(server, InboundMode::Strict).await;
    let before = count(HandshakeSide::Outbound, FailureReason::BadIdentity);
    let err = timeout(
        STEP,
        MeshConnector::new(client).connect(addr, &id("someone-else"), Alpn::MeshTcp),
    )
    .await
    .expect("connect hung")
    .expect_err("wrong identity accepted");
    assert_eq!(err.reason(), Some(FailureReason::BadIdentity), "{err}");
    grows(HandshakeSide::Outbound, FailureReason::BadIdentity, before).await;
}

#[tokio::test]
async fn plaintext_to_strict_port_counts_plaintext_and_metrics_text_is_valid() {
    let cp = Cp::start().await;
    let server = cp.workload("server").await;
    let (addr, _errors) = serve(server, InboundMode::Strict).await;
    let before = count(HandshakeSide::Inbound, FailureReason::Plaintext);
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"MESH-TCP 8080\nhello").await.unwrap();
    let mut buf = Vec::new();
    let read = timeout(STEP, raw.read_to_end(&mut buf)).await.unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "answered plaintext: {buf:?}"
    );
    grows(HandshakeSide::Inbound, FailureReason::Plaintext, before).await;

    let text = Metrics::new().encode();
    let series = r#"mesh_tls_handshake_failures_total{direction="inbound",reason="plaintext"}"#;
    let value: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing in:\n{text}"));
    assert!(value > before, "{series} = {value}, was {before}");
    promtool_check(&text);
}

/// `promtool check metrics` on the text; skipped with a printed reason without promtool.
fn promtool_check(text: &str) {
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
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
