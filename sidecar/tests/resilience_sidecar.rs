//! Resilience through the real sidecars: client → outbound sidecar → inbound sidecar → a misbehaving app, with routes and clusters set in the sidecar's state.

mod data_support;
mod resilience_support;

use std::sync::Arc;

use bytes::Bytes;
use data_support::*;
use http_body_util::Full;
use mesh_proto::types::v1 as pb;
use mesh_sidecar::state::Cluster;
use resilience_support::{Backend, Mode};

fn retry_route(retry: pb::RetryPolicy) -> pb::Route {
    pb::Route {
        service: "svc".into(),
        rules: vec![pb::RouteRule {
            backends: vec![pb::WeightedBackend {
                service: "svc".into(),
                subset: String::new(),
                weight: 1,
            }],
            retry: Some(retry),
            ..Default::default()
        }],
    }
}

fn five_xx(attempts: u32) -> pb::RetryPolicy {
    pb::RetryPolicy {
        attempts,
        retry_on: vec!["5xx".into()],
        ..Default::default()
    }
}

/// A mesh with one pod per backend, all endpoints of `svc`.
async fn mesh_over(backends: &[Backend]) -> (Mesh, Vec<Pod>) {
    let mut mesh = Mesh::new().await;
    let mut pods = Vec::new();
    for b in backends {
        pods.push(mesh.pod(b.addr, "v1").await);
    }
    mesh.set_endpoints("svc", &pods.iter().collect::<Vec<_>>());
    (mesh, pods)
}

async fn backends(n: usize) -> Vec<Backend> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Backend::start().await);
    }
    v
}

fn request(method: http::Method) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri("/orders")
        .header(http::header::HOST, "svc")
        .body(Full::new(Bytes::from_static(b"{\"id\":1}")))
        .unwrap()
}

#[tokio::test]
async fn post_503_is_not_retried_but_get_with_route_policy_is() {
    let apps = backends(2).await;
    apps[0].set(Mode::Status503);
    let (mesh, _pods) = mesh_over(&apps).await;
    mesh.set_route(&retry_route(five_xx(3)));
    let mut tx = mesh.h1().await;

    // GETs: every one succeeds, retried away from the 503 endpoint when sent there.
    for _ in 0..10 {
        let got = send_h1(&mut tx, request(http::Method::GET)).await;
        assert_eq!(got.status, 200, "{}", got.body);
    }
    // POSTs: never sent twice, whatever the outcome.
    let before: u64 = apps.iter().map(|a| a.hits()).sum();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send_h1(&mut tx, request(http::Method::POST)).await.status);
    }
    let after: u64 = apps.iter().map(|a| a.hits()).sum();
    assert_eq!(after - before, 10, "each POST reached an app exactly once");
    println!("POST statuses through the sidecar: {statuses:?}");
}

#[tokio::test]
async fn connect_refused_endpoint_is_retried_even_for_post() {
    let apps = backends(1).await;
    let mut mesh = Mesh::new().await;
    let good = mesh.pod(apps[0].addr, "v1").await;
    // An endpoint whose address refuses connections (bound, then closed).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ghost = Pod {
        app: apps[0].addr,
        inbound: dead,
        version: "v1",
        trigger: None,
    };
    mesh.set_endpoints("svc", &[&ghost, &good]);
    let mut tx = mesh.h1().await;
    for _ in 0..20 {
        let got = send_h1(&mut tx, request(http::Method::POST)).await;
        assert_eq!(got.status, 200, "{}", got.body);
    }
    assert_eq!(apps[0].hits(), 20);
    // Outlier detection is on without any Cluster config (the EWMA failure penalty already
    // steers traffic away from the refusing endpoint before its failures add up to an ejection).
    let snap = mesh.state.snapshot();
    assert!(snap.lb("svc").unwrap().cluster.outlier.is_some());
}

#[tokio::test]
async fn connect_refused_unmeshed_endpoint_is_retried_even_for_post() {
    // Unmeshed endpoints (plain HTTP/1.1 to the app, no retry policy): the request head is
    // moved into each attempt, not copied, and a refused connect hands it back for the retry.
    let apps = backends(1).await;
    let mesh = Mesh::new().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let direct = |inbound| Pod {
        app: apps[0].addr,
        inbound,
        version: "v1",
        trigger: None,
    };
    let (ghost, good) = (direct(dead), direct(apps[0].addr));
    mesh.set_endpoints_with("svc", &[&ghost, &good], |_, e| {
        e.identity = None;
        e.source = "static".into();
    });
    let mut tx = mesh.h1().await;
    for _ in 0..20 {
        let got = send_h1(&mut tx, request(http::Method::POST)).await;
        assert_eq!(got.status, 200, "{}", got.body);
    }
    assert_eq!(apps[0].hits(), 20);
}

