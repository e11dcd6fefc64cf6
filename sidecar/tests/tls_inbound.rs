//! The sidecar's inbound listener under mTLS: ALPN `mesh-tcp` carries the preamble to the app, and a stream whose first bytes do not match its ALPN is closed before the app sees it.

mod tls_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mesh_sidecar::inbound::{self, InboundConfig, InboundCtx, MtlsTransport};
use mesh_sidecar::proxy;
use mesh_sidecar::state::StateHandle;
use mesh_sidecar::tls::{Alpn, MeshAcceptor, MeshConnector};
use tls_common::{Cp, STEP, id, read_line};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

/// A server-first app: greets each connection with `HELLO\n`, then echoes. Counts connections.
async fn greeting_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if sock.write_all(b"HELLO\n").await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// The inbound listener of a sidecar holding `server`'s certificate (strict: no Listener yet).
async fn inbound_for(cp: &Cp, app_port: u16) -> (proxy::drain::DrainTrigger, SocketAddr) {
    let store = cp.workload("server").await;
    let state = StateHandle::default();
    let ctx = InboundCtx::new(
        state.clone(),
        InboundConfig {
            app_ports: vec![app_port],
            ..Default::default()
        },
    );
    let transport = MtlsTransport::new(MeshAcceptor::new(store), state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, drain) = proxy::drain::channel();
    tokio::spawn(inbound::serve(listener, ctx, Arc::new(transport), drain));
    (trigger, addr)
}

/// Sends `first` on a fresh mTLS stream with `alpn` and returns what comes back before close.
async fn exchange(
    connector: &MeshConnector,
    addr: SocketAddr,
    alpn: Alpn,
    first: &[u8],
) -> Vec<u8> {
    let mut tls = timeout(STEP, connector.connect(addr, &id("server"), alpn))
        .await
        .expect("connect hung")
        .expect("handshake");
    tls.write_all(first).await.unwrap();
    let mut got = Vec::new();
    // Closed by the sidecar: read_to_end ends; an RST is an error and counts as closed too.
    let _ = timeout(STEP, tls.read_to_end(&mut got))
        .await
        .expect("close hung");
    got
}

#[tokio::test]
async fn mesh_tcp_alpn_carries_the_preamble_to_a_server_first_app() {
    let cp = Cp::start().await;
    let (app, _) = greeting_app().await;
    let (_drain, addr) = inbound_for(&cp, app.port()).await;
    let connector = MeshConnector::new(cp.workload("client").await);

    let mut tls = timeout(STEP, connector.connect(addr, &id("server"), Alpn::MeshTcp))
        .await
        .expect("connect hung")
        .expect("handshake");
    tls.write_all(format!("MESH-TCP {}\n", app.port()).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_line(&mut tls).await, "HELLO");
    tls.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_line(&mut tls).await, "ping");
}

#[tokio::test]
async fn first_bytes_must_match_the_alpn() {
    let cp = Cp::start().await;
    let (app, accepted) = greeting_app().await;
    let (_drain, addr) = inbound_for(&cp, app.port()).await;
    let connector = MeshConnector::new(cp.workload("client").await);
    let preamble = format!("MESH-TCP {}\n", app.port());

    // A preamble on an `h2` stream, and HTTP/1 on a `mesh-tcp` stream: both closed unanswered.
    let got = exchange(&connector, addr, Alpn::H2, preamble.as_bytes()).await;
    assert!(
        got.is_empty(),
        "h2 stream with a preamble answered: {got:?}"
    );
    let http = b"GET / HTTP/1.1\r\nhost: server\r\n\r\n";
    let got = exchange(&connector, addr, Alpn::MeshTcp, http).await;
    assert!(
        got.is_empty(),
        "mesh-tcp stream with HTTP answered: {got:?}"
    );
    assert_eq!(accepted.load(Ordering::Relaxed), 0, "the app was reached");
}
