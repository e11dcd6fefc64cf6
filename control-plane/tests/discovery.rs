//! Discovery protocol over real sockets: subscribe/ACK/NACK, stale nonces, unsubscribe,
//! removal notifications, reconnect with initial versions, on-demand delivery, push order,
//! coalescing, drain and leases.

mod common;

use std::time::Duration;

use common::*;
use mesh_proto::admin::v1 as apb;
use mesh_proto::discovery::v1::DeltaDiscoveryRequest;
use mesh_proto::type_url::{CLUSTER, ENDPOINTS, LISTENER, ROUTE};
use mesh_proto::types::v1 as pb;

fn route(service: &str, backend: &str, timeout_ms: u64) -> pb::Route {
    pb::Route {
        service: service.into(),
        rules: vec![pb::RouteRule {
            name: "all".into(),
            backends: vec![pb::WeightedBackend {
                service: backend.into(),
                subset: String::new(),
                weight: 100,
            }],
            timeout_ms,
            ..Default::default()
        }],
    }
}

async fn set_route(a: &mut Admin, r: pb::Route) -> String {
    within(
        "set route",
        a.set_route(apb::SetRouteRequest {
            route: Some(r),
            dry_run: false,
            expected_version: String::new(),
        }),
    )
    .await
    .expect("route accepted")
    .into_inner()
    .version
}

async fn create_service(a: &mut Admin, name: &str) {
    within(
        "create service",
        a.create_service(apb::CreateServiceRequest {
            service: name.into(),
            namespace: "default".into(),
            ports: vec![80],
            identities: Vec::new(),
        }),
    )
    .await
    .expect("service created");
}

async fn register(a: &mut Admin, service: &str, addr: &str) {
    within(
        "register endpoint",
        a.register_endpoint(apb::RegisterEndpointRequest {
            service: service.into(),
            endpoint: Some(pb::Endpoint {
                address: addr.into(),
                ..Default::default()
            }),
        }),
    )
    .await
    .expect("endpoint registered");
}

