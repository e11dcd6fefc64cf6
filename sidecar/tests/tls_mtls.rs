//! Mutual TLS over loopback with certificates from the real CA via the Identity service: handshake, identity checks, modes.

mod tls_common;

use std::time::{Duration, SystemTime};

use mesh_sidecar::identity::{CertStore, WorkloadKey};
use mesh_sidecar::tls::{Alpn, ConnectError, InboundMode, MeshConnector, TrustBundle};
use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair};
use tls_common::{Cp, STEP, id, read_line, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

async fn connect(
    client: &std::sync::Arc<CertStore>,
    addr: std::net::SocketAddr,
    expected: &str,
    alpn: Alpn,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    timeout(
        STEP,
        MeshConnector::new(client.clone()).connect(addr, &id(expected), alpn),
    )
    .await
    .expect("connect hung")
}

#[tokio::test]
async fn mutual_tls13_handshake_with_identities_both_ways() {
    let cp = Cp::start().await;
    let server = cp.workload("server").await;
    let client = cp.workload("client").await;
    let (addr, _errors) = serve(server, InboundMode::Strict).await;

    let mut tls = connect(&client, addr, "server", Alpn::H2).await.unwrap();
    let conn = tls.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    // The server learned the client's SPIFFE ID and the ALPN.
    assert_eq!(
        read_line(&mut tls).await,
        "mtls spiffe://cluster.local/ns/default/sa/client Some(H2)"
    );
    tls.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    timeout(STEP, tls.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");

    let mut tcp = connect(&client, addr, "server", Alpn::MeshTcp)
        .await
        .unwrap();
    assert_eq!(
        read_line(&mut tcp).await,
        "mtls spiffe://cluster.local/ns/default/sa/client Some(MeshTcp)"
    );
}

#[tokio::test]
async fn client_rejects_valid_mesh_cert_for_another_identity() {
    let cp = Cp::start().await;
    let impostor = cp.workload("other").await;
    let client = cp.workload("client").await;
    let (addr, _errors) = serve(impostor, InboundMode::Strict).await;
    let err = connect(&client, addr, "server", Alpn::H2)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Handshake { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("sa/other") && msg.contains("sa/server"),
        "{msg}"
    );
}

#[tokio::test]
async fn client_rejects_cert_from_foreign_ca() {
    let cp = Cp::start().await;
    let foreign = Cp::start().await;
    // Same identity name, but issued by another CA.
    let server = foreign.workload("server").await;
    let client = cp.workload("client").await;
    let (addr, _errors) = serve(server, InboundMode::Strict).await;
    let err = connect(&client, addr, "server", Alpn::H2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn server_rejects_client_from_foreign_ca() {
    let cp = Cp::start().await;
    let foreign = Cp::start().await;
    let server = cp.workload("server").await;
    // The foreign client trusts our root, so only the server's check can stop it.
    let client = foreign.workload("client").await;
    client.set_trust_bundle(TrustBundle::from_pem(&cp.bundle()).unwrap());
    let (addr, mut errors) = serve(server, InboundMode::Strict).await;
    let result = connect(&client, addr, "server", Alpn::H2).await;
    // TLS 1.3: the client may finish before the server's alert arrives; the first read fails.
    if let Ok(mut tls) = result {
        let mut b = [0u8; 1];
        let read = timeout(STEP, tls.read(&mut b)).await.unwrap();
        assert!(matches!(read, Err(_) | Ok(0)), "server must not talk to it");
    }
    let err = timeout(STEP, errors.recv()).await.unwrap().unwrap();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn client_rejects_expired_cert_from_our_ca() {
    let cp = Cp::start().await;
    let client = cp.workload("client").await;
    // Sign an already-expired leaf for "server" with the real CA key.
    let material = cp.storage_material();
    let issuer =
        Issuer::from_ca_cert_pem(&material.0, KeyPair::from_pem(&material.1).unwrap()).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr_der(&id("server")).unwrap();
    let mut req = CertificateSigningRequestParams::from_der(&csr.as_slice().into()).unwrap();
    let now = SystemTime::now();
    req.params.not_before = (now - Duration::from_secs(7200)).into();
    req.params.not_after = (now - Duration::from_secs(3600)).into();
    let leaf = req.signed_by(&issuer).unwrap();
    let server = CertStore::new(id("server"), TrustBundle::from_pem(&cp.bundle()).unwrap());
    server.set_credentials(key.credentials(&id("server"), &leaf.pem(), &[]).unwrap());

    let (addr, _errors) = serve(server, InboundMode::Strict).await;
    let err = connect(&client, addr, "server", Alpn::H2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn plaintext_to_strict_port_is_refused() {
    let cp = Cp::start().await;
    let server = cp.workload("server").await;
    let (addr, mut errors) = serve(server, InboundMode::Strict).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nsecret body")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = timeout(STEP, raw.read_to_end(&mut buf)).await.unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "closed without an answer: {buf:?}"
    );
    let err = timeout(STEP, errors.recv()).await.unwrap().unwrap();
    assert!(err.contains("plaintext connection refused"), "{err}");
}

#[tokio::test]
async fn permissive_port_takes_tls_and_plaintext_disabled_takes_plaintext() {
    let cp = Cp::start().await;
    let server = cp.workload("server").await;
    let client = cp.workload("client").await;
    let (addr, _e) = serve(server.clone(), InboundMode::Permissive).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"MESH-TCP 8080\n").await.unwrap();
    assert_eq!(read_line(&mut raw).await, "plain");
    let mut tls = connect(&client, addr, "server", Alpn::MeshTcp)
        .await
        .unwrap();
    assert!(read_line(&mut tls).await.starts_with("mtls spiffe://"));

    let (addr, _e) = serve(server, InboundMode::Disabled).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut raw).await, "plain");
}

#[tokio::test]
async fn root_rotation_needs_the_new_root_in_the_bundle() {
    let cp = Cp::start().await;
    let client = cp.workload("client").await;
    let old_bundle = client.trust_bundle().pem().to_vec();
    cp.ca.rotate_root().unwrap();
    // The server's new cert chains to the new root only.
    let server = cp.workload("server").await;
    let (addr, _e) = serve(server, InboundMode::Strict).await;
    client.set_trust_bundle(TrustBundle::from_pem(&old_bundle).unwrap());
    let err = connect(&client, addr, "server", Alpn::H2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // With old + new (the overlap), the client's old-root cert and the server's new-root cert
    // verify each other.
    client.set_trust_bundle(TrustBundle::from_pem(&cp.bundle()).unwrap());
    let mut tls = connect(&client, addr, "server", Alpn::H2).await.unwrap();
    assert!(read_line(&mut tls).await.contains("sa/client"));
}

trait Material {
    fn storage_material(&self) -> (String, String);
}

impl Material for Cp {
    /// The CA's signing cert and key PEM, straight from its storage.
    fn storage_material(&self) -> (String, String) {
        use mesh_control_plane::ca::CaStorage;
        let m = self.storage.load().unwrap().unwrap();
        (m.cert_pem, m.key_pem)
    }
}

#[tokio::test]
async fn wire_between_sidecars_carries_no_plaintext() {
    let cp = Cp::start().await;
    let server = cp.workload("server").await;
    let client = cp.workload("client").await;
    let (server_addr, _e) = serve(server, InboundMode::Strict).await;

    // A relay that records every byte in both directions.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut inbound, _) = relay.accept().await.unwrap();
        let mut outbound = TcpStream::connect(server_addr).await.unwrap();
        let (mut ir, mut iw) = inbound.split();
        let (mut or, mut ow) = outbound.split();
        let mut seen = Vec::new();
        let mut a = [0u8; 4096];
        let mut b = [0u8; 4096];
        loop {
            tokio::select! {
                n = ir.read(&mut a) => match n { Ok(n) if n > 0 => { seen.extend_from_slice(&a[..n]); if ow.write_all(&a[..n]).await.is_err() { break } } _ => break },
                n = or.read(&mut b) => match n { Ok(n) if n > 0 => { seen.extend_from_slice(&b[..n]); if iw.write_all(&b[..n]).await.is_err() { break } } _ => break },
            }
        }
        let _ = seen_tx.send(seen);
    });

    let mut tls = connect(&client, relay_addr, "server", Alpn::H2)
        .await
        .unwrap();
    assert!(read_line(&mut tls).await.contains("sa/client"));
    let request = b"POST /secret-path HTTP/1.1\r\nHost: svc\r\n\r\ntop-secret-body";
    tls.write_all(request).await.unwrap();
    let mut echoed = vec![0u8; request.len()];
    timeout(STEP, tls.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed[..], &request[..]);
    tls.shutdown().await.unwrap();
    drop(tls);

    let seen = timeout(STEP, seen_rx).await.unwrap().unwrap();
    assert!(seen.len() > request.len(), "traffic went through the relay");
    for needle in [
        &b"secret-path"[..],
        b"top-secret-body",
        b"HTTP/1.1",
        b"sa/client",
    ] {
        assert!(
            !seen.windows(needle.len()).any(|w| w == needle),
            "{:?} visible on the wire",
            String::from_utf8_lossy(needle)
        );
    }
}
