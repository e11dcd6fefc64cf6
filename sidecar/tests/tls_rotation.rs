//! Rotation under load: 20 s leaves renewed by the rotation task while connections are made continuously for ~60 s.

mod tls_common;

use std::collections::HashSet;
use std::time::Duration;

use mesh_sidecar::identity::{CertStore, Rotation};
use mesh_sidecar::tls::{Alpn, InboundMode, MeshConnector, TrustBundle};
use tls_common::{Cp, STEP, id, read_line, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

/// Leaf lifetime short enough for several rotations within the run.
const LEAF_TTL: Duration = Duration::from_secs(20);
/// Three leaf lifetimes: at least three renewals on each side.
const RUN: Duration = Duration::from_secs(60);
/// Upper bound on connections (one every ~20 ms for 60 s is ~3,000).
const MAX_CONNECTIONS: usize = 5000;

async fn rotating(cp: &Cp, sa: &str) -> std::sync::Arc<CertStore> {
    let store = CertStore::new(id(sa), TrustBundle::from_pem(&cp.bundle()).unwrap());
    tokio::spawn(
        Rotation {
            client: cp.client().await,
            token: cp.token(sa),
            store: store.clone(),
            ttl: Some(LEAF_TTL),
            keep: None,
            reconnect: None,
        }
        .run(),
    );
    timeout(STEP, store.ready())
        .await
        .expect("first certificate");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_never_fail_across_rotations() {
    let cp = Cp::start().await;
    let server = rotating(&cp, "server").await;
    let client = rotating(&cp, "client").await;
    let (addr, _errors) = serve(server.clone(), InboundMode::Strict).await;
    let connector = MeshConnector::new(client.clone());

    // A connection opened before any rotation must survive all of them.
    let mut long_lived = connector
        .connect(addr, &id("server"), Alpn::MeshTcp)
        .await
        .unwrap();
    assert!(read_line(&mut long_lived).await.contains("sa/client"));

    let start = Instant::now();
    let (mut ok, mut failures) = (0usize, Vec::new());
    let mut server_certs = HashSet::new();
    while start.elapsed() < RUN && ok + failures.len() < MAX_CONNECTIONS {
        let attempt = async {
            let mut tls = connector.connect(addr, &id("server"), Alpn::H2).await?;
            let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
            let line = read_line(&mut tls).await;
            tls.write_all(b"x").await?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await?;
            anyhow::ensure!(
                line.contains("sa/client") && &b == b"x",
                "bad exchange: {line}"
            );
            Ok::<_, anyhow::Error>(cert)
        };
        match timeout(STEP, attempt).await {
            Ok(Ok(cert)) => {
                ok += 1;
                server_certs.insert(cert);
            }
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push("timed out".to_owned()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "traffic flowed: {ok}");
    // Initial certificate plus at least two renewals on each side, all used by the server.
    assert!(
        server.generation() >= 3,
        "server rotations: {}",
        server.generation()
    );
    assert!(
        client.generation() >= 3,
        "client rotations: {}",
        client.generation()
    );
    assert!(
        server_certs.len() >= 3,
        "server certs seen: {}",
        server_certs.len()
    );

    long_lived.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    timeout(STEP, long_lived.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still here");
}