/// The status of one type of one proxy, polled until `ok` holds (bounded).
async fn proxy_status(
    a: &mut Admin,
    id: &str,
    type_url: &str,
    ok: impl Fn(&apb::ResourceTypeStatus) -> bool,
) -> apb::ResourceTypeStatus {
    for _ in 0..200 {
        let list = within("list proxies", a.list_proxies(apb::ListRequest {}))
            .await
            .expect("list proxies")
            .into_inner();
        if let Some(s) = list
            .proxies
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.resources.iter().find(|r| r.type_url == type_url))
            && ok(s)
        {
            return s.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proxy {id} never reached the expected {type_url} status");
}

#[tokio::test]
async fn first_request_without_node_is_refused() {
    let cp = start().await;
    let err = Proxy::connect_with(
        cp.handle.addrs.discovery,
        DeltaDiscoveryRequest {
            type_url: ROUTE.into(),
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn subscribe_receive_ack_then_nack_is_recorded_and_listed() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    create_service(&mut a, "reviews").await;
    let v1 = set_route(&mut a, route("reviews", "reviews", 1000)).await;

    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(ROUTE, &["reviews"]).await;
    let r = p.recv_ack().await;
    assert_eq!(r.type_url, ROUTE);
    assert_eq!(names(&r), vec!["reviews"]);
    assert_eq!(version_of(&r, "reviews"), v1);
    let s = proxy_status(&mut a, "p1", ROUTE, |s| {
        s.acked_versions.get("reviews") == Some(&v1)
    })
    .await;
    assert_eq!(s.nack_count, 0);

    // A new version the proxy rejects: recorded with its error; the ACKed version stays.
    let v2 = set_route(&mut a, route("reviews", "reviews", 2000)).await;
    let r = p.recv().await;
    assert_eq!(version_of(&r, "reviews"), v2);
    p.nack(&r, "route.rules[0]: unsupported thing").await;
    let s = proxy_status(&mut a, "p1", ROUTE, |s| s.nack_count == 1).await;
    assert_eq!(s.last_nack_error, "route.rules[0]: unsupported thing");
    assert!(s.last_nack_unix_ms > 0);
    assert_eq!(s.acked_versions.get("reviews"), Some(&v1));
    assert_eq!(s.sent_versions.get("reviews"), Some(&v2));
    assert_eq!(s.subscribed, vec!["reviews".to_string()]);
}

#[tokio::test]
async fn stale_nonce_is_ignored() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    create_service(&mut a, "reviews").await;
    set_route(&mut a, route("reviews", "reviews", 1000)).await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(ROUTE, &["reviews"]).await;
    p.recv_ack().await;

    set_route(&mut a, route("reviews", "reviews", 2000)).await;
    let older = p.recv().await;
    let v3 = set_route(&mut a, route("reviews", "reviews", 3000)).await;
    let latest = p.recv().await;
    assert_eq!(version_of(&latest, "reviews"), v3);
    // A NACK of the older response is stale: ignored. The ACK of the latest counts.
    p.nack(&older, "stale complaint").await;
    p.ack(&latest).await;
    let s = proxy_status(&mut a, "p1", ROUTE, |s| {
        s.acked_versions.get("reviews") == Some(&v3)
    })
    .await;
    assert_eq!(s.nack_count, 0);
    assert_eq!(s.last_nack_error, "");
}

#[tokio::test]
async fn unsubscribe_stops_updates_and_unknown_names_are_removed() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    create_service(&mut a, "a").await;
    create_service(&mut a, "b").await;
    set_route(&mut a, route("a", "a", 0)).await;
    set_route(&mut a, route("b", "b", 0)).await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(ROUTE, &["a", "b", "nope"]).await;
    let r = p.recv_ack().await;
    assert_eq!(names(&r), vec!["a", "b"]);
    assert_eq!(r.removed_resources, vec!["nope"]);

    p.unsubscribe(ROUTE, &["b"]).await;
    set_route(&mut a, route("b", "b", 500)).await;
    set_route(&mut a, route("a", "a", 500)).await;
    // The change to b is not sent: the next response is a's.
    let r = p.recv_ack().await;
    assert_eq!(names(&r), vec!["a"]);
    assert!(r.removed_resources.is_empty());
}

#[tokio::test]
async fn deleting_a_service_sends_removals() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    create_service(&mut a, "gone").await;
    set_route(&mut a, route("gone", "gone", 0)).await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(CLUSTER, &["gone"]).await;
    assert_eq!(names(&p.recv_ack().await), vec!["gone"]);
    p.subscribe(ROUTE, &["gone"]).await;
    assert_eq!(names(&p.recv_ack().await), vec!["gone"]);

    within(
        "delete",
        a.delete_service(apb::ServiceRef {
            service: "gone".into(),
        }),
    )
    .await
    .expect("deleted");
    // Make-before-break order holds for removals too: Cluster, then Route.
    let r = p.recv_ack().await;
    assert_eq!(
        (r.type_url.as_str(), r.removed_resources.clone()),
        (CLUSTER, vec!["gone".to_string()])
    );
    let r = p.recv_ack().await;
    assert_eq!(
        (r.type_url.as_str(), r.removed_resources.clone()),
        (ROUTE, vec!["gone".to_string()])
    );
}

