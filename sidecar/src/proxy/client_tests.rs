//! Tests of the upstream HTTP/1.1 pool against raw servers on loopback: reuse, `Connection:
//! close`, a server that closes after each response, a refused connect, a 101 upgrade.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Bounds every await that could hang; never a timing assertion.
const BOUND: Duration = Duration::from_secs(10);

/// How a test server treats a connection after each response.
#[derive(Clone, Copy)]
enum After {
    KeepAlive,
    Close,
}

/// A raw HTTP/1.1 server answering every bodiless request with `reply`; counts connections.
async fn server(reply: &'static [u8], after: After) -> (SocketAddr, Arc<AtomicUsize>) {
    let ln = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = ln.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = ln.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s, reply, after));
        }
    });
    (addr, accepted)
}

async fn serve(mut s: TcpStream, reply: &'static [u8], after: After) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if s.write_all(reply).await.is_err() {
                return;
            }
            if let After::Close = after {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn get() -> Request<ProxyBody> {
    Request::builder()
        .uri("/x")
        .header("host", "svc")
        .body(ProxyBody::empty())
        .expect("request")
}

fn authority(addr: SocketAddr) -> Authority {
    Authority::try_from(addr.to_string()).expect("authority")
}

/// One request through the HTTP/1.1 pool, its body read to the end.
async fn roundtrip(clients: &Clients, addr: SocketAddr) -> (StatusCode, bytes::Bytes) {
    let rsp = tokio::time::timeout(
        BOUND,
        clients.send(get(), addr, &authority(addr), false, None),
    )
    .await
    .expect("bounded")
    .expect("response");
    let status = rsp.status();
    let body = tokio::time::timeout(BOUND, rsp.into_body().collect())
        .await
        .expect("bounded")
        .expect("body")
        .to_bytes();
    (status, body)
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let (addr, accepted) = server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        After::KeepAlive,
    )
    .await;
    let clients = Clients::new(BOUND);
    for _ in 0..20 {
        assert_eq!(
            roundtrip(&clients, addr).await,
            (StatusCode::OK, bytes::Bytes::from_static(b"ok"))
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(clients.parked_h1(), 1);
}

#[tokio::test]
async fn connection_close_is_never_pooled() {
    let (addr, accepted) = server(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        After::Close,
    )
    .await;
    let clients = Clients::new(BOUND);
    for _ in 0..5 {
        assert_eq!(roundtrip(&clients, addr).await.0, StatusCode::OK);
        assert_eq!(clients.parked_h1(), 0);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_server_closing_after_each_response_fails_no_request() {
    // No `Connection: close`: the pool only learns of the close from the socket, possibly
    // while the connection is being checked out; every request must still be answered.
    let (addr, accepted) = server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        After::Close,
    )
    .await;
    let clients = Clients::new(BOUND);
    for _ in 0..20 {
        assert_eq!(roundtrip(&clients, addr).await.0, StatusCode::OK);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_refused_connect_is_connect_refused_and_leaves_the_request() {
    let addr = {
        let ln = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ln.local_addr().expect("addr")
    };
    let clients = Clients::new(BOUND);
    let err = tokio::time::timeout(BOUND, clients.connect_h1(addr))
        .await
        .expect("bounded")
        .expect_err("nothing listens");
    assert_eq!(err.0, Cause::ConnectRefused);
}

#[tokio::test]
async fn a_switched_connection_is_never_pooled_and_tunnels() {
    let ln = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = ln.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = ln.accept().await.expect("accept");
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .expect("write");
        // Echo whatever follows the switch.
        let n = s.read(&mut buf).await.expect("read");
        s.write_all(&buf[..n]).await.expect("echo");
    });
    let clients = Clients::new(BOUND);
    let req = Request::builder()
        .uri("/ws")
        .header("host", "svc")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(ProxyBody::empty())
        .expect("request");
    let mut rsp = tokio::time::timeout(
        BOUND,
        clients.send(req, addr, &authority(addr), false, None),
    )
    .await
    .expect("bounded")
    .expect("response");
    assert_eq!(rsp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(clients.parked_h1(), 0);
    let up = tokio::time::timeout(BOUND, hyper::upgrade::on(&mut rsp))
        .await
        .expect("bounded")
        .expect("upgraded");
    let mut io = TokioIo::new(up);
    io.write_all(b"ping").await.expect("write");
    let mut got = [0u8; 4];
    tokio::time::timeout(BOUND, io.read_exact(&mut got))
        .await
        .expect("bounded")
        .expect("read");
    assert_eq!(&got, b"ping");
}

/// A pooled HTTP/2 connection serves only requests expecting the peer identity it was opened
/// for: one dialled in plaintext is never reused for traffic that expects a verified peer.
#[tokio::test]
async fn an_h2_connection_is_reused_only_for_its_identity() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let clients = Clients::new(BOUND);
    let plain = tokio::time::timeout(BOUND, clients.connect_h2(addr, None))
        .await
        .unwrap();
    assert!(plain.is_ok());
    assert!(
        clients.pooled_h2(addr, None).is_some(),
        "plaintext reuses plaintext"
    );
    let id: crate::state::Name = "spiffe://cluster.local/ns/default/sa/api".into();
    assert!(
        clients.pooled_h2(addr, Some(&id)).is_none(),
        "a plaintext connection never serves traffic expecting a verified peer"
    );
}
