//! Discovery client against a real in-test gRPC control plane: node, ACK, NACK, on-demand
//! subscriptions, reconnect with initial versions, snapshot file.

mod ctl_support;

use std::sync::Arc;
use std::time::Duration;

use ctl_support::{FakeCp, WAIT, bad_route, cluster, endpoints, eventually, listener};
use mesh_proto::discovery::v1::Node;
use mesh_proto::type_url::{AUTHORIZATION_POLICY, CLUSTER, ENDPOINTS, LISTENER, ROUTE, RUNTIME};
use mesh_sidecar::health::Health;
use mesh_sidecar::state::StateHandle;
use mesh_sidecar::telemetry::Metrics;
use mesh_sidecar::xds::backoff::Backoff;
use mesh_sidecar::xds::{Client, ClientConfig, ConfigSource, Discovery};

const OWN: &str = "web";

struct Proxy {
    state: StateHandle,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    discovery: Discovery,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(endpoint: String, eager: &[&str], data_dir: Option<&std::path::Path>) -> Proxy {
    let node = Node {
        id: "web-1".into(),
        identity: "spiffe://cluster.local/ns/default/sa/web".into(),
        service: OWN.into(),
        namespace: "default".into(),
        service_account: OWN.into(),
        address: "127.0.0.1".into(),
        inbound_port: 15006,
        app_ports: vec![8080],
        ..Default::default()
    };
    let cfg = ClientConfig {
        endpoint,
        node,
        eager_services: eager.iter().map(|s| s.to_string()).collect(),
        data_dir: data_dir.map(Into::into),
        // Fast retries keep the reconnect tests short; the default cap is 15 s.
        backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
        local_listener: Default::default(),
        snapshot_fallback_after: Duration::from_millis(300),
        tls: None,
        workload: None,
    };
    let state = StateHandle::default();
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new());
    let (client, discovery) = Client::new(cfg, state.clone(), health.clone(), metrics.clone());
    let task = tokio::spawn(client.run());
    Proxy {
        state,
        health,
        metrics,
        discovery,
        task,
    }
}

/// Answers the proxy's own listener and authorization policy so it becomes ready.
async fn make_ready(s: &mut ctl_support::CpStream) {
    let n = s.send(LISTENER, vec![listener(OWN, "l1")], &[]).await;
    assert!(s.recv_reply(&n).await.error_detail.is_none());
    let n = s.send(AUTHORIZATION_POLICY, vec![], &[OWN]).await;
    assert!(s.recv_reply(&n).await.error_detail.is_none());
}

#[tokio::test]
async fn first_request_carries_node_and_good_config_is_acked() {
    let mut cp = FakeCp::start().await;
    let p = start(cp.url(), &["db"], None);
    let mut s = cp.accept().await;

    let first = s.recv().await;
    let node = first
        .node
        .clone()
        .expect("the first request carries the node");
    assert_eq!(node.service, OWN);
    assert_eq!(node.identity, "spiffe://cluster.local/ns/default/sa/web");
    assert_eq!(node.inbound_port, 15006);
    let mut rest = s
        .recv_initial(&[CLUSTER, ENDPOINTS, LISTENER, AUTHORIZATION_POLICY, ROUTE])
        .await;
    rest.insert(first.type_url.clone(), first);
    assert_eq!(rest[RUNTIME].resource_names_subscribe, ["*"]);
    assert_eq!(rest[LISTENER].resource_names_subscribe, ["*"]);
    assert_eq!(rest[AUTHORIZATION_POLICY].resource_names_subscribe, [OWN]);
    assert_eq!(rest[ROUTE].resource_names_subscribe, ["db"]);
    assert!(rest.values().filter(|r| r.node.is_some()).count() == 1);

    assert!(!p.health.is_ready());
    make_ready(&mut s).await;
    assert!(p.health.is_ready());
    s.answer_no_cluster_no_route("db").await;
    assert!(
        p.state.snapshot().lb("db").is_none(),
        "held until its endpoints answer"
    );
    let n = s
        .send(
            ENDPOINTS,
            vec![endpoints("db", "e1", &["127.0.0.1:9"])],
            &[],
        )
        .await;
    let ack = s.recv_reply(&n).await;
    assert_eq!(ack.type_url, ENDPOINTS);
    assert!(ack.error_detail.is_none());

    let snap = p.state.snapshot();
    assert!(snap.listener.is_some());
    assert_eq!(snap.endpoints["db"].endpoints.len(), 1);
    assert_eq!(p.metrics.acks(ENDPOINTS), 1);
    assert_eq!(p.discovery.source(), ConfigSource::ControlPlane);
    assert!(p.discovery.is_connected());
}