#[tokio::test]
async fn reconnect_with_initial_versions_gets_only_what_changed() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    create_service(&mut a, "a").await;
    create_service(&mut a, "b").await;
    set_route(&mut a, route("a", "b", 0)).await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(CLUSTER, &["a", "b"]).await;
    let clusters = p.recv_ack().await;
    p.subscribe(ROUTE, &["a"]).await;
    let routes = p.recv_ack().await;
    drop(p);

    let new_route = set_route(&mut a, route("a", "b", 750)).await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    let initial = |r: &mesh_proto::discovery::v1::DeltaDiscoveryResponse| {
        r.resources
            .iter()
            .map(|x| (x.name.clone(), x.version.clone()))
            .collect()
    };
    p.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        initial_resource_versions: initial(&clusters),
        ..Default::default()
    })
    .await;
    p.send(DeltaDiscoveryRequest {
        type_url: ROUTE.into(),
        initial_resource_versions: initial(&routes),
        ..Default::default()
    })
    .await;
    // Requests are answered in order: had the clusters differed, that answer would come first.
    let r = p.recv_ack().await;
    assert_eq!(r.type_url, ROUTE);
    assert_eq!(names(&r), vec!["a"]);
    assert_eq!(version_of(&r, "a"), new_route);
}

#[tokio::test]
async fn a_subscriber_of_a_gets_nothing_when_b_changes() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    create_service(&mut a, "a").await;
    create_service(&mut a, "b").await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(ENDPOINTS, &["a"]).await;
    p.recv_ack().await;
    p.subscribe(ROUTE, &["a"]).await;
    p.recv_ack().await; // removed: no route yet

    set_route(&mut a, route("b", "b", 0)).await;
    register(&mut a, "b", "10.1.0.1:8080").await;
    within(
        "policy b",
        a.set_cluster_policy(apb::SetClusterPolicyRequest {
            cluster: Some(pb::Cluster {
                name: "b".into(),
                connect_timeout_ms: 900,
                ..Default::default()
            }),
            dry_run: false,
        }),
    )
    .await
    .expect("policy accepted");
    register(&mut a, "a", "10.2.0.1:8080").await;
    // Only the change to a arrives.
    let r = p.recv_ack().await;
    assert_eq!(r.type_url, ENDPOINTS);
    assert_eq!(names(&r), vec!["a"]);
}

#[tokio::test]
async fn pushes_are_ordered_make_before_break() {
    let cp = start().await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    // Subscribed before the service exists: both answered as removed.
    p.subscribe(ENDPOINTS, &["late"]).await;
    assert_eq!(p.recv_ack().await.removed_resources, vec!["late"]);
    p.subscribe(CLUSTER, &["late"]).await;
    assert_eq!(p.recv_ack().await.removed_resources, vec!["late"]);

    // A proxy of "late" connects: its Cluster and Endpoints appear in one publish and are
    // pushed cluster first.
    let _p2 = Proxy::connect(cp.handle.addrs.discovery, node("p2", "late", "10.0.0.2")).await;
    let first = p.recv_ack().await;
    let second = p.recv_ack().await;
    assert_eq!(
        (first.type_url.as_str(), second.type_url.as_str()),
        (CLUSTER, ENDPOINTS)
    );
    let cluster = match &first.resources[0].kind {
        Some(pb::resource::Kind::Cluster(c)) => c.clone(),
        other => panic!("not a cluster: {other:?}"),
    };
    assert!(cluster.vip.starts_with("240.240."), "vip {}", cluster.vip);
    assert_eq!(cluster.ports, vec![8080]);
}

#[tokio::test]
async fn burst_of_1000_endpoint_changes_is_coalesced() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    create_service(&mut a, "big").await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(ENDPOINTS, &["big"]).await;
    p.recv_ack().await;

    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    // 16 concurrent writers: a burst, as from a rollout, not a polite sequence.
    for w in 0..16u32 {
        let mut a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..1000).step_by(16) {
                register(
                    &mut a,
                    "big",
                    &format!("10.9.{}.{}:8080", i / 250, i % 250 + 1),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        within("burst", t).await.expect("writer");
    }
    let burst = started.elapsed();

    let mut pushes = 0u32;
    loop {
        let r = p.recv_ack().await;
        pushes += 1;
        let Some(pb::resource::Kind::Endpoints(e)) = &r.resources[0].kind else {
            panic!("not endpoints");
        };
        if e.endpoints.len() == 1000 {
            break;
        }
    }
    // At most one publish per coalescing window (50 ms) while the burst lasted, plus the
    // window it ended in: far fewer than one push per change.
    let bound = (burst.as_millis() / 50) as u32 + 2;
    println!("1000 changes in {burst:?} -> {pushes} pushes (bound {bound})");
    assert!(pushes <= bound, "{pushes} pushes for a {burst:?} burst");
    assert!(pushes < 1000);
}