#[tokio::test]
async fn per_try_timeout_answers_504_with_its_cause() {
    let apps = backends(1).await;
    apps[0].set(Mode::Delay); // 200 ms
    let (mesh, _pods) = mesh_over(&apps).await;
    mesh.set_route(&retry_route(pb::RetryPolicy {
        per_try_timeout_ms: 50,
        ..five_xx(2)
    }));
    let mut tx = mesh.h1().await;
    let got = send_h1(&mut tx, request(http::Method::POST)).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.headers["x-mesh-error"], "timeout:per-try");
}

#[tokio::test]
async fn circuit_breaker_answers_503_circuit_open_while_the_app_is_not_overloaded() {
    let apps = backends(1).await;
    apps[0].set(Mode::Gate);
    let (mesh, _pods) = mesh_over(&apps).await;
    let mut cluster = Cluster::with_defaults("svc".into());
    cluster.circuit_breakers.max_requests = Some(1);
    mesh.set_cluster(cluster);

    let mut held = mesh.h1().await;
    within(held.ready()).await.unwrap();
    let pending = tokio::spawn(held.send_request(request(http::Method::GET)));
    assert!(resilience_support::eventually(T, || apps[0].in_flight() == 1).await);

    let mut tx = mesh.h1().await;
    for _ in 0..5 {
        let got = send_h1(&mut tx, request(http::Method::GET)).await;
        assert_eq!(got.status, 503);
        assert_eq!(got.headers["x-mesh-error"], "circuit-open");
    }
    assert_eq!(
        apps[0]
            .peak_in_flight
            .load(std::sync::atomic::Ordering::Acquire),
        1
    );
    apps[0].gate.add_permits(1);
    let rsp = within(pending).await.unwrap().unwrap();
    assert_eq!(rsp.status(), 200);
}

#[tokio::test]
async fn all_503_retries_through_the_sidecar_stay_within_the_budget() {
    const REQUESTS: u64 = 300;
    let apps = backends(3).await;
    for a in &apps {
        a.set(Mode::Status503);
    }
    let (mesh, _pods) = mesh_over(&apps).await;
    mesh.set_route(&retry_route(five_xx(3)));
    let mesh = Arc::new(mesh);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let mesh = mesh.clone();
        set.spawn(async move {
            let mut tx = mesh.h1().await;
            for _ in 0..REQUESTS / 10 {
                let got = send_h1(&mut tx, request(http::Method::GET)).await;
                assert_eq!(got.status, 503);
            }
        });
    }
    while let Some(r) = within(set.join_next()).await {
        r.unwrap();
    }
    let attempts: u64 = apps.iter().map(|a| a.hits()).sum();
    let allowed = REQUESTS + REQUESTS / 5 + 100;
    println!("{REQUESTS} requests → {attempts} attempts at the apps (budget allows ≤ {allowed})");
    assert!(attempts > REQUESTS && attempts <= allowed);
}

/// A peer "sidecar" speaking HTTP/2 that refuses every stream with `REFUSED_STREAM`.
async fn refusing_peer() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn refused_stream_from_a_peer_is_retried_even_for_post() {
    let apps = backends(1).await;
    let mut mesh = Mesh::new().await;
    let good = mesh.pod(apps[0].addr, "v1").await;
    let refusing = Pod {
        app: apps[0].addr,
        inbound: refusing_peer().await,
        version: "v1",
        trigger: None,
    };
    mesh.set_endpoints("svc", &[&refusing, &good]);
    let mut tx = mesh.h1().await;
    for _ in 0..20 {
        let got = send_h1(&mut tx, request(http::Method::POST)).await;
        assert_eq!(got.status, 200, "{}", got.body);
    }
    assert_eq!(
        apps[0].hits(),
        20,
        "every POST reached the app exactly once"
    );

    // With only the refusing peer left, the client learns why.
    mesh.set_endpoints("svc", &[&refusing]);
    let got = send_h1(&mut tx, request(http::Method::POST)).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.headers["x-mesh-error"], "refused-stream");
}