#[tokio::test]
async fn bad_resource_is_nacked_with_reason_and_previous_config_stays() {
    let mut cp = FakeCp::start().await;
    let p = start(cp.url(), &["db"], None);
    let mut s = cp.accept().await;
    s.recv_initial(&[RUNTIME, LISTENER, ROUTE]).await;
    make_ready(&mut s).await;
    s.answer_no_cluster_no_route("db").await;
    let n = s
        .send(
            ENDPOINTS,
            vec![endpoints("db", "e1", &["127.0.0.1:9"])],
            &[],
        )
        .await;
    s.recv_reply(&n).await;

    // One good and one bad resource in a single response: neither is applied.
    let n = s
        .send(
            ENDPOINTS,
            vec![
                endpoints("db", "e2", &["127.0.0.1:10", "127.0.0.1:11"]),
                endpoints("cache", "e1", &["nowhere"]),
            ],
            &[],
        )
        .await;
    let nack = s.recv_reply(&n).await;
    let detail = nack.error_detail.expect("a NACK");
    assert_eq!(detail.code, 3);
    assert!(detail.message.contains("\"cache\""), "{}", detail.message);
    assert!(
        detail.message.contains("endpoints[0]"),
        "{}",
        detail.message
    );

    let n = s.send(ROUTE, vec![bad_route("db", "r1")], &[]).await;
    let nack = s.recv_reply(&n).await.error_detail.expect("a NACK");
    assert!(
        nack.message.contains("rules[0].matches[0].path"),
        "{}",
        nack.message
    );

    let snap = p.state.snapshot();
    assert_eq!(
        snap.endpoints["db"].endpoints.len(),
        1,
        "previous endpoints stay"
    );
    assert!(!snap.endpoints.contains_key("cache"));
    assert!(!snap.routes.contains_key("db"));
    let store = p.discovery.store();
    let ep = store
        .get(mesh_sidecar::state::ResourceKind::Endpoints, "db")
        .unwrap();
    assert_eq!(ep.version, "e1");
    let last = p.discovery.last_nack().expect("last NACK recorded");
    assert_eq!(last.type_url, ROUTE);
    assert_eq!(last.nonce, n);
    assert_eq!(p.metrics.nacks(ENDPOINTS), 1);
    assert_eq!(p.metrics.nacks(ROUTE), 1);
    assert!(p.health.is_ready(), "a NACK does not unready the proxy");
}

