//! A cluster's connection settings on the data path, over real sockets: the idle timeout of
//! pooled upstream connections, and the HTTP version its `protocol` gives the app.

mod data_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use data_support::apps::http_app;
use data_support::*;
use http::Request;
use http_body_util::Full;
use mesh_proto::types::v1 as pb;
use mesh_sidecar::state::{Cluster, Endpoint, EndpointState, Endpoints, Name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// `svc`'s cluster from the proto, as the control plane would send it.
fn cluster(edit: impl FnOnce(&mut pb::Cluster)) -> Cluster {
    let mut c = pb::Cluster {
        name: "svc".into(),
        ..Default::default()
    };
    edit(&mut c);
    Cluster::try_from(&c).expect("valid cluster")
}

/// `svc` served by `app` directly: an endpoint no sidecar fronts.
fn unmeshed(mesh: &Mesh, app: SocketAddr) {
    let eps = Endpoints {
        service: "svc".into(),
        endpoints: vec![Endpoint {
            addr: app,
            app_port: 0,
            weight: 1,
            zone: None,
            labels: vec![],
            state: EndpointState::Healthy,
            identity: None,
            source: Name::from("static"),
        }],
    };
    mesh.state.update(|s| {
        s.endpoints.insert("svc".into(), Arc::new(eps));
    });
}

/// A keep-alive HTTP/1.1 app that counts its connections and reports each one the peer
/// closes on `closed`.
async fn keep_alive_app() -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, closed) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_until_closed(s, tx.clone()));
        }
    });
    (addr, accepted, closed)
}

async fn serve_until_closed(mut s: TcpStream, closed: mpsc::UnboundedSender<()>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if s.write_all(ok).await.is_err() {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = closed.send(());
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn a_cluster_idle_timeout_closes_its_pooled_connections() {
    let mesh = Mesh::new().await;
    let (app, accepted, mut closed) = keep_alive_app().await;
    unmeshed(&mesh, app);
    // 1 s, a ninetieth of the 90 s default: the close below comes from the cluster's setting.
    mesh.set_cluster(cluster(|c| c.idle_timeout_ms = 1_000));
    let mut tx = mesh.h1().await;
    for _ in 0..2 {
        let got = send_h1(&mut tx, get("svc", "/").body(Full::default()).unwrap()).await;
        assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "ok"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "pooled and reused");

    // Bounded by the harness's 20 s, far below the default idle timeout.
    within(closed.recv())
        .await
        .expect("the sidecar closed the idle connection");
    let got = send_h1(&mut tx, get("svc", "/").body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a fresh connection after the close"
    );
}

#[tokio::test]
async fn a_cluster_protocol_sets_the_http_version_the_app_gets() {
    let mut mesh = Mesh::new().await;
    let (app, _) = http_app("app", std::time::Duration::ZERO).await;

    // An unmeshed endpoint: HTTP/2 (prior knowledge) for an HTTP/1.1 client.
    unmeshed(&mesh, app);
    mesh.set_cluster(cluster(|c| c.protocol = pb::Protocol::Http2 as i32));
    let mut tx = mesh.h1().await;
    let got = send_h1(&mut tx, get("svc", "/u").body(Full::default()).unwrap()).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.ends_with("HTTP/2.0"), "{}", got.body);

    // Behind a peer sidecar: the peer restores the version the cluster names.
    let pod = mesh.pod(app, "v1").await;
    mesh.set_endpoints("svc", &[&pod]);
    mesh.set_cluster(cluster(|c| c.protocol = pb::Protocol::Grpc as i32));
    let got = send_h1(&mut tx, get("svc", "/m").body(Full::default()).unwrap()).await;
    assert!(got.body.ends_with("HTTP/2.0"), "{}", got.body);

    // HTTP1: an HTTP/2 client's request reaches the app as HTTP/1.1.
    mesh.set_cluster(cluster(|c| c.protocol = pb::Protocol::Http1 as i32));
    let mut h2 = mesh.h2::<Full<Bytes>>().await;
    let req = Request::get("http://svc/h").body(Full::default()).unwrap();
    let got = collect(within(h2.send_request(req)).await.unwrap()).await;
    assert_eq!(got.body, "app GET /h HTTP/1.1");

    // Unset: the client's own version, as before.
    mesh.set_cluster(cluster(|_| {}));
    let got = send_h1(&mut tx, get("svc", "/d").body(Full::default()).unwrap()).await;
    assert_eq!(got.body, "app GET /d HTTP/1.1");
}
