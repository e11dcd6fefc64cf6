//! Durability with the real binary: configuration written through the admin API survives
//! `kill -9` and a restart, with the same VIPs and the same resource versions.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use mesh_proto::admin::v1 as apb;
use mesh_proto::type_url::ROUTE;
use mesh_proto::types::v1 as pb;
use tokio::process::{Child, Command};

#[derive(serde::Deserialize)]
struct Addrs {
    discovery: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    http: std::net::SocketAddr,
}

async fn spawn(data: &Path, addrs_file: &Path) -> (Child, Addrs) {
    let _ = std::fs::remove_file(addrs_file);
    let child = Command::new(env!("CARGO_BIN_EXE_mesh-control-plane"))
        .arg("--data-dir")
        .arg(data)
        .args(["--discovery-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0"])
        .arg("--addrs-file")
        .arg(addrs_file)
        // The raw discovery client below speaks plaintext gRPC; TLS is covered by e2e_mtls.
        .arg("--discovery-tls=false")
        .arg("--allow-anonymous-proxies")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn control plane");
    // Bounded poll for the addrs file (written atomically after binding).
    for _ in 0..400 {
        if let Ok(bytes) = std::fs::read(addrs_file) {
            let addrs: Addrs = serde_json::from_slice(&bytes).expect("addrs json");
            return (child, addrs);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("control plane did not write {}", addrs_file.display());
}

fn weighted_route() -> pb::Route {
    pb::Route {
        service: "web".into(),
        rules: vec![pb::RouteRule {
            name: "split".into(),
            backends: vec![
                pb::WeightedBackend {
                    service: "api".into(),
                    subset: "v1".into(),
                    weight: 90,
                },
                pb::WeightedBackend {
                    service: "api".into(),
                    subset: "v2".into(),
                    weight: 10,
                },
            ],
            timeout_ms: 1500,
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn config_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addrs_file = dir.path().join("addrs.json");
    let (mut child, addrs) = spawn(&data, &addrs_file).await;
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let mut a = admin_at(addrs.admin, token.trim(), &bundle(&data)).await;

    for s in ["web", "api"] {
        within(
            "create",
            a.create_service(apb::CreateServiceRequest {
                service: s.into(),
                namespace: "default".into(),
                ports: vec![8080],
                identities: Vec::new(),
            }),
        )
        .await
        .unwrap();
    }
    let route_version = within(
        "route",
        a.set_route(apb::SetRouteRequest {
            route: Some(weighted_route()),
            dry_run: false,
            expected_version: String::new(),
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .version;
    within(
        "cluster",
        a.set_cluster_policy(apb::SetClusterPolicyRequest {
            cluster: Some(pb::Cluster {
                name: "api".into(),
                lb_policy: pb::LbPolicy::RoundRobin as i32,
                connect_timeout_ms: 250,
                ..Default::default()
            }),
            dry_run: false,
        }),
    )
    .await
    .unwrap();
    within(
        "authz",
        a.set_authorization_policy(apb::SetAuthorizationPolicyRequest {
            policy: Some(pb::AuthorizationPolicy {
                service: "api".into(),
                default_action: pb::AuthzAction::Deny as i32,
                allow: vec![pb::AuthzRule {
                    sources: vec!["spiffe://cluster.local/ns/shop/sa/web".into()],
                    ..Default::default()
                }],
            }),
            dry_run: false,
        }),
    )
    .await
    .unwrap();
    for addr in ["10.1.0.1:8080", "10.1.0.2:8080"] {
        within(
            "endpoint",
            a.register_endpoint(apb::RegisterEndpointRequest {
                service: "api".into(),
                endpoint: Some(pb::Endpoint {
                    address: addr.into(),
                    weight: 3,
                    labels: [("version".to_string(), "v1".to_string())].into(),
                    ..Default::default()
                }),
            }),
        )
        .await
        .unwrap();
    }
    within(
        "drain",
        a.drain_endpoint(apb::EndpointRef {
            service: "api".into(),
            address: "10.1.0.2:8080".into(),
        }),
    )
    .await
    .unwrap();
    let token_id = within(
        "token",
        a.create_token(apb::CreateTokenRequest {
            namespace: "shop".into(),
            service_account: "web".into(),
            ttl_secs: 0,
            services: Vec::new(),
            max_uses: 0,
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .id;
    within(
        "runtime",
        a.set_runtime(apb::SetRuntimeRequest {
            runtime: Some(pb::Runtime {
                trace_sampling_ratio: 0.25,
                access_log_ratio: 0.5,
                ..Default::default()
            }),
        }),
    )
    .await
    .unwrap();
    let services_before = a
        .list_services(apb::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    let endpoints_before = a
        .list_endpoints(apb::ServiceRef {
            service: "api".into(),
        })
        .await
        .unwrap()
        .into_inner();

    // kill -9: no shutdown path runs.
    child.start_kill().expect("SIGKILL");
    within("exit", child.wait()).await.unwrap();

    let (_child, addrs) = spawn(&data, &addrs_file).await;
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("addrs.json")).unwrap()).unwrap();
    assert_eq!(written["admin"], addrs.admin.to_string());
    // The URLs carry their scheme: admin over TLS (the default), discovery as configured.
    assert_eq!(written["admin_url"], format!("https://{}", addrs.admin));
    assert_eq!(
        written["discovery_url"],
        format!("http://{}", addrs.discovery)
    );
    let mut a = admin_at(addrs.admin, token.trim(), &bundle(&data)).await;

    let services = a
        .list_services(apb::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(services, services_before, "services and VIPs unchanged");
    let routes = a
        .list_routes(apb::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(routes.routes.len(), 1);
    assert_eq!(routes.routes[0].route, Some(weighted_route()));
    assert_eq!(routes.routes[0].version, route_version);
    let cluster = a
        .get_cluster_policy(apb::ServiceRef {
            service: "api".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap();
    assert_eq!(cluster.lb_policy, pb::LbPolicy::RoundRobin as i32);
    assert_eq!(cluster.connect_timeout_ms, 250);
    let authz = a
        .get_authorization_policy(apb::ServiceRef {
            service: "api".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(authz.default_action, pb::AuthzAction::Deny as i32);
    let endpoints = a
        .list_endpoints(apb::ServiceRef {
            service: "api".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(endpoints, endpoints_before);
    let drained = endpoints
        .endpoints
        .iter()
        .find(|e| e.endpoint.as_ref().unwrap().address == "10.1.0.2:8080")
        .unwrap();
    assert_eq!(
        drained.endpoint.as_ref().unwrap().state,
        pb::EndpointState::Draining as i32
    );
    let tokens = a
        .list_tokens(apb::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tokens.tokens.len(), 1);
    assert_eq!(tokens.tokens[0].id, token_id);
    let rt = a
        .get_runtime(apb::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rt.trace_sampling_ratio, rt.access_log_ratio), (0.25, 0.5));

    // The same content has the same version after the restart.
    let mut p = Proxy::connect(addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(ROUTE, &["web"]).await;
    let r = p.recv_ack().await;
    assert_eq!(version_of(&r, "web"), route_version);

    // Metrics and readiness are served on the HTTP port.
    let body = http_get(addrs.http, "/metrics").await;
    assert!(body.contains("mesh_cp_connected_proxies"), "{body}");
    assert!(http_get(addrs.http, "/ready").await.contains("200 OK"));
}

/// A minimal HTTP/1.1 GET over a real socket, returning the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = within("http connect", tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: cp\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    within("http read", s.read_to_string(&mut out))
        .await
        .unwrap();
    out
}