#[tokio::test]
async fn on_demand_subscription_waits_for_the_first_answer() {
    let mut cp = FakeCp::start().await;
    let p = start(cp.url(), &[], None);
    let mut s = cp.accept().await;
    let initial = s
        .recv_initial(&[RUNTIME, LISTENER, AUTHORIZATION_POLICY])
        .await;
    assert!(!initial.contains_key(ROUTE), "no service subscribed yet");
    make_ready(&mut s).await;

    let d = p.discovery.clone();
    let waiter = tokio::spawn(async move { d.ensure("reviews", WAIT).await });
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let r = s.recv().await;
        assert_eq!(r.resource_names_subscribe, ["reviews"]);
        kinds.push(r.type_url);
    }
    kinds.sort();
    assert_eq!(kinds, [CLUSTER, ENDPOINTS, ROUTE]);

    let n = s.send(CLUSTER, vec![cluster("reviews", "c1")], &[]).await;
    s.recv_reply(&n).await;
    let n = s
        .send(
            ENDPOINTS,
            vec![endpoints("reviews", "e1", &["127.0.0.1:9"])],
            &[],
        )
        .await;
    s.recv_reply(&n).await;
    assert!(
        p.state.snapshot().lb("reviews").is_none(),
        "half a service is held, not applied"
    );
    assert!(
        !p.discovery.is_answered("reviews"),
        "the route is still unanswered"
    );
    // No route: the control plane answers the name as removed.
    let n = s.send(ROUTE, vec![], &["reviews"]).await;
    s.recv_reply(&n).await;
    tokio::time::timeout(WAIT, waiter)
        .await
        .unwrap()
        .unwrap()
        .expect("answered");
    assert!(p.state.snapshot().lb("reviews").is_some());

    // An unknown service is answered as absent, so the data path does not wait for it.
    let d = p.discovery.clone();
    let waiter = tokio::spawn(async move { d.ensure("ghost", WAIT).await });
    let mut subs = Vec::new();
    for _ in 0..3 {
        let r = s.recv().await;
        assert_eq!(r.resource_names_subscribe, ["ghost"]);
        subs.push(r.type_url);
    }
    for type_url in subs {
        let n = s.send(&type_url, vec![], &["ghost"]).await;
        s.recv_reply(&n).await;
    }
    tokio::time::timeout(WAIT, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(p.state.snapshot().absent.contains("ghost"));

    // The state handle's wants (the data path's other way in) subscribe too.
    p.state.want("ratings");
    let r = s.recv().await;
    assert_eq!(r.resource_names_subscribe, ["ratings"]);
}

#[tokio::test]
async fn reconnect_sends_initial_versions_and_keeps_config_meanwhile() {
    let mut cp = FakeCp::start().await;
    let p = start(cp.url(), &["db"], None);
    let mut s = cp.accept().await;
    s.recv_initial(&[RUNTIME, LISTENER, ROUTE]).await;
    make_ready(&mut s).await;
    s.answer_no_cluster_no_route("db").await;
    let n = s
        .send(
            ENDPOINTS,
            vec![
                endpoints("db", "e7", &["127.0.0.1:9"]),
                endpoints("cache", "e3", &["127.0.0.1:8"]),
            ],
            &[],
        )
        .await;
    s.recv_reply(&n).await;

    s.fail().await;
    eventually("stream marked down", || !p.discovery.is_connected()).await;
    assert!(p.health.is_ready(), "still serving the last config");
    assert_eq!(p.state.snapshot().endpoints.len(), 2);

    let mut s = cp.accept().await;
    let again = s
        .recv_initial(&[RUNTIME, LISTENER, AUTHORIZATION_POLICY, ENDPOINTS])
        .await;
    let eps = &again[ENDPOINTS].initial_resource_versions;
    assert_eq!(eps.get("db").map(String::as_str), Some("e7"));
    assert_eq!(eps.get("cache").map(String::as_str), Some("e3"));
    assert_eq!(
        again[LISTENER]
            .initial_resource_versions
            .get(OWN)
            .map(String::as_str),
        Some("l1")
    );
    assert_eq!(again[ENDPOINTS].resource_names_subscribe, ["db"]);
    eventually("stream marked up", || p.discovery.is_connected()).await;
    assert!(
        p.metrics
            .encode()
            .contains("mesh_discovery_reconnects_total 1")
    );
}

