//! Data path end to end (client sidecar → server sidecar → app) for each protocol.

mod data_support;

use std::time::Duration;

use bytes::Bytes;
use data_support::apps::{http_app, server_first, tcp_echo};
use data_support::*;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use mesh_sidecar::outbound;
use mesh_sidecar::proxy;
use mesh_sidecar::state::Listener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn one_pod(name: &'static str) -> (Mesh, Pod) {
    let mut mesh = Mesh::new().await;
    let (app, _) = http_app(name, Duration::ZERO).await;
    let pod = mesh.pod(app, "v1").await;
    mesh.set_endpoints("svc", &[&pod]);
    (mesh, pod)
}

#[tokio::test]
async fn http1_through_both_sidecars_is_restored_to_http1() {
    let (mesh, _pod) = one_pod("a").await;
    let mut tx = mesh.h1().await;
    for _ in 0..3 {
        let got = send_h1(
            &mut tx,
            get("svc", "/hello?x=1").body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.body);
        // The app saw HTTP/1.1 although the sidecars spoke HTTP/2 between themselves.
        assert_eq!(got.body, "a GET /hello?x=1 HTTP/1.1");
        assert_eq!(got.headers["echo-host"], "svc");
        assert!(got.headers.contains_key("echo-x-request-id"));
        assert_eq!(got.headers["echo-x-forwarded-for"], "127.0.0.1");
        assert!(!got.headers.contains_key("echo-x-mesh-app-port"));
    }
}

#[tokio::test]
async fn absolute_form_proxy_request() {
    let (mesh, _pod) = one_pod("a").await;
    let mut tx = mesh.h1().await;
    let req = Request::get("http://svc.default.svc.cluster.local:8080/p")
        .body(Full::default())
        .unwrap();
    let got = send_h1(&mut tx, req).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.starts_with("a GET /p"), "{}", got.body);
}

#[tokio::test]
async fn http2_prior_knowledge_stays_http2() {
    let (mesh, _pod) = one_pod("a").await;
    let mut tx = mesh.h2().await;
    let req = Request::get("http://svc/h2").body(Full::default()).unwrap();
    let got = collect(within(tx.send_request(req)).await.unwrap()).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, "a GET http://svc/h2 HTTP/2.0");
}

#[tokio::test]
async fn grpc_like_bidi_stream_with_trailers() {
    let (mesh, _pod) = one_pod("a").await;
    let mut h2 = mesh.h2().await;
    let (frames_tx, frames_rx) =
        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(frames_rx));
    let req = Request::post("http://svc/echo")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let rsp = within(async {
        frames_tx
            .send(Ok(Frame::data(Bytes::from_static(b"ping-1"))))
            .await
            .unwrap();
        h2.send_request(req).await.unwrap()
    })
    .await;
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();
    // Bidirectional: each message comes back before the next is sent.
    let first = within(body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, "ping-1");
    frames_tx
        .send(Ok(Frame::data(Bytes::from_static(b"ping-2"))))
        .await
        .unwrap();
    let second = within(body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(second, "ping-2");
    drop(frames_tx);
    let trailers = within(body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-trailer"], "yes");
}

#[tokio::test]
async fn http1_chunked_upload_streams_through() {
    let (mesh, _pod) = one_pod("a").await;
    // 4 MiB in 64 KiB chunks: streamed, never buffered whole.
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..64)
        .map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024]))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post("/echo")
        .header("host", "svc")
        .body(body)
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(within(TcpStream::connect(mesh.outbound)).await.unwrap());
    let (mut tx, conn) = within(hyper::client::conn::http1::handshake(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let rsp = within(tx.send_request(req)).await.unwrap();
    let got = collect(rsp).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 4 * 1024 * 1024);
}

#[tokio::test]
async fn websocket_upgrade_tunnels_both_ways() {
    let (mesh, _pod) = one_pod("a").await;
    let mut s = within(TcpStream::connect(mesh.outbound)).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [&b"hello"[..], b"world"] {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        within(s.read_exact(&mut buf)).await.unwrap();
        assert_eq!(buf, msg);
    }
}

#[tokio::test]
async fn connect_tunnel_to_tcp_service() {
    let mut mesh = Mesh::new().await;
    let echo = tcp_echo().await;
    let pod = mesh.pod(echo, "v1").await;
    mesh.set_endpoints("echo", &[&pod]);
    let mut s = within(TcpStream::connect(mesh.outbound)).await.unwrap();
    s.write_all(b"CONNECT echo:7 HTTP/1.1\r\nHost: echo:7\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"through the tunnel").await.unwrap();
    let mut buf = [0u8; 18];
    within(s.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"through the tunnel");
}

#[tokio::test]
async fn opaque_tcp_echo_on_fixed_port() {
    let mut mesh = Mesh::new().await;
    let echo = tcp_echo().await;
    let pod = mesh.pod(echo, "v1").await;
    mesh.set_endpoints("echo", &[&pod]);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_trigger, drain) = proxy::drain::channel();
    tokio::spawn(outbound::serve_fixed(
        l,
        mesh.ctx.clone(),
        "echo".into(),
        7,
        drain,
    ));
    let mut s = within(TcpStream::connect(addr)).await.unwrap();
    // Binary data that no detector could take for HTTP.
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(&payload).await.unwrap();
    };
    let read = async {
        let mut got = vec![0u8; payload.len()];
        r.read_exact(&mut got).await.unwrap();
        got
    };
    let ((), got) = within(async { tokio::join!(write, read) }).await;
    assert_eq!(got, payload);
}