#[tokio::test]
async fn route_rate_limit_answers_429_with_retry_after() {
    let apps = backends(1).await;
    let (mesh, _pods) = mesh_over(&apps).await;
    let mut route = retry_route(five_xx(2));
    route.rules[0].rate_limit = Some(pb::RateLimit {
        requests_per_second: 1,
        burst: 3,
        per_source: false,
    });
    mesh.set_route(&route);
    let mut tx = mesh.h1().await;
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..10 {
        let got = send_h1(&mut tx, request(http::Method::GET)).await;
        match got.status.as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(got.headers["x-mesh-error"], "rate-limited");
                assert_eq!(got.headers["retry-after"], "1");
                limited += 1;
            }
            s => panic!("unexpected {s}: {}", got.body),
        }
    }
    println!(
        "10 requests at 1/s with burst 3 through the sidecar: {ok} allowed, {limited} limited"
    );
    assert!(ok >= 3 && limited >= 5);
    assert_eq!(apps[0].hits(), ok);
}

#[tokio::test]
async fn upstream_reset_is_not_retried_by_default() {
    // The app drops every connection without answering: the peer sidecar says
    // `upstream-reset`, and a request that may have reached an app is never sent again.
    let apps = backends(2).await;
    for a in &apps {
        a.set(Mode::Reset);
    }
    let (mesh, _pods) = mesh_over(&apps).await;
    let mut tx = mesh.h1().await;
    for (i, method) in [http::Method::POST, http::Method::GET]
        .into_iter()
        .enumerate()
    {
        let got = send_h1(&mut tx, request(method)).await;
        assert_eq!(got.status, 502, "{}", got.body);
        assert_eq!(got.headers["x-mesh-error"], "upstream-reset");
        let hits: u64 = apps.iter().map(|a| a.hits()).sum();
        assert_eq!(hits, i as u64 + 1, "each request reached an app once");
    }
}

/// A peer "sidecar" speaking HTTP/2 that resets every stream with `INTERNAL_ERROR` after
/// reading it (so the request may have been processed); counts the streams it saw.
async fn resetting_peer() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = streams.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    seen.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    respond.send_reset(h2::Reason::INTERNAL_ERROR);
                }
            });
        }
    });
    (addr, streams)
}

#[tokio::test]
async fn a_peer_resetting_the_stream_is_not_retried_by_default() {
    let apps = backends(1).await;
    let mesh = Mesh::new().await;
    let (addr, streams) = resetting_peer().await;
    let resetting = Pod {
        app: apps[0].addr,
        inbound: addr,
        version: "v1",
        trigger: None,
    };
    mesh.set_endpoints("svc", &[&resetting]);
    let mut tx = mesh.h1().await;
    let got = send_h1(&mut tx, request(http::Method::GET)).await;
    assert_eq!(got.status, 502, "{}", got.body);
    assert_eq!(got.headers["x-mesh-error"], "upstream-reset");
    assert_eq!(
        streams.load(std::sync::atomic::Ordering::Acquire),
        1,
        "sent once: unlike REFUSED_STREAM, a reset may follow processing"
    );
}

#[tokio::test]
async fn request_timeout_answers_504_with_its_cause() {
    let apps = backends(1).await;
    apps[0].set(Mode::Delay); // 200 ms
    let (mesh, _pods) = mesh_over(&apps).await;
    let mut route = retry_route(five_xx(3));
    // A quarter of the app's delay: the request deadline, not the app, ends the exchange.
    route.rules[0].timeout_ms = 50;
    mesh.set_route(&route);
    let mut tx = mesh.h1().await;
    let got = send_h1(&mut tx, request(http::Method::GET)).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.headers["x-mesh-error"], "timeout:request");
    // Once, or not yet when the deadline fired first: never retried past the deadline.
    assert!(apps[0].hits() <= 1, "{} attempts", apps[0].hits());
}

/// A listener whose accept queue is full: further SYNs are dropped, so connects hang. `None`
/// when this kernel never fills the queue (the test is then skipped).
async fn black_hole() -> Option<(std::net::SocketAddr, Vec<tokio::net::TcpStream>)> {
    use std::net::SocketAddr;
    use std::time::Duration;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .ok()?;
    // Backlog 0: the kernel queues at most one connection, so a few fillers close it.
    sock.listen(0).ok()?;
    let addr = sock.local_addr().ok()?.as_socket()?;
    let mut fillers = Vec::new();
    // 64 fillers is far past any backlog rounding; a connect unanswered for 200 ms (a
    // loopback connect takes microseconds) means the queue is full.
    for _ in 0..64 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => {
                // Keep the listener alive as long as the fillers.
                std::mem::forget(sock);
                return Some((addr, fillers));
            }
        }
    }
    None
}