#[tokio::test]
async fn snapshot_file_is_written_and_served_when_the_control_plane_is_down() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut cp = FakeCp::start().await;
        let p = start(cp.url(), &["db"], Some(dir.path()));
        let mut s = cp.accept().await;
        s.recv_initial(&[RUNTIME, LISTENER, ROUTE]).await;
        make_ready(&mut s).await;
        s.answer_no_cluster_no_route("db").await;
        let n = s.send(CLUSTER, vec![cluster("db", "c1")], &[]).await;
        s.recv_reply(&n).await;
        let n = s
            .send(
                ENDPOINTS,
                vec![endpoints("db", "e1", &["127.0.0.1:9"])],
                &[],
            )
            .await;
        s.recv_reply(&n).await;
        let path = dir.path().join(mesh_sidecar::xds::persist::SNAPSHOT_FILE);
        eventually("snapshot has the endpoints", || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"e1\""))
        })
        .await;
        // A service answered as absent is remembered too, so it needs no wait after a restart.
        p.state.want("ghost");
        for _ in 0..3 {
            let r = s.recv().await;
            assert_eq!(r.resource_names_subscribe, ["ghost"]);
        }
        for t in [CLUSTER, ENDPOINTS, ROUTE] {
            let n = s.send(t, vec![], &["ghost"]).await;
            s.recv_reply(&n).await;
        }
        eventually("snapshot lists the absent service", || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"ghost\""))
        })
        .await;
        drop(p);
    }

    // A port nobody listens on: the control plane is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let p = start(url, &[], Some(dir.path()));
    eventually("ready from the snapshot", || p.health.is_ready()).await;
    assert_eq!(p.discovery.source(), ConfigSource::SnapshotFile);
    let snap = p.state.snapshot();
    assert!(snap.listener.is_some());
    assert_eq!(snap.endpoints["db"].endpoints.len(), 1);
    assert!(
        p.discovery.is_answered("db"),
        "snapshot services need no wait"
    );
    assert_eq!(p.discovery.services(), ["db", "ghost"]);
    assert!(p.discovery.is_answered("ghost"));
    assert!(p.state.snapshot().absent.contains("ghost"));
    assert!(!p.state.snapshot().absent.contains("db"));
}

#[tokio::test]
async fn a_silent_control_plane_counts_as_down_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = mesh_sidecar::xds::store::ResourceStore::default();
    file.apply(
        mesh_sidecar::state::ResourceKind::Endpoints,
        &[endpoints("db", "old", &["127.0.0.1:9"])],
        &[],
    );
    file.apply(
        mesh_sidecar::state::ResourceKind::Listener,
        &[listener(OWN, "l0")],
        &[],
    );
    mesh_sidecar::xds::persist::write(dir.path(), &file.to_file(vec!["db".into()]))
        .await
        .unwrap();

    // The control plane accepts the stream and stays silent.
    let mut cp = FakeCp::start().await;
    let p = start(cp.url(), &[], Some(dir.path()));
    let mut s = cp.accept().await;
    let initial = s
        .recv_initial(&[RUNTIME, LISTENER, AUTHORIZATION_POLICY])
        .await;
    assert!(initial[LISTENER].initial_resource_versions.is_empty());
    eventually("ready from the snapshot", || p.health.is_ready()).await;
    assert_eq!(p.discovery.source(), ConfigSource::SnapshotFile);
    assert!(p.discovery.is_connected(), "the stream stays up meanwhile");

    // Its answers replace the snapshot's resources as they arrive.
    let n = s
        .send(
            ENDPOINTS,
            vec![endpoints("db", "new", &["127.0.0.1:10"])],
            &[],
        )
        .await;
    s.recv_reply(&n).await;
    assert_eq!(p.discovery.source(), ConfigSource::ControlPlane);
    let store = p.discovery.store();
    let db = store
        .get(mesh_sidecar::state::ResourceKind::Endpoints, "db")
        .unwrap();
    assert_eq!(db.version, "new");
    assert!(
        store
            .get(mesh_sidecar::state::ResourceKind::Listener, OWN)
            .is_some()
    );
    assert_eq!(
        p.state.snapshot().endpoints["db"].endpoints[0].addr.port(),
        10
    );
}