#[tokio::test]
async fn server_first_protocol_is_not_stalled_by_detection() {
    let mut mesh = Mesh::new().await;
    // Detection would wait a minute: the greeting arriving within the test's bound shows the
    // path never waits for client bytes.
    mesh.state.update(|s| {
        s.listener = Some(std::sync::Arc::new(Listener {
            name: "test".into(),
            app_ports: vec![],
            opaque_ports: vec![],
            server_first_ports: vec![],
            detect_timeout: Some(Duration::from_secs(60)),
            tls_mode: Default::default(),
            max_connections: None,
        }))
    });
    let smtp = server_first().await;
    let pod = mesh.pod(smtp, "v1").await;
    mesh.set_endpoints("smtp", &[&pod]);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_trigger, drain) = proxy::drain::channel();
    tokio::spawn(outbound::serve_fixed(
        l,
        mesh.ctx.clone(),
        "smtp".into(),
        25,
        drain,
    ));
    let mut s = within(TcpStream::connect(addr)).await.unwrap();
    let mut greeting = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut greeting))
        .await
        .expect("greeting must not wait for detection")
        .unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");
}

#[tokio::test]
async fn unknown_service_gets_no_route_from_the_proxy() {
    let cfg = outbound::OutboundConfig {
        discovery_wait: Duration::from_millis(100),
        ..Default::default()
    };
    let mesh = Mesh::with_config(cfg).await;
    let mut tx = mesh.h1().await;
    let got = send_h1(&mut tx, get("nowhere", "/").body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.headers[proxy::MESH_ERROR], "no-route");
    // The request registered an on-demand want for the discovery client.
    assert!(mesh.state.wanted().borrow().contains("nowhere"));
}

#[tokio::test]
async fn explicit_request_to_an_ip_literal_passes_through_and_a_loop_is_refused() {
    let mesh = Mesh::new().await;
    let (app, stats) = http_app("outside", Duration::ZERO).await;
    let mut tx = mesh.h1().await;
    // Absolute-form to a host the app names by address, as an HTTP_PROXY client sends it.
    let req = Request::get(format!("http://{app}/direct"))
        .body(Full::default())
        .unwrap();
    let got = send_h1(&mut tx, req).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, "outside GET /direct HTTP/1.1");
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The proxy's own address: one hop comes back carrying the proxy's Via entry and is
    // refused there, instead of looping.
    let req = Request::get(format!("http://{}/loop", mesh.outbound))
        .body(Full::default())
        .unwrap();
    let got = send_h1(&mut tx, req).await;
    assert_eq!(got.status, 404, "{}", got.body);
    assert_eq!(got.headers[proxy::MESH_ERROR], "no-route");
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within(s.read(&mut b)).await.unwrap();
        assert_eq!(
            n,
            1,
            "closed before end of head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn inbound_serves_unmeshed_clients_in_their_own_protocol() {
    let (_mesh, pod) = one_pod("a").await;
    // HTTP/1.1 straight to the inbound listener: no mesh headers, the first app port.
    let mut tx = h1_conn(pod.inbound).await;
    let got = send_h1(&mut tx, get("a", "/direct").body(Full::default()).unwrap()).await;
    assert_eq!(got.body, "a GET /direct HTTP/1.1");
    // HTTP/2 prior knowledge straight to it: the app gets HTTP/2.
    let mut h2 = h2_conn(pod.inbound).await;
    let req = Request::get("http://a/direct2")
        .body(Full::<Bytes>::default())
        .unwrap();
    let got = collect(within(h2.send_request(req)).await.unwrap()).await;
    assert_eq!(got.body, "a GET http://a/direct2 HTTP/2.0");
}

#[tokio::test]
async fn inbound_passes_tls_through_to_the_app() {
    let mut mesh = Mesh::new().await;
    let echo = tcp_echo().await;
    let pod = mesh.pod(echo, "v1").await;
    let mut s = within(TcpStream::connect(pod.inbound)).await.unwrap();
    // The start of a TLS ClientHello: handshake record, TLS 1.0 record version, type 1.
    let hello = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0xaa, 0xbb, 0xcc, 0xdd];
    s.write_all(&hello).await.unwrap();
    let mut got = [0u8; 10];
    within(s.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, hello);
}

#[tokio::test]
async fn inbound_refuses_port_hints_outside_the_app_ports() {
    let (_mesh, pod) = one_pod("a").await;
    // Another loopback service of the pod (stands in for the sidecar's admin port).
    let (other, _) = http_app("other", Duration::ZERO).await;
    let mut tx = h1_conn(pod.inbound).await;
    let req = get("a", "/")
        .header("x-mesh-app-port", other.port().to_string())
        .body(Full::default())
        .unwrap();
    let got = send_h1(&mut tx, req).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.headers[proxy::MESH_ERROR], "no-route");
    // The same via the TCP preamble: the connection is closed without reaching it.
    let mut s = within(TcpStream::connect(pod.inbound)).await.unwrap();
    s.write_all(
        format!(
            "MESH-TCP {}\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            other.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = within(s.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}