#[tokio::test]
async fn drain_is_pushed_and_leases_expire() {
    let cp = start_with(|c| c.lease_grace = Duration::from_millis(300)).await;
    let mut a = admin(&cp).await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(ENDPOINTS, &["api"]).await;
    assert_eq!(p.recv_ack().await.removed_resources, vec!["api"]);
    let api = Proxy::connect(cp.handle.addrs.discovery, node("api-1", "api", "10.0.0.7")).await;
    let r = p.recv_ack().await;
    let Some(pb::resource::Kind::Endpoints(e)) = &r.resources[0].kind else {
        panic!("not endpoints");
    };
    assert_eq!(e.endpoints.len(), 1);
    assert_eq!(e.endpoints[0].address, "10.0.0.7:15006");
    assert_eq!(e.endpoints[0].app_port, 8080);
    assert_eq!(e.endpoints[0].source, "proxy:api-1");

    within(
        "drain",
        a.drain_endpoint(apb::EndpointRef {
            service: "api".into(),
            address: "10.0.0.7:15006".into(),
        }),
    )
    .await
    .expect("drained");
    let r = p.recv_ack().await;
    let Some(pb::resource::Kind::Endpoints(e)) = &r.resources[0].kind else {
        panic!("not endpoints");
    };
    assert_eq!(e.endpoints[0].state, pb::EndpointState::Draining as i32);

    // The api proxy goes away: after the grace period its endpoint (and the service) is gone.
    drop(api);
    let r = p.recv_ack().await;
    assert_eq!(r.removed_resources, vec!["api"]);
}

