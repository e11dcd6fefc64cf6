//! Lifecycle: graceful drain of an inbound sidecar, and config changes under live streams.

mod data_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use data_support::apps::http_app;
use data_support::*;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use mesh_proto::types::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn drain_lets_in_flight_requests_finish_and_stops_accepting() {
    let mut mesh = Mesh::new().await;
    // 300 ms per request so the drain starts while requests are in flight.
    let (app, stats) = http_app("a", Duration::from_millis(300)).await;
    let mut pod = mesh.pod_with_drain(app, "v1").await;
    mesh.set_endpoints("svc", &[&pod]);

    let mut in_flight = Vec::new();
    for _ in 0..5 {
        let mut tx = mesh.h1().await;
        in_flight.push(tokio::spawn(async move {
            send_h1(&mut tx, get("svc", "/slow").body(Full::default()).unwrap()).await
        }));
    }
    within(async {
        while stats.requests.load(Ordering::SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let drained = tokio::spawn(pod.trigger.take().unwrap().drain());
    for t in in_flight {
        let got = within(t).await.unwrap();
        assert_eq!(got.status, 200, "{}", got.body);
    }
    // Every connection finished, so the drain completes; the listener is closed.
    within(drained).await.unwrap();
    assert!(TcpStream::connect(pod.inbound).await.is_err());
}

#[tokio::test]
async fn websocket_and_grpc_stream_survive_route_and_endpoint_changes() {
    let mut mesh = Mesh::new().await;
    let (a1, _) = http_app("v1", Duration::ZERO).await;
    let (a2, _) = http_app("v2", Duration::ZERO).await;
    let p1 = mesh.pod(a1, "v1").await;
    let p2 = mesh.pod(a2, "v2").await;
    mesh.set_endpoints("svc", &[&p1]);

    // A live WebSocket.
    let mut ws = within(TcpStream::connect(mesh.outbound)).await.unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(within(ws.read(&mut b)).await.unwrap(), 1);
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));

    // A live gRPC-style stream.
    let mut h2 = mesh.h2().await;
    let (frames, rx) =
        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let req = Request::post("http://svc/echo")
        .header("te", "trailers")
        .body(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
    frames
        .send(Ok(Frame::data(Bytes::from_static(b"one"))))
        .await
        .unwrap();
    let mut body = within(h2.send_request(req)).await.unwrap().into_body();
    assert_eq!(
        within(body.frame())
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap(),
        "one"
    );

    // Config changes: a new route to v2 only and a new endpoint set.
    mesh.set_endpoints("svc", &[&p1, &p2]);
    mesh.set_route(&pb::Route {
        service: "svc".into(),
        rules: vec![pb::RouteRule {
            backends: vec![pb::WeightedBackend {
                service: "svc".into(),
                subset: "v2".into(),
                weight: 1,
            }],
            ..Default::default()
        }],
    });

    // Both streams still work.
    ws.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    within(ws.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"still here");
    frames
        .send(Ok(Frame::data(Bytes::from_static(b"two"))))
        .await
        .unwrap();
    assert_eq!(
        within(body.frame())
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap(),
        "two"
    );
    drop(frames);
    let trailers = within(body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "0");

    // New requests follow the new route.
    let mut tx = mesh.h1().await;
    let got = send_h1(&mut tx, get("svc", "/").body(Full::default()).unwrap()).await;
    assert_eq!(got.headers["x-app"], "v2");
}