#[tokio::test]
async fn connect_timeout_is_retried_elsewhere_then_answered_with_its_cause() {
    let Some((hole, _fillers)) = black_hole().await else {
        println!("skipped: this kernel never filled the accept queue, so connects cannot hang");
        return;
    };
    let apps = backends(1).await;
    let mut mesh = Mesh::with_config(mesh_sidecar::outbound::OutboundConfig {
        // A tenth of the default: the test waits three of them for the solo endpoint.
        connect_timeout: std::time::Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let good = mesh.pod(apps[0].addr, "v1").await;
    let hung = Pod {
        app: apps[0].addr,
        inbound: hole,
        version: "v1",
        trigger: None,
    };
    mesh.set_endpoints("svc", &[&hung, &good]);
    let mut tx = mesh.h1().await;
    for _ in 0..5 {
        let got = send_h1(&mut tx, request(http::Method::POST)).await;
        assert_eq!(got.status, 200, "{}", got.body);
    }
    assert_eq!(apps[0].hits(), 5);

    mesh.set_endpoints("svc", &[&hung]);
    let got = send_h1(&mut tx, request(http::Method::POST)).await;
    assert_eq!(got.status, 504, "{}", got.body);
    assert_eq!(got.headers["x-mesh-error"], "connect-timeout");
}

/// The cluster's `connect_timeout_ms`, not the outbound listener's, bounds dialling its
/// endpoints: with the listener's at 30 s, three attempts at a hung endpoint would outlast
/// the test's guard; at the cluster's 200 ms they end in `connect-timeout` well within it.
#[tokio::test]
async fn a_cluster_connect_timeout_bounds_dialling_its_endpoints() {
    let Some((hole, _fillers)) = black_hole().await else {
        println!("skipped: this kernel never filled the accept queue, so connects cannot hang");
        return;
    };
    let mesh = Mesh::with_config(mesh_sidecar::outbound::OutboundConfig {
        connect_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let hung = Pod {
        app: hole,
        inbound: hole,
        version: "v1",
        trigger: None,
    };
    mesh.set_endpoints("svc", &[&hung]);
    let c = pb::Cluster {
        name: "svc".into(),
        connect_timeout_ms: 200,
        ..Default::default()
    };
    mesh.set_cluster(Cluster::try_from(&c).unwrap());
    let mut tx = mesh.h1().await;
    // 10 s: far above three 200 ms connects, far below one 30 s connect.
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        send_h1(&mut tx, request(http::Method::GET)),
    )
    .await
    .expect("the cluster's connect timeout, not the listener's, ended the attempts");
    assert_eq!(got.status, 504, "{}", got.body);
    assert_eq!(got.headers["x-mesh-error"], "connect-timeout");
    // The same for opaque TCP (CONNECT) to the service.
    let mut tunnel = mesh.h1().await;
    let connect = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("svc:80")
        .body(Full::default())
        .unwrap();
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        send_h1(&mut tunnel, connect),
    )
    .await
    .expect("the cluster's connect timeout bounds the tunnel's connect");
    assert_eq!(got.status, 504, "{}", got.body);
    assert_eq!(got.headers["x-mesh-error"], "connect-timeout");
}

/// `max_pending_requests` caps the attempts waiting for a new connection: with one allowed
/// and the endpoint's connects hanging, of two concurrent requests one waits on its connect
/// and the other is refused at once with `circuit-open`.
#[tokio::test]
async fn max_pending_requests_refuses_attempts_beyond_the_pending_connects() {
    let Some((hole, _fillers)) = black_hole().await else {
        println!("skipped: this kernel never filled the accept queue, so connects cannot hang");
        return;
    };
    let mesh = Mesh::new().await;
    let hung = Pod {
        app: hole,
        inbound: hole,
        version: "v1",
        trigger: None,
    };
    mesh.set_endpoints("svc", &[&hung]);
    let c = pb::Cluster {
        name: "svc".into(),
        // 30 s: the waiting connect outlasts the test.
        connect_timeout_ms: 30_000,
        circuit_breakers: Some(pb::CircuitBreakers {
            max_pending_requests: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    mesh.set_cluster(Cluster::try_from(&c).unwrap());
    let (mut a, mut b) = (mesh.h1().await, mesh.h1().await);
    let first = send_h1(&mut a, request(http::Method::GET));
    let second = send_h1(&mut b, request(http::Method::GET));
    // Whichever reaches its connect second is refused; the other keeps waiting.
    let got = tokio::select! {
        got = first => got,
        got = second => got,
        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            panic!("no request was refused while the other waited on its connect")
        }
    };
    assert_eq!(got.status, 503, "{}", got.body);
    assert_eq!(got.headers["x-mesh-error"], "circuit-open");
}
