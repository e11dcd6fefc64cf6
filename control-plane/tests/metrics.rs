//! `/metrics` and `/ready` over a real socket: connected proxies, pushes, NACKs, change→ACK
//! latency and store operations are counted.

mod common;

use common::*;
use mesh_proto::admin::v1 as apb;
use mesh_proto::type_url::ROUTE;
use mesh_proto::types::v1 as pb;

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: cp\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    within("read", s.read_to_string(&mut out)).await.unwrap();
    out
}

fn line<'a>(body: &'a str, prefix: &str) -> &'a str {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
}

#[tokio::test]
async fn metrics_count_proxies_pushes_nacks_and_store_ops() {
    let cp = start().await;
    let http = cp.handle.addrs.http;
    assert!(http_get(http, "/ready").await.starts_with("HTTP/1.1 200"));
    let mut a = admin(&cp).await;
    a.create_service(apb::CreateServiceRequest {
        service: "api".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut route = pb::Route {
        service: "api".into(),
        rules: vec![pb::RouteRule {
            backends: vec![pb::WeightedBackend {
                service: "api".into(),
                subset: String::new(),
                weight: 100,
            }],
            ..Default::default()
        }],
    };
    a.set_route(apb::SetRouteRequest {
        route: Some(route.clone()),
        dry_run: false,
        expected_version: String::new(),
    })
    .await
    .unwrap();
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(ROUTE, &["api"]).await;
    p.recv_ack().await;
    route.rules[0].timeout_ms = 10;
    a.set_route(apb::SetRouteRequest {
        route: Some(route),
        dry_run: false,
        expected_version: String::new(),
    })
    .await
    .unwrap();
    let r = p.recv().await;
    p.nack(&r, "no").await;

    // Bounded poll until the NACK has been processed.
    let mut body = String::new();
    for _ in 0..200 {
        body = http_get(http, "/metrics").await;
        if body.contains("mesh_cp_nacks_total{type_url=\"mesh.types.v1.Route\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        line(&body, "mesh_cp_connected_proxies "),
        "mesh_cp_connected_proxies 1"
    );
    assert_eq!(
        line(
            &body,
            "mesh_cp_pushes_total{type_url=\"mesh.types.v1.Route\"}"
        ),
        "mesh_cp_pushes_total{type_url=\"mesh.types.v1.Route\"} 2"
    );
    assert_eq!(
        line(
            &body,
            "mesh_cp_nacks_total{type_url=\"mesh.types.v1.Route\"}"
        ),
        "mesh_cp_nacks_total{type_url=\"mesh.types.v1.Route\"} 1"
    );
    assert_eq!(
        line(&body, "mesh_cp_push_duration_seconds_count"),
        "mesh_cp_push_duration_seconds_count 1"
    );
    assert!(body.contains("mesh_cp_store_ops_total{op=\"put_route\",result=\"ok\"} 2"));
}
