//! Outlier detection on the real data path: the balancer's detector (`balance`) ejects an endpoint whose app died or flaps, behind the real outbound and inbound sidecars, and re-admits it after a growing ejection time.

mod data_support;
mod resilience_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use data_support::*;
use http_body_util::Full;
use mesh_proto::types::v1 as pb;
use mesh_sidecar::state::{Cluster, LbPolicy};
use resilience_support::{Backend, Mode, eventually};

/// `svc` retrying gateway errors and resets (the outcomes of a dying endpoint) on GETs.
fn retry_route() -> pb::Route {
    pb::Route {
        service: "svc".into(),
        rules: vec![pb::RouteRule {
            backends: vec![pb::WeightedBackend {
                service: "svc".into(),
                subset: String::new(),
                weight: 1,
            }],
            retry: Some(pb::RetryPolicy {
                attempts: 3,
                retry_on: vec!["gateway-error".into(), "reset".into()],
                ..Default::default()
            }),
            ..Default::default()
        }],
    }
}

/// Round robin: the failing endpoint keeps getting its share until it is ejected (P2C's
/// failure penalty would steer away from it first and make ejection slow to observe).
fn round_robin(base_ejection: Option<Duration>) -> Cluster {
    let mut c = Cluster::with_defaults("svc".into());
    c.lb = LbPolicy::RoundRobin;
    if let Some(base) = base_ejection {
        c.outlier.as_mut().expect("on by default").base_ejection = base;
    }
    c
}

/// Three apps, each behind its own inbound sidecar, as the endpoints of `svc`.
async fn mesh_of_three() -> (Mesh, Vec<Backend>, Vec<Pod>) {
    let mut mesh = Mesh::new().await;
    let mut apps = Vec::new();
    let mut pods = Vec::new();
    for _ in 0..3 {
        let app = Backend::start().await;
        pods.push(mesh.pod(app.addr, "v1").await);
        apps.push(app);
    }
    mesh.set_endpoints("svc", &pods.iter().collect::<Vec<_>>());
    mesh.set_route(&retry_route());
    (mesh, apps, pods)
}

fn get() -> http::Request<Full<Bytes>> {
    http::Request::get("/orders")
        .header(http::header::HOST, "svc")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Whether the balancer has `pod`'s endpoint ejected now.
fn ejected(mesh: &Mesh, pod: &Pod) -> bool {
    let snap = mesh.state.snapshot();
    let lb = snap.lb("svc").expect("svc is balanced");
    lb.endpoints()
        .iter()
        .find(|e| e.endpoint.addr == pod.inbound)
        .expect("pod is an endpoint")
        .stats
        .ejected()
}

/// Sends GETs until `pod`'s endpoint is ejected; every one succeeds (retried elsewhere).
/// Round robin sends it every third request and five gateway failures in a row eject it (the
/// default), so 50 requests are plenty.
async fn until_ejected(
    mesh: &Mesh,
    pod: &Pod,
    tx: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) -> bool {
    for _ in 0..50 {
        let got = send_h1(tx, get()).await;
        assert_eq!(got.status, 200, "retried on another endpoint: {}", got.body);
        if ejected(mesh, pod) {
            return true;
        }
    }
    false
}

fn ejected_count(mesh: &Mesh) -> usize {
    let snap = mesh.state.snapshot();
    let lb = snap.lb("svc").expect("svc is balanced");
    lb.endpoints().iter().filter(|e| e.stats.ejected()).count()
}

#[tokio::test]
async fn killing_one_of_three_apps_keeps_success_and_ejects_its_endpoint() {
    // Ten clients of 150 requests each; the app dies a third of the way in.
    const CLIENTS: u64 = 10;
    const EACH: u64 = 150;
    const KILL_AT: u64 = CLIENTS * EACH / 3;
    let (mesh, apps, pods) = mesh_of_three().await;
    mesh.set_cluster(round_robin(None));
    let dead = 1;
    let mesh = Arc::new(mesh);
    let done = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (mesh, done) = (mesh.clone(), done.clone());
        set.spawn(async move {
            let mut tx = mesh.h1().await;
            let mut failed = Vec::new();
            for _ in 0..EACH {
                let got = send_h1(&mut tx, get()).await;
                if got.status != 200 {
                    failed.push((got.status, got.headers.get("x-mesh-error").cloned()));
                }
                done.fetch_add(1, Ordering::AcqRel);
            }
            failed
        });
    }
    assert!(eventually(T, || done.load(Ordering::Acquire) >= KILL_AT).await);
    apps[dead].kill();
    let killed = tokio::time::Instant::now();
    assert!(
        eventually(T, || ejected(&mesh, &pods[dead])).await,
        "the dead app's endpoint is ejected"
    );
    let ejected_after = killed.elapsed();
    let mut failed = Vec::new();
    while let Some(r) = within(set.join_next()).await {
        failed.extend(r.unwrap());
    }
    let total = CLIENTS * EACH;
    let rate = 1.0 - failed.len() as f64 / total as f64;
    println!(
        "{total} requests: success {:.2} %, failures {failed:?}, ejected {ejected_after:?} after the kill",
        rate * 100.0
    );
    // A dead app is `app-unavailable` at its sidecar (never reached an app: retried anywhere),
    // a request in flight when it died a reset (retried by the route): clients see neither.
    assert!(rate >= 0.999, "success rate {rate}");
    assert!(ejected(&mesh, &pods[dead]));
    // The default cap (10 %, at least one) ejects no healthy endpoint alongside.
    assert_eq!(ejected_count(&mesh), 1);
}

#[tokio::test]
async fn flapping_endpoint_is_ejected_then_readmitted_for_longer_each_time() {
    // One second: long enough to see the endpoint out, short enough to wait out twice.
    let base = Duration::from_secs(1);
    let (mesh, apps, pods) = mesh_of_three().await;
    mesh.set_cluster(round_robin(Some(base)));
    let flap = 0;
    let mut tx = mesh.h1().await;

    // Down: its app resets every request until the endpoint is ejected; clients never notice.
    apps[flap].set(Mode::Reset);
    assert!(
        until_ejected(&mesh, &pods[flap], &mut tx).await,
        "the flapping endpoint is ejected"
    );
    let hits = apps[flap].hits();
    for _ in 0..10 {
        assert_eq!(send_h1(&mut tx, get()).await.status, 200);
    }
    if ejected(&mesh, &pods[flap]) {
        assert_eq!(
            apps[flap].hits(),
            hits,
            "an ejected endpoint gets no requests"
        );
    }

    // Re-admitted after the base ejection time, still failing: ejected again, for longer.
    assert!(eventually(T, || !ejected(&mesh, &pods[flap])).await);
    assert!(
        until_ejected(&mesh, &pods[flap], &mut tx).await,
        "ejected again"
    );
    let second = tokio::time::Instant::now();
    // Half past the base time: out still, because the second ejection lasts twice as long.
    tokio::time::sleep(base + base / 2).await;
    assert!(
        ejected(&mesh, &pods[flap]) || second.elapsed() >= base * 2,
        "the second ejection outlasts the first"
    );

    // Up again: re-admitted and serving its share.
    apps[flap].set(Mode::Ok);
    assert!(eventually(T, || !ejected(&mesh, &pods[flap])).await);
    let before = apps[flap].hits();
    for _ in 0..30 {
        assert_eq!(send_h1(&mut tx, get()).await.status, 200);
    }
    assert!(
        apps[flap].hits() - before >= 5,
        "the re-admitted endpoint gets traffic again"
    );
    assert!(!ejected(&mesh, &pods[flap]));
}