#[tokio::test]
async fn listener_wildcard_is_the_proxy_service() {
    let cp = start().await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(LISTENER, &["*"]).await;
    let r = p.recv_ack().await;
    assert_eq!(names(&r), vec!["web"]);
    let Some(pb::resource::Kind::Listener(l)) = &r.resources[0].kind else {
        panic!("not a listener");
    };
    assert_eq!(l.app_ports, vec![8080]);
    // Wildcards are refused where they make no sense.
    p.subscribe(ROUTE, &["*"]).await;
    let status = p.closed_with().await.expect("stream ends with an error");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn runtime_defaults_updates_and_trust_bundle_seam() {
    use mesh_proto::type_url::RUNTIME;
    let cp = start().await;
    let mut a = admin(&cp).await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    p.subscribe(RUNTIME, &["*"]).await;
    let runtime = |r: &mesh_proto::discovery::v1::DeltaDiscoveryResponse| match &r.resources[0].kind
    {
        Some(pb::resource::Kind::Runtime(rt)) => rt.clone(),
        other => panic!("not a runtime: {other:?}"),
    };
    let r = p.recv_ack().await;
    assert_eq!(names(&r), vec!["runtime"]);
    assert_eq!(runtime(&r).trace_sampling_ratio, 1.0);

    within(
        "set runtime",
        a.set_runtime(apb::SetRuntimeRequest {
            runtime: Some(pb::Runtime {
                trace_sampling_ratio: 0.1,
                access_log_ratio: 0.0,
                trust_bundle_pem: vec!["ignored".into()],
            }),
        }),
    )
    .await
    .expect("runtime accepted");
    let rt = runtime(&p.recv_ack().await);
    assert_eq!((rt.trace_sampling_ratio, rt.access_log_ratio), (0.1, 0.0));
    // The CA published its root at start; the admin's value is ignored.
    assert!(
        !rt.trust_bundle_pem.is_empty()
            && rt
                .trust_bundle_pem
                .iter()
                .all(|p| p.contains("BEGIN CERTIFICATE")),
        "the bundle is the CA's, not the admin's"
    );

    let core = cp.handle.core.clone();
    tokio::task::spawn_blocking(move || core.set_trust_bundle(vec!["ROOT PEM".into()]))
        .await
        .unwrap()
        .expect("bundle stored");
    let rt = runtime(&p.recv_ack().await);
    assert_eq!(rt.trust_bundle_pem, vec!["ROOT PEM".to_string()]);
    assert_eq!(rt.trace_sampling_ratio, 0.1);
}

#[tokio::test]
async fn malformed_or_too_many_names_cost_those_names_not_the_stream() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    create_service(&mut a, "a").await;
    set_route(&mut a, route("a", "a", 0)).await;
    let mut p = Proxy::connect(cp.handle.addrs.discovery, node("p1", "web", "10.0.0.1")).await;
    // What an app's `Host:` header can put there: a lone dot, a 300-byte name, an empty label.
    let long = "x".repeat(300);
    p.subscribe(ROUTE, &[".", &long, "a..b"]).await;
    let r = p.recv_ack().await;
    assert!(r.resources.is_empty());
    let mut removed = r.removed_resources.clone();
    removed.sort();
    let mut want = vec![".".to_string(), long.clone(), "a..b".to_string()];
    want.sort();
    assert_eq!(removed, want, "answered as absent, once");
    // 10,001 distinct unknown names: the ones past the limit are answered as absent too.
    let many: Vec<String> = (0..10_001).map(|i| format!("unknown-{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    p.subscribe(ROUTE, &refs).await;
    let r = p.recv_ack().await;
    assert_eq!(r.removed_resources.len(), 10_001);
    // The stream still works: a real service subscribed afterwards is delivered.
    p.subscribe(CLUSTER, &["a"]).await;
    let r = p.recv_ack().await;
    assert_eq!(r.type_url, CLUSTER);
    assert_eq!(names(&r), vec!["a"]);
}

#[tokio::test]
async fn oversized_initial_versions_are_refused() {
    let cp = start().await;
    let err = Proxy::connect_with(
        cp.handle.addrs.discovery,
        DeltaDiscoveryRequest {
            node: Some(node("p1", "web", "10.0.0.1")),
            type_url: ROUTE.into(),
            initial_resource_versions: (0..10_001)
                .map(|i| (format!("s-{i}"), "v".into()))
                .collect(),
            ..Default::default()
        },
    )
    .await;
    let status = match err {
        Err(s) => s,
        Ok(mut p) => p.closed_with().await.expect("closed with a status"),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    let err = Proxy::connect_with(
        cp.handle.addrs.discovery,
        DeltaDiscoveryRequest {
            node: Some(node("p2", "web", "10.0.0.2")),
            type_url: ROUTE.into(),
            initial_resource_versions: [("a".to_string(), "v".repeat(4096))].into(),
            ..Default::default()
        },
    )
    .await;
    let status = match err {
        Err(s) => s,
        Ok(mut p) => p.closed_with().await.expect("closed with a status"),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
}

#[tokio::test]
async fn a_node_with_oversized_labels_is_refused() {
    let cp = start().await;
    let refused = |labels: std::collections::HashMap<String, String>| {
        let mut n = node("p1", "web", "10.0.0.1");
        n.labels = labels;
        Proxy::connect_with(
            cp.handle.addrs.discovery,
            DeltaDiscoveryRequest {
                node: Some(n),
                ..Default::default()
            },
        )
    };
    let too_many = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
    let err = refused(too_many).await.err().expect("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let too_long = [("version".to_string(), "v".repeat(64))].into();
    let err = refused(too_long).await.err().expect("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}
